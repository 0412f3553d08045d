import random

import pytest

from selflengthen.config import LengthControlConfig
from selflengthen.stages.length_control import derive_constraint, mentions_constraint, to_chinese_numeral

SETTINGS = LengthControlConfig()


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "零"), (7, "七"), (10, "十"), (15, "十五"), (110, "一百一十"), (1010, "一千零一十"), (2000, "两千"),
     (2500, "两千五百"), (3005, "三千零五"), (8000, "八千"), (10000, "一万"), (12000, "一万二千"), (20000, "两万")],
)
def test_chinese_numerals(number, text):
    assert to_chinese_numeral(number) == text


def satisfied(constraint, words):
    kind, n, a, b = constraint["type"], constraint["n"], constraint["a"], constraint["b"]
    return {"about": abs(words - n) <= constraint["unit"], "range": a <= words <= b, "above": words > a, "below": words < b}[kind]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_constraints_hold_for_the_real_length(language):
    rng = random.Random(0)
    for words in range(2000, 8001, 37):
        constraint = derive_constraint(words, language, SETTINGS, rng)
        assert satisfied(constraint, words), (words, constraint)
        for bound in ("n", "a", "b"):
            assert SETTINGS.min_words <= constraint[bound] <= SETTINGS.max_words


def test_exact_multiples_never_contradict():
    rng = random.Random(1)
    for words in (2000, 3000, 8000):
        for _ in range(200):
            assert satisfied(derive_constraint(words, "en", SETTINGS, rng), words)


def test_type_mix_unit_and_numeral_probabilities():
    rng = random.Random(2)
    drawn = [derive_constraint(rng.randint(2100, 7900), "zh", SETTINGS, rng) for _ in range(4000)]
    share = {kind: sum(c["type"] == kind for c in drawn) / len(drawn) for kind in SETTINGS.type_probabilities}
    assert share["above"] == pytest.approx(0.10, abs=0.03)
    assert share["range"] == pytest.approx(0.25, abs=0.04)
    assert sum(c["unit"] == 2000 for c in drawn) / len(drawn) == pytest.approx(0.2, abs=0.03)
    assert sum(c["chinese_numerals"] for c in drawn) / len(drawn) == pytest.approx(0.5, abs=0.04)


def test_chinese_direction_is_not_swapped():
    rng = random.Random(3)
    seen = {}
    while len(seen) < 2:
        constraint = derive_constraint(4500, "zh", SETTINGS.model_copy(update={"chinese_numeral_probability": 0.0}), rng)
        if constraint["type"] in ("above", "below"):
            seen[constraint["type"]] = constraint["text"]
    assert seen["above"] == "大于4000字"  # 4500 is more than 4000
    assert seen["below"] == "小于5000字"  # and less than 5000


def test_rewrite_must_keep_the_numbers():
    constraint = {"type": "range", "n": 3000, "a": 2000, "b": 3000, "chinese_numerals": True, "unit": 1000}
    assert mentions_constraint("写一篇两千到三千字的文章", constraint)
    assert mentions_constraint("写一篇2000到3000字的文章", constraint)
    assert not mentions_constraint("写一篇文章", constraint)
