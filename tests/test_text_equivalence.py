"""selflengthen.text gives the plain definitions' results (tests/fixtures/text_reference.py) on
generated texts: English and Chinese, long and short, passing and failing, with the characters that
sit on the definitions' edges (Unicode spaces, full-width forms, other scripts' letters and digits,
private-use and astral characters, CR/LF, underscores, glued scripts) and with repeated n-grams and
meta words planted near the edges."""

import random

import pytest

from selflengthen import text as fast
from selflengthen.config import ChecksConfig
from tests.fixtures import text_reference as plain

CHECKS = ChecksConfig()
EN_WORDS = ["the", "river", "runs", "to", "sea", "it's", "12", "version", "Revised", "café", "x_y", "a1", "Paragraph", "\u2019s", "revi\u017fed", "\u212aey"]
ZH_CHARS = "一二三四五六七八九十河流向大海的是在我们他们文章中国人"
EDGE = [
    " ", " ", "\n", "\n\n", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u1680", "\u2003", "\u2028", "\u2029",
    "\u202f", "\u205f", "\u3000", "\u200b", "，", "。", "「", "」", "ＡＢ", "０", "「x」", "é", "ß", "α", "あ", "カ", "한", "①",
    "٣", "\u2014", "\u201c", "\u201d", "…", "_", "-", "'", ".", "!", "?", "\U0001f600", "\ue000", "\U000f0000", "\U0010fffd",
    "\U00020000", "\u3400", "a", "Z", "9", "中", "文", "abc", "中文abc", "abc中文",
]  # fmt: skip
META = ["revised", "Revision", "RESPONSE", "version", "paragraph", "paragraphs", "réponse"]


def token(rng: random.Random, language: str) -> str:
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(EDGE)
    if language == "zh":
        return "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(1, 6))) + rng.choice(["", "", "，", "。", " "])
    if roll < 0.2:
        return rng.choice(EN_WORDS)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABC") for _ in range(rng.randint(1, 8)))


def generated_text(rng: random.Random) -> str:
    language = rng.choice(["en", "zh"])
    separator = "" if language == "zh" else " "
    pieces = [token(rng, language) for _ in range(rng.choice([0, 1, 3, 12, 40, 150, 600, 2000]))]
    text = separator.join(pieces)
    if pieces and rng.random() < 0.3:  # plant a repeat of up to 15 tokens
        start = rng.randrange(len(pieces))
        text += separator + separator.join(pieces[start : start + rng.randint(1, 15)]) + separator + text[: rng.randint(0, 200)]
    lines = text.split(" ") if language == "en" and rng.random() < 0.3 else [text]
    if len(lines) > 1:  # many short lines, some blank or blank with spaces
        text = "".join(line + rng.choice(["\n", "\n\n", "\n  \n", " ", "\r\n"]) for line in lines)
    if rng.random() < 0.3:
        meta = rng.choice(META)
        text = f"{meta} here.\n{text}" if rng.random() < 0.5 else f"{text}\nthe {meta}"
    return text + rng.choice(["", ".", "。", "\n", " ", "!\n\n", "”"])


TEXTS = [generated_text(random.Random(seed)) for seed in range(500)]


@pytest.mark.parametrize("counter", fast.COUNTERS)
def test_count_words(counter):
    for text in TEXTS:
        assert fast.count_words(text, counter) == plain.count_words(text, counter), repr(text[:300])


def test_detect_language():
    for text in TEXTS:
        if text.strip():
            assert fast.detect_language(text) == plain.detect_language(text), repr(text[:300])
        else:
            with pytest.raises(ValueError):
                fast.detect_language(text)


@pytest.mark.parametrize(("n", "unit"), [(2, "whitespace"), (3, "cjk"), (10, "whitespace"), (13, "cjk"), (5, "cjk")])
def test_find_repeated_ngram(n, unit):
    found = 0
    for text in TEXTS:
        expected = plain.find_repeated_ngram(text, n, unit)
        assert fast.find_repeated_ngram(text, n, unit) == expected, repr(text[:300])
        found += expected is not None
    assert 0 < found < len(TEXTS)  # both outcomes are exercised


@pytest.mark.parametrize(("head", "tail"), [(2, 3), (0, 3), (2, 0), (1, 1), (40, 40)])
@pytest.mark.parametrize("words", [META[:5], [*META, "key", "revi\u017fed"]])  # ASCII words; words that match other characters too
def test_find_meta_commentary(head, tail, words):
    for text in TEXTS:
        assert fast.find_meta_commentary(text, words, head, tail) == plain.find_meta_commentary(text, words, head, tail), repr(text[:300])


def test_check_text():
    reasons = set()
    for text in TEXTS:
        for checks in (CHECKS.en, CHECKS.zh):
            expected = plain.check_text(text, checks)
            assert fast.check_text(text, checks) == expected, repr(text[:300])
            reasons.add(expected)
    assert reasons == {None, "empty", "no_final_punctuation", "repeated_ngram", "meta_commentary"}


def test_meta_lines_far_from_the_edges_of_a_long_text():
    body = [f"Line {i} says something new." for i in range(3000)]
    for where in (1, 2, 3, 1500, -1, -3, -4):
        lines = list(body)
        lines.insert(where if where >= 0 else len(lines) + where + 1, "The revised text.\r\n\n  ")
        text = "\n".join(lines)
        assert fast.find_meta_commentary(text, META[:5], 2, 3) == plain.find_meta_commentary(text, META[:5], 2, 3), where
