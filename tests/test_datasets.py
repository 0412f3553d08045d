"""selflengthen.datasets: JSONL shards + manifest, strict JSONL parsing, unit checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import (
    Manifest,
    RecordStream,
    UnitCheckpoint,
    dataset_exists,
    load_records,
    parse_jsonl,
    read_failures,
    read_jsonl,
    read_manifest,
    read_records,
    write_records,
)
from selflengthen.errors import DataError
from selflengthen.records import Failure, Query, Response
from selflengthen.storage import Storage, join_uri


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    """(storage, prefix) on a local folder, and on a fresh S3 bucket."""
    if request.param == "local":
        return Storage(), str(tmp_path / "run")
    config = request.getfixturevalue("s3_storage_config")
    bucket = request.getfixturevalue("s3_bucket")
    return Storage(config), f"s3://{bucket}/run"


def _queries(count: int, start: int = 0) -> list[Query]:
    return [Query(id=f"q{i}", text=f"Write a long essay number {i}.", language="en") for i in range(start, start + count)]


def _response(query_id: str, sample: int = 0) -> Response:
    return Response(
        id=f"{query_id}-r{sample}", query_id=query_id, query="q", language="en", sample_index=sample, text="answer", words=1
    )


def _failure(query_id: str) -> Failure:
    return Failure(id=f"{query_id}-f", stage="generate", query_id=query_id, reason="truncated", attempts=3)


# --------------------------------------------------------------------------- datasets


def test_write_read_round_trip(where: tuple[Storage, str], monkeypatch: pytest.MonkeyPatch) -> None:
    storage, prefix = where
    records = _queries(5)
    written: list[str] = []
    real_write_bytes = storage.write_bytes

    def recording_write_bytes(uri: str, data: bytes) -> None:
        written.append(uri)
        real_write_bytes(uri, data)

    monkeypatch.setattr(storage, "write_bytes", recording_write_bytes)

    manifest = write_records(
        storage, prefix, iter(records), stage="self-instruct", fingerprint=Fingerprint.of({"a": 1}), shard_size=2, metrics={"accepted": 5}
    )

    assert [uri.rsplit("/", 1)[-1] for uri in written] == [
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
        "manifest.json",  # last: the dataset exists only once it is complete
    ]
    assert [(shard.name, shard.count) for shard in manifest.shards] == [
        ("part-00000.jsonl", 2),
        ("part-00001.jsonl", 2),
        ("part-00002.jsonl", 1),
    ]
    assert manifest.count == 5 and manifest.failures == 0 and manifest.stage == "self-instruct"
    assert dataset_exists(storage, prefix)
    assert read_records(storage, prefix, Query) == records
    assert read_manifest(storage, prefix) == manifest
    stored = json.loads(storage.read_text(join_uri(prefix, "manifest.json")))
    assert stored["fingerprint"] == Fingerprint.of({"a": 1}).model_dump() and stored["metrics"] == {"accepted": 5}
    assert read_failures(storage, prefix, Failure) == []


def test_failures_are_kept_beside_the_records(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    failures = [_failure("q1"), _failure("q2")]
    manifest = write_records(
        storage, prefix, [_response("q0")], stage="generate", fingerprint=Fingerprint.of({}), shard_size=10, failures=failures
    )
    assert manifest.failures == 2 and manifest.failures_shard is not None
    assert read_failures(storage, prefix, Failure) == failures
    assert read_records(storage, prefix, Response) == [_response("q0")]


def test_empty_dataset(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "none")
    manifest = write_records(storage, prefix, [], stage="select", fingerprint=Fingerprint.of({}), shard_size=3)
    assert manifest.count == 0 and manifest.shards == []
    assert read_records(storage, prefix, Query) == []


def test_rewrite_replaces_the_dataset(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "d")
    write_records(storage, prefix, _queries(6), stage="s", fingerprint=Fingerprint.of({}), shard_size=2)
    write_records(storage, prefix, _queries(1, start=10), stage="s", fingerprint=Fingerprint.of({}), shard_size=2)
    assert [query.id for query in read_records(storage, prefix, Query)] == ["q10"]


def test_checksum_mismatch_is_detected(where: tuple[Storage, str]) -> None:
    storage, prefix = where
    write_records(storage, prefix, _queries(4), stage="s", fingerprint=Fingerprint.of({}), shard_size=2)
    part = join_uri(prefix, "part-00001.jsonl")
    tampered = storage.read_text(part).replace("essay", "poem")
    storage.write_text(part, tampered)
    with pytest.raises(DataError, match=rf"{part}: checksum mismatch \(manifest says sha256 [0-9a-f]{{64}}, the file has [0-9a-f]{{64}}\)"):
        read_records(storage, prefix, Query)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    prefix = str(tmp_path / "nothing")
    assert not dataset_exists(Storage(), prefix)
    with pytest.raises(DataError, match=f"no dataset at {prefix}: .*manifest.json does not exist"):
        read_records(Storage(), prefix, Query)


def test_a_part_without_its_manifest_is_not_a_dataset(tmp_path: Path) -> None:
    """A crash before the manifest leaves parts that no reader takes for a dataset."""
    storage, prefix = Storage(), str(tmp_path / "crashed")
    storage.write_text(join_uri(prefix, "part-00000.jsonl"), _queries(1)[0].model_dump_json() + "\n")
    assert not dataset_exists(storage, prefix)


# --------------------------------------------------------------------------- JSONL parsing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "text": "t", "language": "en"}\n{"id": "b", "text": \n', r"seeds\.jsonl line 2: invalid JSON: .*\(column \d+\)"),
        ('{"id": "a", "text": "t", "language": "en"}\n\n{"id": "c", "language": "en"}\n', r"seeds\.jsonl line 3: text: Field required"),
        ('{"id": "a", "text": "t", "language": "fr"}\n', r"seeds\.jsonl line 1: language: Input should be 'en' or 'zh'"),
        ('{"id": "a", "text": "t", "language": "en", "colour": 1}\n', r"seeds\.jsonl line 1: colour: unknown field"),
        ('["not", "an", "object"]\n', r"seeds\.jsonl line 1: expected a JSON object, got list"),
        ("", r"seeds\.jsonl is empty"),
        ("\n  \n", r"seeds\.jsonl is empty"),
    ],
    ids=["bad-json", "missing-field", "bad-value", "unknown-field", "not-object", "empty", "blank"],
)
def test_parse_jsonl_names_the_line(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_jsonl(text, Query, "seeds.jsonl")


def test_parse_jsonl_keeps_unicode_line_separators_inside_strings() -> None:
    text = json.dumps({"id": "a", "text": "one\u2028two\x85three", "language": "en"}, ensure_ascii=False) + "\r\n"
    assert parse_jsonl(text, Query, "x")[0].text == "one\u2028two\x85three"


def test_read_jsonl_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    data = b'{"id": "a", "text": "caf\xe9", "language": "en"}\n'
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"seeds\.jsonl is not valid UTF-8 \(byte offset {data.index(0xE9)}\)"):
        read_jsonl(Storage(), str(path), Query)


def test_read_jsonl_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{path} is empty"):
        read_jsonl(Storage(), str(path), Query)


def test_load_records_accepts_a_dataset_or_a_jsonl_file(tmp_path: Path) -> None:
    storage = Storage()
    queries = _queries(3)
    write_records(storage, str(tmp_path / "ds"), queries, stage="s", fingerprint=Fingerprint.of({}), shard_size=2)
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text("".join(query.model_dump_json() + "\n" for query in queries), encoding="utf-8")

    assert load_records(storage, str(tmp_path / "ds"), Query) == queries
    assert load_records(storage, str(jsonl), Query) == queries
    with pytest.raises(DataError, match=r"neither a dataset \(no .*absent/manifest.json\) nor a JSONL file"):
        load_records(storage, str(tmp_path / "absent"), Query)


# --------------------------------------------------------------------------- unit checkpoints


def _checkpoint(storage: Storage, prefix: str, shard_size: int = 2) -> UnitCheckpoint:
    """A checkpoint as a stage opens it (its fingerprint recorded before the first shard)."""
    checkpoint = UnitCheckpoint(storage, prefix, stage="generate", fingerprint=Fingerprint.of({}), shard_size=shard_size)
    checkpoint.open("refuse")
    return checkpoint


def test_checkpoint_resumes_after_a_crash(where: tuple[Storage, str]) -> None:
    storage, prefix = where
    units = [f"q{i}" for i in range(7)]

    first = _checkpoint(storage, prefix)
    assert first.open("refuse") is None and first.done_units() == set()
    for unit in units[:5]:  # q0-q3 reach two shards; q4 stays in the buffer
        first.add(unit, [_response(unit, 0), _response(unit, 1)], [_failure(unit)] if unit == "q2" else [])
    assert first.done_units() == set(units[:5])
    assert len([uri for uri in storage.list(join_uri(prefix, "_checkpoint")) if "/shard-" in uri]) == 2
    del first  # the process dies: the unflushed q4 is lost, nothing else

    second = _checkpoint(storage, prefix)
    done = second.done_units()
    assert done == {"q0", "q1", "q2", "q3"}
    outputs = second.finished(Response)
    assert [record.id for record in outputs] == ["q0-r0", "q0-r1", "q1-r0", "q1-r1", "q2-r0", "q2-r1", "q3-r0", "q3-r1"]
    for unit in reversed(units):  # work may finish in any order
        if unit not in done:
            second.add(unit, [_response(unit, 0)] if unit != "q5" else [], [])
    second.add("q1", [_response("q1", 9)], [])  # should not happen; the first q1 wins
    manifest = second.finalize(units, Response, Failure, {"samples": 11})

    records = read_records(storage, prefix, Response)
    assert [record.id for record in records] == [
        "q0-r0", "q0-r1", "q1-r0", "q1-r1", "q2-r0", "q2-r1", "q3-r0", "q3-r1", "q4-r0", "q6-r0",
    ]  # fmt: skip
    assert manifest.count == 10 and manifest.failures == 1 and manifest.metrics == {"samples": 11}
    assert read_failures(storage, prefix, Failure) == [_failure("q2")]
    assert storage.list(join_uri(prefix, "_checkpoint")) == []
    assert _checkpoint(storage, prefix).open("refuse") == manifest


def test_flush_on_interrupt_keeps_the_partial_buffer(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix, shard_size=100)
    with pytest.raises(KeyboardInterrupt):
        try:
            for unit in ("a", "b", "c"):
                checkpoint.add(unit, [_response(unit)], [])
            raise KeyboardInterrupt
        finally:
            checkpoint.flush()
    assert _checkpoint(storage, prefix).done_units() == {"a", "b", "c"}


def test_crash_during_finalize_is_redone_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix)
    for unit in ("a", "b", "c"):
        checkpoint.add(unit, [_response(unit)], [])
    real_write_text = storage.write_text

    def crash_on_manifest(uri: str, text: str) -> None:
        if uri.endswith("manifest.json"):
            raise RuntimeError("killed")
        real_write_text(uri, text)

    monkeypatch.setattr(storage, "write_text", crash_on_manifest)
    with pytest.raises(RuntimeError, match="killed"):
        checkpoint.finalize(["a", "b", "c"], Response, Failure, {})
    monkeypatch.undo()

    rerun = _checkpoint(storage, prefix)
    assert rerun.open("refuse") is None
    assert rerun.done_units() == {"a", "b", "c"}
    rerun.finalize(["a", "b", "c"], Response, Failure, {})
    assert [record.query_id for record in read_records(storage, prefix, Response)] == ["a", "b", "c"]


def test_finalize_refuses_units_from_other_inputs(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix)
    checkpoint.add("stale", [_response("stale")], [])
    with pytest.raises(DataError, match=r"_checkpoint holds 1 unit\(s\) not among this stage's inputs \(e\.g\. 'stale'\)"):
        checkpoint.finalize(["a"], Response, Failure, {})


def test_units_without_outputs_count_as_done(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix, shard_size=1)
    checkpoint.add("empty", [], [])
    assert _checkpoint(storage, prefix).done_units() == {"empty"}
    manifest = checkpoint.finalize(["empty"], Response, Failure, {})
    assert isinstance(manifest, Manifest) and manifest.count == 0
    assert read_records(storage, prefix, Response) == []


def test_done_units_come_from_the_shard_indexes_and_from_the_records_where_one_is_missing(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix, shard_size=2)
    for unit in ("a", "b", "c", "d"):
        checkpoint.add(unit, [_response(unit)], [])
    folder = tmp_path / "gen" / "_checkpoint"
    assert json.loads((folder / "units-00000.json").read_text()) == ["a", "b"]
    (folder / "shard-00000.jsonl").write_text("not read: its index answers\n")
    (folder / "units-00001.json").unlink()  # a crash between a shard and its index
    assert _checkpoint(storage, prefix).done_units() == {"a", "b", "c", "d"}


def test_record_stream_reads_a_dataset_part_by_part_again_at_each_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, prefix = Storage(), str(tmp_path / "ds")
    write_records(storage, prefix, _queries(7), stage="s", fingerprint=Fingerprint.of({}), shard_size=3)
    stream = RecordStream(storage, prefix, Query)
    reads: list[str] = []
    real_read_bytes = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: reads.append(uri.rsplit("/", 1)[-1]) or real_read_bytes(uri))
    records = iter(stream)
    assert next(records).id == "q0" and reads == ["manifest.json", "part-00000.jsonl"]  # one part read, not all
    assert [query.id for query in records] == [f"q{i}" for i in range(1, 7)]
    assert len(stream) == 7 and [query.id for query in stream] == [f"q{i}" for i in range(7)]


def test_finalize_names_the_shard_and_line_of_an_unreadable_entry(tmp_path: Path) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix, shard_size=2)
    for unit in ("a", "b"):
        checkpoint.add(unit, [_response(unit)], [])
    shard = tmp_path / "gen" / "_checkpoint" / "shard-00000.jsonl"
    shard.write_text(shard.read_text() + "[1, 2]\n")
    with pytest.raises(DataError, match=r"shard-00000\.jsonl line 3: not a checkpoint entry"):
        _checkpoint(storage, prefix).finalize(["a", "b"], Response, Failure, {})
    assert not dataset_exists(storage, prefix)


def test_finalize_parses_each_entry_once_and_feeds_the_tally_every_output_in_unit_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, prefix = Storage(), str(tmp_path / "gen")
    checkpoint = _checkpoint(storage, prefix, shard_size=2)
    for unit in ("c", "a", "b"):
        checkpoint.add(unit, [_response(unit, 0), _response(unit, 1)], [_failure(unit)] if unit == "b" else [])
    checkpoint.flush()

    class Seen:
        def __init__(self) -> None:
            self.ids: list[str] = []

        def add(self, record: Response) -> None:
            self.ids.append(record.id)

        def result(self, failures: list[Failure]) -> dict:
            return {"outputs": len(self.ids), "failures": [failure.id for failure in failures]}

    parsed: list[str] = []
    real_parse = UnitCheckpoint._validated
    monkeypatch.setattr(UnitCheckpoint, "_validated", lambda self, rows, model: parsed.extend(row["id"] for row in rows) or real_parse(self, rows, model))
    tally = Seen()
    manifest = checkpoint.finalize(["a", "b", "c"], Response, Failure, tally)
    assert tally.ids == ["a-r0", "a-r1", "b-r0", "b-r1", "c-r0", "c-r1"]
    assert manifest.metrics == {"outputs": 6, "failures": ["b-f"]}
    assert sorted(parsed) == sorted([*tally.ids, "b-f"])  # every record validated once, none again for the metrics
    assert [record.id for record in read_records(storage, prefix, Response)] == tally.ids
