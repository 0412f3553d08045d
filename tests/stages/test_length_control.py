import random

import pytest

from selflengthen.config import LengthControlConfig
from selflengthen.datasets import read_records, write_records
from selflengthen.fingerprint import Fingerprint
from selflengthen.records import SftExample
from selflengthen.stages.common import InputUnits
from selflengthen.stages.length_control import derive_constraint, eligible, mentions_constraint, run_length_control, to_chinese_numeral
from selflengthen.storage import get_storage
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay, response

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


def test_the_stage_reads_its_sources_a_part_at_a_time_and_keeps_one_example_per_eligible_text(
    tmp_path, scripted_server, monkeypatch
):
    storage = get_storage()
    short, long_a, long_b = essay(5, 1), essay(60, 2), essay(80, 3)
    first, second = str(tmp_path / "initial"), str(tmp_path / "extended")
    write_records(storage, first, [response(short), response(long_a), response(long_b, index=1)], stage="s", fingerprint=Fingerprint.of({}), shard_size=1)
    write_records(storage, second, [response(long_a, kind="extended")], stage="s", fingerprint=Fingerprint.of({}), shard_size=1)
    server = scripted_server(lambda messages: "no numbers here")  # every rewrite loses the constraint: appended
    config = run_config(
        str(tmp_path),
        length_control={"min_words": 20, "max_words": 4000, "unit": 10, "coarse_unit": 20},
        serving={"generator": server.endpoint().model_dump()},
    )
    reads: list[str] = []
    real_read_bytes = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: reads.append(uri) or real_read_bytes(uri))
    monkeypatch.setattr("selflengthen.stages.length_control.get_storage", lambda *_: storage)
    result = run_length_control(config, responses=[first, second], output=str(tmp_path / "length"))

    examples = read_records(storage, str(tmp_path / "length"), SftExample)
    assert sorted(example.response for example in examples) == sorted([long_a, long_b])  # the short one and the repeat are out
    assert all(not example.meta["llm_rewrite"] for example in examples)
    assert result.metrics["units"] == 2 and result.metrics["examples"] == 2 and result.metrics["appended"] == 2
    parts = {uri for uri in reads if "/part-" in uri and "/length/" not in uri}
    assert len(parts) == 4 and all(reads.count(uri) == 2 for uri in parts)  # eligibility, then the work: a part at a time


def test_the_first_record_of_an_id_decides_so_no_unit_is_outside_the_window():
    short = response(essay(10))
    long = response(essay(3000)).model_copy(update={"id": short.id})  # a second input disagreeing on the text
    settings = LengthControlConfig(min_words=20, max_words=4000)
    assert list(InputUnits([short, long], eligible(settings))) == []
    assert list(InputUnits([long, short], eligible(settings))) == [(short.id, long)]
