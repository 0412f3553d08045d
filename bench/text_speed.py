"""How fast each text function of the method scans text: MB/s on long English and Chinese texts.

Run:  .venv/bin/python bench/text_speed.py [--megabytes 20] [--repeats 3]

Builds a corpus (seeded) of long texts, half English and half Chinese by UTF-8 size, that pass
every check of their language (ending punctuation, no repeated n-gram, no meta words at the edges):
English of made-up words with some curly quotes and dashes, Chinese of ideographs with full-width
punctuation, quotes and a few ASCII numbers. Every function used on every record then runs over
the whole corpus in this process, one core, the current implementation (selflengthen.text) and the
plain definitions it replaced (tests/fixtures/text_reference.py) side by side, and their outputs
must be identical. Functions the reference shares with selflengthen.text (the splits,
check_ending) are timed once. MB are 10**6 bytes of UTF-8 per second of this process's CPU time
(time.process_time: one core's speed, whatever else the machine runs); each figure is the best
of ``--repeats`` passes (the reference: one pass).

Figures go to bench/results/text_speed.json; the last line printed is
``min_text_mb_per_s=<the slowest function's MB/s>`` (goal: at least 100).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selflengthen import text  # noqa: E402
from selflengthen.config import ChecksConfig  # noqa: E402
from tests.fixtures import text_reference as reference  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "text_speed.json"
GOAL_MB_S = 100.0
TEXT_BYTES = 50_000  # about 8,000 English words or 16,000 Chinese characters per text
CHECKS = ChecksConfig()


def english_text(rng: random.Random, vocabulary: list[str]) -> str:
    paragraphs, size = [], 0
    while size < TEXT_BYTES:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 25))]
            words[0] = words[0].capitalize()
            if rng.random() < 0.2:
                words[rng.randrange(len(words))] = f"\u201c{rng.choice(vocabulary)}\u201d"
            if rng.random() < 0.1:
                words.insert(rng.randrange(len(words)), "\u2014")
            sentences.append(" ".join(words) + rng.choice(".....!?;"))
        paragraphs.append(" ".join(sentences))
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs).rstrip(";") + "."


def chinese_text(rng: random.Random, characters: str) -> str:
    paragraphs, size = [], 0
    while size < TEXT_BYTES:
        clauses = []
        for _ in range(rng.randint(4, 12)):
            clause = "".join(rng.choice(characters) for _ in range(rng.randint(4, 16)))
            if rng.random() < 0.1:
                clause += str(rng.randint(1, 2000))
            if rng.random() < 0.1:
                clause = f"\u201c{clause}\u201d"
            clauses.append(clause + rng.choice("，，，。！？；"))
        paragraphs.append("".join(clauses))
        size += 3 * len(paragraphs[-1])
    return "\n\n".join(paragraphs).rstrip("，；") + "。"


def corpus(megabytes: float, seed: int = 0) -> list[tuple[str, str]]:
    """(language, text) pairs, alternating, about ``megabytes`` MB of UTF-8 in all; every text passes its checks."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 11))) for _ in range(30_000)})
    characters = "".join(chr(code) for code in rng.sample(range(0x4E00, 0x9FA6), 3500))
    texts, size = [], 0
    while size < megabytes * 1e6:
        for language in ("en", "zh"):
            body = english_text(rng, vocabulary) if language == "en" else chinese_text(rng, characters)
            if text.check_text(body, CHECKS.for_language(language)) is None:
                texts.append((language, body))
                size += len(body.encode("utf-8"))
    return texts


def functions(module) -> dict[str, Callable[[str, str], object]]:
    """Each function used on every record, as it is called for a text of a language."""
    meta = CHECKS.en
    return {
        "check_text": lambda language, body: module.check_text(body, CHECKS.for_language(language)),
        "count_words[selflengthen]": lambda language, body: module.count_words(body),
        "count_words[longbench]": lambda language, body: module.count_words(body, "longbench"),
        "detect_language": lambda language, body: module.detect_language(body),
        "find_repeated_ngram": lambda language, body: module.find_repeated_ngram(
            body, CHECKS.for_language(language).ngram_n, CHECKS.for_language(language).ngram_unit
        ),
        "find_meta_commentary": lambda language, body: module.find_meta_commentary(
            body, meta.meta_words, meta.meta_head_lines, meta.meta_tail_lines
        ),
        "check_ending": lambda language, body: module.check_ending(body, CHECKS.for_language(language).enders),
        "split_halves": lambda language, body: module.split_halves(body),
        "split_pieces": lambda language, body: module.split_pieces(body),
        "keep_leading_fraction": lambda language, body: module.keep_leading_fraction(body, 2 / 3),
    }


def timed(function: Callable[[str, str], object], texts: list[tuple[str, str]], repeats: int) -> tuple[float, list]:
    best, outputs = float("inf"), []
    for _ in range(repeats):
        start = time.process_time()
        outputs = [function(language, body) for language, body in texts]
        best = min(best, time.process_time() - start)
    return best, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=20.0, help="corpus size, MB of UTF-8")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the current implementation (best kept)")
    args = parser.parse_args()
    texts = corpus(args.megabytes)
    megabytes = {language: sum(len(body.encode("utf-8")) for lang, body in texts if lang == language) / 1e6 for language in ("en", "zh")}
    total = sum(megabytes.values())
    current, plain = functions(text), functions(reference)
    figures: dict[str, dict] = {}
    for name, function in current.items():
        seconds, outputs = timed(function, texts, args.repeats)
        row = {"mb_per_s": round(total / seconds, 1)}
        for language in ("en", "zh"):
            subset = [pair for pair in texts if pair[0] == language]
            row[f"{language}_mb_per_s"] = round(megabytes[language] / timed(function, subset, args.repeats)[0], 1)
        if name in ("check_text", "count_words[selflengthen]", "count_words[longbench]", "detect_language", "find_repeated_ngram", "find_meta_commentary"):
            reference_seconds, expected = timed(plain[name], texts, 1)
            if outputs != expected:
                raise SystemExit(f"{name}: outputs differ from the reference definition")
            row["reference_mb_per_s"] = round(total / reference_seconds, 1)
            row["speedup"] = round(reference_seconds / seconds, 1)
        figures[name] = row
        print(f"{name:28s} {json.dumps(row)}", flush=True)
    slowest = min(row["mb_per_s"] for row in figures.values())
    report = {
        "command": f"python bench/text_speed.py --megabytes {args.megabytes:g} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (one used), shared with other work (load average {os.getloadavg()[0]:.1f} at the end)",
        "corpus": {"texts": len(texts), "megabytes": {key: round(value, 2) for key, value in megabytes.items()}},
        "goal": f"every function >= {GOAL_MB_S:g} MB/s",
        "functions": figures,
        "min_text_mb_per_s": slowest,
        "meets_goal": slowest >= GOAL_MB_S,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"min_text_mb_per_s={slowest}")


if __name__ == "__main__":
    main()
