"""Prompt templates (package data, one file per prompt and language) and their rendering.

Templates use ``str.format`` fields. Names: self_instruct, self_instruct_item, judge_suitability,
extend, length_rewrite; seeds.jsonl holds the packaged seed instructions.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from selflengthen.config import Language

PROMPT_NAMES = ("self_instruct", "self_instruct_item", "judge_suitability", "extend", "length_rewrite")

# Affirmative answers of the suitability judge, per language (compared to the answer's start).
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


def self_instruct_prompt(examples: list[str], language: Language, min_words: int) -> tuple[str, str]:
    """The few-shot completion prompt and the stop marker (the next-but-one instruction's label).

    Examples are numbered 1..k and the prompt ends with the open label k+1, so the model writes one
    new instruction; generation stops at label k+2.
    """
    items = [render_prompt("self_instruct_item", language, index=i + 1, text=t) for i, t in enumerate(examples)]
    open_label = render_prompt("self_instruct_item", language, index=len(examples) + 1, text="").rstrip()
    stop = render_prompt("self_instruct_item", language, index=len(examples) + 2, text="").rstrip()
    stop = stop.rstrip(":：").rstrip()
    body = render_prompt("self_instruct", language, min_words=min_words, examples="\n".join(items + [open_label]))
    return body.rstrip("\n") + " " if language == "en" else body.rstrip("\n"), stop


def is_affirmative(answer: str, language: Language) -> bool:
    """Whether a judge answer says yes (leading words, case-insensitive)."""
    head = answer.strip().lstrip("\"'“").lower()
    return any(head.startswith(word) for word in JUDGE_YES[language])


@cache
def packaged_seeds(language: Language) -> tuple[str, ...]:
    """The seed instructions shipped with the package."""
    resource = resources.files(__package__) / language / "seeds.jsonl"
    lines = resource.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line)["text"] for line in lines if line.strip())
