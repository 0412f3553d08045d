"""Fingerprints: which settings change a stage's fingerprint, which do not, and how changes are named."""

import pytest

from selflengthen.config import apply_override, parse_config
from selflengthen.datasets import input_checksum
from selflengthen.fingerprint import Fingerprint, SettingsChanged, checks_sections, describe_changes, reconcile, stage_fingerprint
from selflengthen.storage import get_storage


def config(**overrides):
    """The default config with ``section__key=value`` overrides."""
    data = parse_config({"run_id": "fp", "model": {"base": "/models/base"}, "languages": ["en"]}).model_dump(mode="json")
    for key, value in overrides.items():
        apply_override(data, key.replace("__", "."), value)
    return parse_config(data)


def generate_fingerprint(cfg, inputs=None):
    return stage_fingerprint(cfg, sections=["generate", *checks_sections(cfg)], role="generator", inputs=inputs or {"q": "abc"})


def extend_fingerprint(cfg):
    return stage_fingerprint(cfg, sections=["extend", *checks_sections(cfg)], role="extender", inputs={"r": "abc"})


@pytest.mark.parametrize(
    "setting",
    [
        {"serving__generator__base_url": "http://10.0.0.7:9000/v1"},
        {"serving__generator__max_concurrency": 3},
        {"serving__generator__request_timeout_s": 5.0},
        {"serving__generator__max_retries": 0},
        {"storage__shard_size": 1},
        {"storage__s3_endpoint": "http://127.0.0.1:9999"},
        {"extend__min_ratio": 3.0},  # another stage's section
        {"workdir": "elsewhere"},
        {"on_change": "redo"},
    ],
)
def test_settings_that_do_not_change_the_records_leave_the_fingerprint(setting) -> None:
    assert generate_fingerprint(config(**setting)) == generate_fingerprint(config())


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ({"generate__samples_per_query": 1}, "generate.samples_per_query"),
        ({"generate__sampling__temperature": 0.2}, "generate.sampling.temperature"),
        ({"checks__en__ngram_n": 4}, "checks.en.ngram_n"),
        ({"serving__generator__model": "other"}, "serving.generator.model"),
        ({"serving__generator__model_source": "/runs/x/train/generator (trained, fingerprint 1)"}, "serving.generator.model_source"),
    ],
)
def test_settings_that_change_the_records_change_the_fingerprint_and_are_named(setting, key) -> None:
    old, new = generate_fingerprint(config()), generate_fingerprint(config(**setting))
    assert old.digest != new.digest
    assert [change.split(":")[0] for change in describe_changes(old, new)] == [key]


def test_extend_min_ratio_and_input_content_change_the_fingerprint(tmp_path) -> None:
    assert extend_fingerprint(config(extend__min_ratio=3.0)).digest != extend_fingerprint(config()).digest
    assert describe_changes(extend_fingerprint(config()), extend_fingerprint(config(extend__min_ratio=3.0))) == [
        "extend.min_ratio: 1.2 -> 3.0"
    ]
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "text": "Write about rivers."}\n', encoding="utf-8")
    before = generate_fingerprint(config(), {str(queries): input_checksum(get_storage(), str(queries))})
    queries.write_text('{"id": "q1", "text": "Write about lakes."}\n', encoding="utf-8")
    after = generate_fingerprint(config(), {str(queries): input_checksum(get_storage(), str(queries))})
    assert describe_changes(before, after) == [f"input {queries} changed"]


def test_reconcile_keeps_refuses_or_discards() -> None:
    old, new = Fingerprint.of({"a.b": 1}), Fingerprint.of({"a.b": 2})
    discarded = []
    assert reconcile("out", old, old, "refuse", discard=lambda: discarded.append(1))
    with pytest.raises(SettingsChanged) as refused:
        reconcile("s3://bucket/out", old, new, "refuse", discard=lambda: discarded.append(1))
    message = str(refused.value)
    assert "s3://bucket/out" in message and "a.b: 1 -> 2" in message
    assert "on_change: redo" in message and "another output or workdir" in message and not discarded
    assert not reconcile("out", old, new, "redo", discard=lambda: discarded.append(1)) and discarded == [1]
    with pytest.raises(SettingsChanged, match="records no fingerprint"):
        reconcile("out", None, new, "refuse", discard=lambda: None)
