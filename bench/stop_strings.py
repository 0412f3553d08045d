"""What a stop string would cut from long texts: the evidence behind ``sampling.stop``'s default.

Run:  .venv/bin/python bench/stop_strings.py [--dataset URI ...]

The reference implementation stops generation at "---" and at three consecutive newlines
(QwenLM/Self-Lengthen ``qwen/llm_client.py``). A text cut at a stop string ends with finish_reason
"stop", exactly like a finished one, so every cut is silent: the stage keeps a shorter text and the
method learns from it. This measures, for each candidate stop string, how many long texts contain
it before their end and how much of them a stop there would remove, on two corpora:

- human-written long-form markdown and reStructuredText: the long descriptions of the Python
  distributions installed in this environment (README-like documents with headings, lists, code
  and tables; those of at least ``--min-words`` words);
- model outputs (optional): the responses of the datasets given with ``--dataset`` (any storage URI
  of a stage's output, e.g. a local run's ``generate`` or ``extend`` dataset).

Figures go to bench/results/stop_strings.json; the last line printed is
``triple_newline_cut_fraction=<value>``: the fraction of human long texts that a "\\n\\n\\n" stop
would cut short.
"""

from __future__ import annotations

import argparse
import json
import statistics
from importlib import metadata
from pathlib import Path

from selflengthen.datasets import read_records
from selflengthen.records import Response
from selflengthen.storage import get_storage
from selflengthen.text import count_words

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "stop_strings.json"
CANDIDATES = ["\n\n\n", "---"]


def installed_long_descriptions(min_words: int) -> list[str]:
    """The long descriptions of the installed distributions with at least ``min_words`` words, one per name."""
    texts: dict[str, str] = {}
    for dist in metadata.distributions():
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        body = body.replace("\r\n", "\n").strip()
        if count_words(body) >= min_words:
            texts.setdefault(dist.metadata["Name"].lower(), body)
    return list(texts.values())


def cut_figures(texts: list[str], stop: str) -> dict:
    """How many texts a stop at the first ``stop`` would cut, and the share of their words lost."""
    lost = []
    for text in texts:
        index = text.find(stop)
        if index >= 0:
            lost.append(1 - count_words(text[:index]) / max(count_words(text), 1))
    return {
        "texts": len(texts),
        "cut": len(lost),
        "cut_fraction": round(len(lost) / len(texts), 4) if texts else None,
        "median_words_lost_when_cut": round(statistics.median(lost), 4) if lost else None,
        "cut_losing_over_half": sum(share > 0.5 for share in lost),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", default=[], help="URI of a stage dataset of responses")
    parser.add_argument("--min-words", type=int, default=500, help="shortest human text counted")
    args = parser.parse_args()

    corpora = {"human_long_descriptions": installed_long_descriptions(args.min_words)}
    if args.dataset:
        corpora["model_outputs"] = [
            response.text.strip()
            for uri in args.dataset
            for response in read_records(get_storage(uri), uri, Response)
        ]
    figures = {
        name: {"words_median": statistics.median(count_words(t) for t in texts) if texts else None}
        | {repr(stop): cut_figures(texts, stop) for stop in CANDIDATES}
        for name, texts in corpora.items()
    }
    result = {"command": "bench/stop_strings.py " + " ".join(f"--dataset {uri}" for uri in args.dataset), "corpora": figures}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"triple_newline_cut_fraction={figures['human_long_descriptions'][repr(chr(10) * 3)]['cut_fraction']}")


if __name__ == "__main__":
    main()
