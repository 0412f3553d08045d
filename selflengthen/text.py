"""Text utilities of the method: length counters, the midpoint split, language detection and checks."""

from __future__ import annotations

import re
from collections import Counter

from selflengthen.config import Language, LanguageChecks

# CJK ideographs, CJK symbols and punctuation, full-width forms (docs/method.md, "Counting length").
_SELFLENGTHEN_WIDE = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
_LONGBENCH_HAN = re.compile(r"[\u4e00-\u9fff]")
_LONGBENCH_WORD = re.compile(r"\b[a-zA-Z]+\b")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_PARAGRAPH_BREAK = re.compile(r"(\n(?:[ \t]*\n)+)")
_LINE_BREAK = re.compile(r"(\n)")
_CJK_NGRAM_TOKEN = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]|[\x21-\x7e]+")

COUNTERS = ("selflengthen", "longbench")


def count_words(text: str, counter: str = "selflengthen") -> int:
    """Length of ``text``: words for English, characters for Chinese.

    ``selflengthen``: each CJK ideograph, CJK punctuation or full-width form counts one; those
    characters are then replaced by spaces and the whitespace-separated tokens are added.
    ``longbench``: CJK ideographs plus matches of ``\\b[a-zA-Z]+\\b``.
    """
    if counter == "selflengthen":
        wide = len(_SELFLENGTHEN_WIDE.findall(text))
        return wide + len(_SELFLENGTHEN_WIDE.sub(" ", text).split())
    if counter == "longbench":
        return len(_LONGBENCH_HAN.findall(text)) + len(_LONGBENCH_WORD.findall(text))
    raise ValueError(f"unknown counter {counter!r}; expected one of {', '.join(COUNTERS)}")


def _pieces(text: str) -> list[str]:
    """Alternating [piece, separator, piece, ...]: blank-line paragraphs, else single lines."""
    parts = _PARAGRAPH_BREAK.split(text)
    if len(parts) // 2 + 1 <= 2:
        parts = _LINE_BREAK.split(text)
    return parts


def split_halves(text: str) -> tuple[str, str]:
    """Split at the paragraph-count midpoint: the first half holds the first floor(n/2) pieces.

    Pieces are blank-line-separated paragraphs, or single lines when there are 2 or fewer
    paragraphs. ``first + separator + second == text`` where separator is the original break
    between the halves (empty when the first half is empty).
    """
    parts = _pieces(text)
    count = len(parts) // 2 + 1
    half = count // 2
    if half == 0:
        return "", text
    cut = 2 * half - 1  # index of the separator after the half-th piece
    return "".join(parts[:cut]), "".join(parts[cut + 1 :])


def split_pieces(text: str) -> list[str]:
    """The pieces (paragraphs, or lines as fallback) of ``text``, separators dropped."""
    return _pieces(text)[::2]


def keep_leading_fraction(text: str, fraction: float) -> str:
    """The first ``fraction`` of the pieces of ``text`` (at least one), original separators kept."""
    parts = _pieces(text.strip())
    count = len(parts) // 2 + 1
    keep = max(1, int(count * fraction))
    return "".join(parts[: 2 * keep - 1]).strip()


def detect_language(text: str) -> Language:
    """``zh`` when Chinese ideographs outnumber Latin words, else ``en``. No network, no model."""
    if not text.strip():
        raise ValueError("cannot detect the language of empty text")
    han = len(_HAN.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    return "zh" if han > latin else "en"


# ---------------------------------------------------------------------------- checks (docs/method.md, step 4)

REASONS = ("empty", "truncated", "no_final_punctuation", "repeated_ngram", "meta_commentary")


def check_ending(text: str, enders: str) -> str | None:
    stripped = text.rstrip()
    if not stripped:
        return "empty"
    return None if stripped[-1] in enders else "no_final_punctuation"


def ngram_tokens(text: str, unit: str) -> list[str]:
    if unit == "whitespace":
        return text.split()
    if unit == "cjk":
        return _CJK_NGRAM_TOKEN.findall(text)
    raise ValueError(f"unknown n-gram unit {unit!r}")


def find_repeated_ngram(text: str, n: int, unit: str) -> tuple[str, ...] | None:
    """The first n-gram that occurs twice, or None."""
    tokens = ngram_tokens(text, unit)
    seen: set[tuple[str, ...]] = set()
    for start in range(len(tokens) - n + 1):
        gram = tuple(tokens[start : start + n])
        if gram in seen:
            return gram
        seen.add(gram)
    return None


def repeated_ngram_fraction(text: str, n: int = 10, unit: str = "whitespace") -> float:
    """Share of n-grams that occur more than once (reported beside lengths)."""
    tokens = ngram_tokens(text, unit)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(1 for g in grams if counts[g] > 1) / len(grams)


def find_meta_commentary(text: str, words: list[str], head: int, tail: int) -> str | None:
    """A meta word found in the first ``head`` or last ``tail`` non-empty lines, or None."""
    if not words:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    window = lines[:head] + (lines[-tail:] if tail else [])
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    for line in window:
        match = pattern.search(line)
        if match:
            return match.group(1)
    return None


def check_text(text: str, checks: LanguageChecks, finish_reason: str | None = None) -> str | None:
    """The reason ``text`` fails the checks (one of REASONS), or None when it passes."""
    if not text.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if checks.check_ending and check_ending(text, checks.enders):
        return "no_final_punctuation"
    if checks.check_repetition and find_repeated_ngram(text, checks.ngram_n, checks.ngram_unit):
        return "repeated_ngram"
    if checks.check_meta and find_meta_commentary(text, checks.meta_words, checks.meta_head_lines, checks.meta_tail_lines):
        return "meta_commentary"
    return None
