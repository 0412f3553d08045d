"""Reading length constraints: the 240 LonGen rows, wordings in both languages, Chinese numerals."""

import json
import re
from pathlib import Path

import pytest

from selflengthen.evaluation.benchmarks import packaged_benchmark
from selflengthen.evaluation.constraints import (
    ConstraintNotFound,
    LengthConstraint,
    chinese_numeral,
    find_constraint,
    parse_constraint,
)

LONGEN = Path(packaged_benchmark("longen"))  # the copy that ships with the package


def longen_rows() -> list[dict]:
    return [json.loads(line) for line in LONGEN.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_all_240_longen_constraints_parse_to_their_type_and_numbers():
    rows = longen_rows()
    assert len(rows) == 240
    for row in rows:
        constraint = parse_constraint(row["constraint"])
        numbers = [int(n) for n in re.findall(r"\d+", row["constraint"])]
        assert constraint.type == row["type"], row["constraint"]
        if row["type"] == "range":
            assert (constraint.target, constraint.upper) == tuple(numbers), row["constraint"]
        else:
            assert (constraint.target, constraint.upper) == (numbers[0], None), row["constraint"]


def test_free_query_text_agrees_with_the_constraint_field():
    """Every Chinese LonGen query restates its constraint the parser reads the same way; a few English
    ones do not restate it or say something else ("a 3000-word article" for "more than 3000")."""
    rows = longen_rows()
    agree = {"zh": 0, "en": 0}
    for row in rows:
        agree[row["language"]] += find_constraint(row["query"]) == parse_constraint(row["constraint"])
    assert agree["zh"] == 120
    assert agree["en"] >= 114


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("三千五百", 3500),
        ("两千", 2000),
        ("二千", 2000),
        ("一万", 10000),
        ("万", 10000),
        ("十五", 15),
        ("二十", 20),
        ("一百二十", 120),
        ("三千五", 3500),
        ("一万二", 12000),
        ("一千零五", 1005),
        ("一万零五百", 10500),
        ("两万五千", 25000),
        ("十万", 100000),
    ],
)
def test_chinese_numerals(numeral, value):
    assert chinese_numeral(numeral) == value


@pytest.mark.parametrize("numeral", ["", "二三", "百百", "十百", "一万万", "三k"])
def test_malformed_chinese_numerals_are_refused(numeral):
    with pytest.raises(ValueError):
        chinese_numeral(numeral)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # about
        ("大约2000字", ("about", 2000, None)),
        ("约三千五百字", ("about", 3500, None)),
        ("3000字左右", ("about", 3000, None)),
        ("写一篇两千字的文章", ("about", 2000, None)),
        ("写一篇3000字内容充实的报告", ("about", 3000, None)),
        ("around 2000 words", ("about", 2000, None)),
        ("about 4k words", ("about", 4000, None)),
        ("approximately 4,000 words", ("about", 4000, None)),
        ("Write a 2500-word story", ("about", 2500, None)),
        ("长度大约为3500字", ("about", 3500, None)),
        ("确保内容在大约5000字以内", ("about", 5000, None)),
        ("请不超过约4000字详细说明", ("about", 4000, None)),
        # range
        ("2000字至3000字", ("range", 2000, 3000)),
        ("字数在2000至4000字之间", ("range", 2000, 4000)),
        ("两千到三千字", ("range", 2000, 3000)),
        ("2000-3000 words", ("range", 2000, 3000)),
        ("between 2,000 and 4,000 words", ("range", 2000, 4000)),
        ("from 3k to 4k words", ("range", 3000, 4000)),
        ("a 5000-6000 word blog post", ("range", 5000, 6000)),
        ("字数：2000-3000", ("range", 2000, 3000)),
        # above
        ("大于2000字", ("above", 2000, None)),
        ("不少于三千字", ("above", 3000, None)),
        ("2500字以上", ("above", 2500, None)),
        ("确保整篇小说超过四千字", ("above", 4000, None)),
        ("more than 2000 words", ("above", 2000, None)),
        ("at least 2,500 words", ("above", 2500, None)),
        ("no less than 3000 words", ("above", 3000, None)),
        ("the essay exceeds 3000 words", ("above", 3000, None)),
        ("3000+ words", ("above", 3000, None)),
        ("4,000 words or more", ("above", 4000, None)),
        ("字数要求：2000以上", ("above", 2000, None)),
        # below
        ("小于2000字", ("below", 2000, None)),
        ("不超过3000字", ("below", 3000, None)),
        ("文章不得超过5000字", ("below", 5000, None)),
        ("请控制在3000字以内", ("below", 3000, None)),
        ("less than 2000 words", ("below", 2000, None)),
        ("no more than 6000 words", ("below", 6000, None)),
        ("keep it under 4,000 words", ("below", 4000, None)),
        ("does not exceed 6000 words", ("below", 6000, None)),
        ("within a 5000-word limit", ("below", 5000, None)),
        ("1.5万字以内", ("below", 15000, None)),
        ("３０００字以内", ("below", 3000, None)),
    ],
)
def test_wordings_in_both_languages(text, expected):
    assert find_constraint(text) == LengthConstraint(*expected)


def test_the_largest_length_in_a_query_is_the_constraint():
    text = "Overview (max 250 words). The whole report should be more than 7,000 words."
    assert find_constraint(text) == LengthConstraint("above", 7000)
    assert find_constraint("每段200字，全文不少于3000字") == LengthConstraint("above", 3000)


@pytest.mark.parametrize(
    "text",
    ["写一篇关于猫的文章", "列出26个字母", "Cite references for 20% of the content.", "Write 5 essays.", ""],
)
def test_texts_without_a_length_constraint(text):
    assert find_constraint(text) is None


def test_parse_constraint_says_clearly_when_there_is_none():
    with pytest.raises(ConstraintNotFound, match=r"no length constraint .* found in '写一篇关于猫的文章'"):
        parse_constraint("写一篇关于猫的文章")


@pytest.mark.parametrize(
    ("constraint", "interval"),
    [
        (LengthConstraint("about", 1000), (800, 1200)),
        (LengthConstraint("range", 2000, 3000), (2000, 3000)),
        (LengthConstraint("above", 1000), (1000, 1500)),
        (LengthConstraint("below", 1000), (500, 1000)),
    ],
)
def test_intervals(constraint, interval):
    assert constraint.interval() == pytest.approx(interval)
