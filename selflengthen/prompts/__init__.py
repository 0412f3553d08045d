"""Prompt templates (package data, one file per prompt and language) and their rendering.

Templates use ``str.format`` fields. Names: self_instruct, self_instruct_item, judge_suitability,
extend, length_rewrite; seeds.jsonl holds the packaged seed instructions.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

from selflengthen.config import Language

PROMPT_NAMES = ("self_instruct", "self_instruct_item", "judge_suitability", "extend", "length_rewrite")

# Affirmative answers of the suitability judge, per language: the first is the exact answer the
# reference accepts, the others are accepted by the lenient match (compared to the answer's start).
JUDGE_YES = {"en": ("yes",), "zh": ("是", "适合", "yes")}


@cache
def load_template(name: str, language: Language) -> str:
    """The raw template ``name`` for ``language``; KeyError names what is missing."""
    resource = resources.files(__package__) / language / f"{name}.txt"
    if not resource.is_file():
        raise KeyError(f"no prompt template {name!r} for language {language!r}")
    return resource.read_text(encoding="utf-8")


def render_prompt(name: str, language: Language, **fields: Any) -> str:
    """Render template ``name`` for ``language`` with ``fields`` (all fields must be given)."""
    template = load_template(name, language)
    try:
        return template.format(**fields)
    except KeyError as error:
        raise KeyError(f"prompt {name!r} ({language}) needs field {error.args[0]!r}") from None


def self_instruct_prompt(examples: list[str], language: Language) -> tuple[str, str, str]:
    """The user turn, the assistant prefill and the stop marker of one self-instruct proposal.

    As the reference (QwenLM/Self-Lengthen ``qwen/prompt_templates/self_instruct.md``), the task is
    the user turn and the assistant turn is pre-filled with the examples numbered 1..k and the open
    label k+1, so the model continues with one new instruction; generation stops at a newline
    followed by label k+2, so an instruction may span several lines.
    """
    items = [render_prompt("self_instruct_item", language, index=i + 1, text=t) for i, t in enumerate(examples)]
    open_label = render_prompt("self_instruct_item", language, index=len(examples) + 1, text="")
    stop = render_prompt("self_instruct_item", language, index=len(examples) + 2, text="").rstrip().rstrip(":：")
    prefill = "\n".join([*items, open_label])
    return render_prompt("self_instruct", language).strip(), prefill, "\n" + stop


def is_affirmative(answer: str, language: Language, match: Literal["exact", "lenient"] = "exact") -> bool:
    """Whether a judge answer says yes: ``exact`` (the reference) the whole answer is the yes word
    (case and surrounding space ignored); ``lenient`` it starts with a yes-like word."""
    head = answer.strip().lower()
    if match == "exact":
        return head == JUDGE_YES[language][0]
    head = head.lstrip("\"'“")
    return any(head.startswith(word) for word in JUDGE_YES[language])


@cache
def packaged_seeds(language: Language) -> tuple[str, ...]:
    """The seed instructions shipped with the package."""
    resource = resources.files(__package__) / language / "seeds.jsonl"
    lines = resource.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line)["text"] for line in lines if line.strip())
