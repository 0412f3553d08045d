from collections import Counter

import pytest

from selflengthen.config import SelectConfig, parse_config
from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import read_manifest, read_records, write_records
from selflengthen.records import Response
from selflengthen.stages.select import Selection, keep_probability, length_biased_ids, lengths, run_select
from selflengthen.storage import get_storage
from tests.stages.helpers import essay, response

CONFIG = parse_config({"model": {"base": "unused"}})


def length_biased_sample(responses: list[Response], settings: SelectConfig, seed: int) -> list[Response]:
    """The responses length-biased sampling keeps, in the order given."""
    kept_ids = length_biased_ids(lengths(responses), settings, seed)
    return [r for r in responses if r.id in kept_ids]


def select_responses(responses: list[Response], config, seed: int) -> tuple[list[Response], Counter]:
    """The responses a Selection keeps, in the order given, and its rejections per reason."""
    selection = Selection(responses, config, seed)
    return [r for r in responses if r.id in selection.kept_ids], selection.rejected


def test_keep_probability_formula():
    settings = SelectConfig()
    assert keep_probability(1.0, settings) == 0.0  # the shortest is always dropped
    assert keep_probability(0.0, settings) == 1.0
    assert keep_probability(0.5, settings) == pytest.approx(1 - 2 * 0.125)
    assert keep_probability(0.8, settings) == 0.0  # 2 * 0.512 > 1: clipped
    assert keep_probability(0.79, settings) == pytest.approx(1 - 2 * 0.79**3)


def test_shortest_fifth_always_dropped_and_long_ones_favoured():
    responses = [response(essay(10 + i, seed=i), index=i) for i in range(200)]
    kept = length_biased_sample(responses, SelectConfig(), seed=7)
    kept_lengths = sorted(r.words for r in kept)
    # rank >= 2**(-1/3) ~ 0.794 -> always dropped: the 41 shortest of 200
    assert kept_lengths[0] > 10 + 40
    longest_fifth = sum(1 for r in kept if r.words >= 10 + 160)
    shortest_kept_band = sum(1 for r in kept if 10 + 41 <= r.words < 10 + 81)
    assert longest_fifth > shortest_kept_band


def test_seeded_and_order_independent():
    responses = [response(essay(10 + i, seed=i), index=i) for i in range(50)]
    first = {r.id for r in length_biased_sample(responses, SelectConfig(), seed=3)}
    again = {r.id for r in length_biased_sample(list(reversed(responses)), SelectConfig(), seed=3)}
    other = {r.id for r in length_biased_sample(responses, SelectConfig(), seed=4)}
    assert first == again
    assert first != other


def test_checks_count_rejections_per_reason():
    good = [response(essay(20 + i, seed=i), index=i) for i in range(10)]
    bad = [
        response("no final punctuation here", index=100),
        response("Cut off.", index=101, finish_reason="length"),
        response(" ".join(["same ten words repeated again and again in this text"] * 3) + ".", index=102),
    ]
    kept, rejected = select_responses(good + bad, CONFIG, seed=1)
    assert rejected["no_final_punctuation"] == 1
    assert rejected["truncated"] == 1
    assert rejected["repeated_ngram"] == 1
    assert rejected["length_biased_sampling"] == 10 - len(kept)
    assert {r.id for r in kept} <= {r.id for r in good}


def test_without_length_bias_keeps_all_passing():
    config = parse_config({"model": {"base": "unused"}, "select": {"length_biased": False}})
    good = [response(essay(20 + i, seed=i), index=i) for i in range(5)]
    kept, rejected = select_responses(good, config, seed=1)
    assert kept == good and rejected == Counter()


def test_run_select_writes_dataset_with_metrics(tmp_path):
    storage = get_storage(CONFIG.storage)
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    responses = [response(essay(20 + i, seed=i), index=i) for i in range(30)]
    write_records(storage, source, responses, stage="extend", fingerprint=Fingerprint.of({}), shard_size=8)
    manifest = run_select(CONFIG, input=source, output=target, iteration=1)
    kept = read_records(storage, target, Response)
    assert manifest.count == len(kept) > 0
    assert read_manifest(storage, target).metrics["rejected"]["length_biased_sampling"] == 30 - len(kept)
    # a rerun keeps the same records
    run_select(CONFIG, input=source, output=str(tmp_path / "again"), iteration=1)
    assert [r.id for r in read_records(storage, str(tmp_path / "again"), Response)] == [r.id for r in kept]


def test_lengths_are_ranked_within_each_language():
    # English answers of 100-119 words, Chinese ones of 300-319 characters: one pool would rank every
    # English answer below every Chinese one and drop the English almost entirely.
    english = [response(essay(100 + i, seed=i), index=i) for i in range(20)]
    chinese = [response("长" * (300 + i) + "。", index=100 + i, language="zh") for i in range(20)]
    per_language = length_biased_sample(english + chinese, SelectConfig(), seed=5)
    pooled = length_biased_sample(english + chinese, SelectConfig(rank_within_language=False), seed=5)
    kept = Counter(r.language for r in per_language)
    assert kept["en"] >= 8 and kept["zh"] >= 8
    assert Counter(r.language for r in pooled)["en"] <= 3
    # Within a language the shortest fifth is always dropped.
    assert min(r.words for r in per_language if r.language == "en") > 100 + 3
    assert per_language == length_biased_sample(english + chinese, SelectConfig(), seed=5)


def test_run_select_streams_a_many_part_input_into_the_records_and_metrics_of_selecting_it_whole(tmp_path):
    storage = get_storage(CONFIG.storage)
    english = [response(essay(20 + (7 * i) % 50, seed=i), index=i) for i in range(40)]
    chinese = [response("".join(chr(0x4E00 + (31 * i + 7 * j) % 3000) for j in range(300 + i)) + "。", index=100 + i, language="zh") for i in range(20)]
    failing = [response("no final punctuation here", index=200), response("Cut off.", index=201, finish_reason="length")]
    responses = english[:20] + failing[:1] + chinese + english[20:] + failing[1:]
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_records(storage, source, responses, stage="extend", fingerprint=Fingerprint.of({}), shard_size=7)
    manifest = run_select(CONFIG, input=source, output=target, iteration=2)
    whole, rejected = select_responses(responses, CONFIG, seed=CONFIG.seed * 1000 + 2)
    assert read_records(storage, target, Response) == whole  # the same records, in the input's order
    assert len(read_manifest(storage, source).shards) == 9 and manifest.metrics["rejected"] == dict(rejected)
    assert {r.language for r in whole} == {"en", "zh"} and rejected["length_biased_sampling"] > 0
    assert manifest.metrics["input"] == len(responses) and manifest.metrics["kept"] == len(whole)
