"""Length scores against hand-computed values at every boundary of both formulas, and aggregation."""

import pytest

from selflengthen.evaluation.benchmarks import LonGenPrediction, LongBenchPrediction
from selflengthen.evaluation.constraints import LengthConstraint
from selflengthen.evaluation.scoring import (
    length_bucket,
    longbench_score,
    longen_score,
    score_longbench,
    score_longen,
)


@pytest.mark.parametrize(
    ("constraint", "length", "expected"),
    [
        # about 1000 -> [800, 1200]
        (LengthConstraint("about", 1000), 1000, 1.0),
        (LengthConstraint("about", 1000), 800, 1.0),  # exactly a
        (LengthConstraint("about", 1000), 1200, 1.0),  # exactly b
        (LengthConstraint("about", 1000), 600, 0.5),  # 2*600/800 - 1
        (LengthConstraint("about", 1000), 400, 0.0),  # 2*400/800 - 1 = 0
        (LengthConstraint("about", 1000), 100, 0.0),  # negative, clamped
        (LengthConstraint("about", 1000), 0, 0.0),  # zero length
        (LengthConstraint("about", 1000), 1500, 0.5),  # 3 - 2*1500/1200
        (LengthConstraint("about", 1000), 1800, 0.0),  # 3 - 3 = 0
        (LengthConstraint("about", 1000), 5000, 0.0),  # clamped
        # range 2000-3000 -> [2000, 3000]
        (LengthConstraint("range", 2000, 3000), 2500, 1.0),
        (LengthConstraint("range", 2000, 3000), 2000, 1.0),
        (LengthConstraint("range", 2000, 3000), 3000, 1.0),
        (LengthConstraint("range", 2000, 3000), 1500, 0.5),  # 2*1500/2000 - 1
        (LengthConstraint("range", 2000, 3000), 3600, 0.6),  # 3 - 2*3600/3000
        (LengthConstraint("range", 2000, 3000), 0, 0.0),
        # above 1000 -> [1000, 1500]
        (LengthConstraint("above", 1000), 1000, 1.0),
        (LengthConstraint("above", 1000), 1500, 1.0),
        (LengthConstraint("above", 1000), 750, 0.5),
        (LengthConstraint("above", 1000), 1800, 0.6),  # 3 - 2*1800/1500
        (LengthConstraint("above", 1000), 0, 0.0),
        # below 1000 -> [500, 1000]
        (LengthConstraint("below", 1000), 500, 1.0),
        (LengthConstraint("below", 1000), 1000, 1.0),
        (LengthConstraint("below", 1000), 375, 0.5),  # 2*375/500 - 1
        (LengthConstraint("below", 1000), 250, 0.0),
        (LengthConstraint("below", 1000), 1250, 0.5),  # 3 - 2*1250/1000
        (LengthConstraint("below", 1000), 0, 0.0),
    ],
)
def test_longen_score(constraint, length, expected):
    assert longen_score(length, constraint) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("required", "length", "expected"),
    [
        (1000, 1000, 100.0),  # exact
        (1000, 0, 0.0),  # empty output
        (1000, 2000, 100 * (1 - 1 / 3)),  # longer: 1 - (2 - 1)/3
        (1000, 4000, 0.0),  # longer: 1 - (4 - 1)/3 = 0
        (1000, 9000, 0.0),  # clamped
        (1000, 500, 50.0),  # shorter: 1 - (2 - 1)/2
        (900, 300, 0.0),  # shorter: 1 - (3 - 1)/2 = 0
        (1000, 100, 0.0),  # clamped
        (1000, 1001, 100 * (1 - 0.001 / 3)),
        (1000, 999, 100 * (1 - (1000 / 999 - 1) / 2)),
    ],
)
def test_longbench_score(required, length, expected):
    assert longbench_score(required, length) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("required", "bucket"),
    [
        (1, "[0,500)"),
        (499, "[0,500)"),
        (500, "[500,2k)"),
        (1999, "[500,2k)"),
        (2000, "[2k,4k)"),
        (3999, "[2k,4k)"),
        (4000, "[4k,20k]"),
        (20000, "[4k,20k]"),
        (20001, "(20k,inf)"),
        (30000, "(20k,inf)"),
    ],
)
def test_length_buckets(required, bucket):
    assert length_bucket(required) == bucket


def longen(constraint: str, type_: str, language: str, range_: str, response: str) -> LonGenPrediction:
    query = "写作" if language == "zh" else "Write."
    return LonGenPrediction.model_validate(
        {"query": query, "constraint": constraint, "type": type_, "language": language, "range": range_, "response": response}
    )


def test_longen_aggregation_per_type_language_and_range():
    predictions = [
        longen("大约10字", "about", "zh", "2-4k", "字" * 10),  # 1.0
        longen("大于10字", "above", "zh", "2-4k", "字" * 20),  # above [10, 15]: 3 - 40/15 = 1/3
        longen("around 10 words", "about", "en", "4-6k", "w " * 6),  # [8, 12]: 2*6/8 - 1 = 0.5
        longen("less than 10 words", "below", "en", "4-6k", ""),  # 0
    ]
    report = score_longen(predictions)
    summary = report.summary
    assert summary["count"] == 4
    assert summary["overall"] == pytest.approx(100 * (1 + 1 / 3 + 0.5 + 0) / 4)
    assert list(summary["by_type"]) == ["about", "above", "below"]
    assert summary["by_type"]["about"] == pytest.approx(75.0)
    assert summary["by_type"]["above"] == pytest.approx(100 / 3)
    assert summary["by_type"]["below"] == 0.0
    assert summary["by_language"] == pytest.approx({"en": 25.0, "zh": 100 * (1 + 1 / 3) / 2})
    assert summary["by_range"] == pytest.approx({"2-4k": 100 * (1 + 1 / 3) / 2, "4-6k": 25.0})
    assert [p["length"] for p in report.prompts] == [10, 20, 6, 0]
    assert report.prompts[1]["interval"] == [10.0, 15.0]


def test_longen_counts_chinese_punctuation_with_the_selflengthen_counter():
    # 4 ideographs + 2 CJK punctuation marks + 2 English tokens = 8 -> inside about 8 [6.4, 9.6]
    prediction = longen("大约8字", "about", "zh", "2-4k", "你好，世界。 hello world")
    assert score_longen([prediction]).prompts[0]["length"] == 8
    assert score_longen([prediction]).summary["overall"] == 100.0


def test_longbench_aggregation_per_bucket_with_the_longbench_counter():
    def prediction(required: int, response: str) -> LongBenchPrediction:
        return LongBenchPrediction.model_validate({"prompt": "Write.", "length": required, "response": response})

    predictions = [
        prediction(4, "one two three four"),  # 100
        prediction(4, "it's 2024 one two"),  # it, s, one, two = 4 words (numbers do not count) -> 100
        prediction(600, "word " * 300),  # 50
        prediction(2000, ""),  # 0
    ]
    report = score_longbench(predictions)
    assert report.summary["overall"] == pytest.approx(62.5)
    assert report.summary["by_bucket"] == pytest.approx({"[0,500)": 100.0, "[500,2k)": 50.0, "[2k,4k)": 0.0})
    assert [p["length"] for p in report.prompts] == [4, 4, 300, 0]
