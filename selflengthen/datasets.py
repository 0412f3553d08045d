"""Datasets: JSONL shards plus a manifest, and record-granular checkpoints of long stages.

A dataset under ``prefix`` is::

    prefix/part-00000.jsonl, part-00001.jsonl, ...   records, ``shard_size`` per part
    prefix/failures.jsonl                            units given up (only when there are some)
    prefix/manifest.json                             counts, sha256 per file, fingerprint, metrics

The manifest is written last, so a dataset exists exactly when its manifest does; readers go
through the manifest and verify every checksum. The manifest's fingerprint
(:mod:`selflengthen.fingerprint`) names the settings and inputs the records were made from;
:func:`existing_dataset` applies the rerun rule to a dataset found at an output.

:class:`UnitCheckpoint` makes a long stage resumable: finished units are appended in shards under
``prefix/_checkpoint/`` (each shard written atomically, by units and by time, beside an index of
its unit ids), a restarted stage skips :meth:`UnitCheckpoint.done_units` (read from the indexes),
and :meth:`UnitCheckpoint.finalize` turns the shards into the
dataset above, each unit exactly once, in the stage's input order. The checkpoint records its
fingerprint (``_checkpoint/fingerprint.json``) before its first shard and is never continued
under another one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Generic, Iterable, Iterator, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selflengthen.errors import DataError
from selflengthen.fingerprint import FINGERPRINT_NAME, Fingerprint, parse_fingerprint, reconcile, sha256_bytes
from selflengthen.records import Record
from selflengthen.stats import Tally
from selflengthen.storage import BackgroundWriter, Storage, decode_utf8, join_uri

R = TypeVar("R", bound=BaseModel)

MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"
CHECKPOINT_DIR = "_checkpoint"


class ShardInfo(BaseModel):
    """One JSONL file of a dataset: its name below the prefix, record count and sha256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    count: int = Field(ge=0)
    sha256: str


class Manifest(BaseModel):
    """What a dataset holds; written last, so its presence marks a complete dataset."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    count: int = Field(ge=0)
    shards: list[ShardInfo]
    fingerprint: Fingerprint
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    metrics: dict[str, Any] = Field(default_factory=dict)
    failures: int = Field(0, ge=0)
    failures_shard: ShardInfo | None = None


# --------------------------------------------------------------------------- JSONL


def _describe(error: ValidationError) -> str:
    """``field.sub: message`` for each problem of a validation error."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(record)"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def parse_jsonl(text: str, model: type[R], source: str, seen: dict[str, str] | None = None) -> list[R]:
    """Parse JSONL into ``model`` objects; a bad line raises DataError ``<source> line N: ...``.

    Blank lines are skipped; a text with no record at all is an error. Lines end at "\n" only
    (``str.splitlines`` would also split at U+2028 and others, which JSON strings may hold raw).
    When ``model`` has an ``id`` field, ids must be distinct: stages key their work by id, so a
    second ``q1`` would be dropped silently. ``seen`` (id -> where it was first read) carries the
    ids across the files of one dataset.
    """
    records = []
    seen = {} if seen is None else seen
    keyed = "id" in model.model_fields
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{source} line {number}: invalid JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(data, dict):
            raise DataError(f"{source} line {number}: expected a JSON object, got {type(data).__name__}")
        try:
            record = model.model_validate(data)
        except ValidationError as error:
            raise DataError(f"{source} line {number}: {_describe(error)}") from None
        if keyed:
            first = seen.setdefault(record.id, f"{source} line {number}")
            if first != f"{source} line {number}":
                where = first.removeprefix(f"{source} ")
                raise DataError(f"{source} line {number}: duplicate id {record.id!r} (first at {where})")
        records.append(record)
    if not records:
        raise DataError(f"{source} is empty")
    return records


def read_jsonl(storage: Storage, uri: str, model: type[R]) -> list[R]:
    """Records of one JSONL file (UTF-8, at least one record)."""
    return parse_jsonl(storage.read_text(uri), model, uri)


def _to_jsonl(rows: Iterable[BaseModel]) -> bytes:
    return "".join(row.model_dump_json() + "\n" for row in rows).encode("utf-8")


def _write_shard(storage: Storage, prefix_uri: str, name: str, rows: Sequence[BaseModel]) -> ShardInfo:
    data = _to_jsonl(rows)
    storage.write_bytes(join_uri(prefix_uri, name), data)
    return ShardInfo(name=name, count=len(rows), sha256=hashlib.sha256(data).hexdigest())


def _read_shard(
    storage: Storage, prefix_uri: str, shard: ShardInfo, model: type[R], seen: dict[str, str] | None = None
) -> list[R]:
    uri = join_uri(prefix_uri, shard.name)
    data = storage.read_bytes(uri)
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard.sha256:
        raise DataError(f"{uri}: checksum mismatch (manifest says sha256 {shard.sha256}, the file has {digest})")
    records = parse_jsonl(decode_utf8(data, uri), model, uri, seen)
    if len(records) != shard.count:
        raise DataError(f"{uri}: {len(records)} records, the manifest says {shard.count}")
    return records


# --------------------------------------------------------------------------- datasets


def manifest_uri(prefix_uri: str) -> str:
    return join_uri(prefix_uri, MANIFEST_NAME)


def dataset_exists(storage: Storage, prefix_uri: str) -> bool:
    return storage.exists(manifest_uri(prefix_uri))


def read_manifest(storage: Storage, prefix_uri: str) -> Manifest:
    uri = manifest_uri(prefix_uri)
    if not storage.exists(uri):
        raise DataError(f"no dataset at {prefix_uri}: {uri} does not exist")
    try:
        return Manifest.model_validate_json(storage.read_text(uri))
    except ValidationError as error:
        raise DataError(f"{uri}: invalid manifest: {_describe(error)}") from None


class DatasetWriter:
    """Writes a dataset a record at a time: ``part-NNNNN.jsonl`` shards of ``shard_size`` records
    (at most one shard in memory), then, at :meth:`close`, ``failures.jsonl`` and the manifest.

    An existing dataset at the prefix is replaced; its manifest is removed first, so no reader
    mixes old and new parts."""

    def __init__(self, storage: Storage, prefix_uri: str, *, stage: str, fingerprint: Fingerprint, shard_size: int):
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.storage, self.prefix_uri, self.stage, self.fingerprint, self.shard_size = storage, prefix_uri, stage, fingerprint, shard_size
        self.shards: list[ShardInfo] = []
        self._buffer: list[Record] = []
        storage.delete(manifest_uri(prefix_uri))

    def add(self, record: Record) -> None:
        self._buffer.append(record)
        if len(self._buffer) == self.shard_size:
            self._write_part()

    def _write_part(self) -> None:
        self.shards.append(_write_shard(self.storage, self.prefix_uri, f"part-{len(self.shards):05d}.jsonl", self._buffer))
        self._buffer = []

    def close(self, *, metrics: dict[str, Any] | None = None, failures: Sequence[Record] = ()) -> Manifest:
        """Write the last part, the failures and the manifest (last: the dataset now exists)."""
        if self._buffer:
            self._write_part()
        manifest = Manifest(
            stage=self.stage,
            count=sum(shard.count for shard in self.shards),
            shards=self.shards,
            fingerprint=self.fingerprint,
            metrics=metrics or {},
            failures=len(failures),
            failures_shard=_write_shard(self.storage, self.prefix_uri, FAILURES_NAME, failures) if failures else None,
        )
        self.storage.write_text(manifest_uri(self.prefix_uri), manifest.model_dump_json(indent=2))
        return manifest


def write_records(
    storage: Storage,
    prefix_uri: str,
    records: Iterable[Record],
    *,
    stage: str,
    fingerprint: Fingerprint,
    shard_size: int,
    metrics: dict[str, Any] | None = None,
    failures: Sequence[Record] = (),
) -> Manifest:
    """Write ``records`` (may be a generator) as a dataset with a :class:`DatasetWriter`."""
    writer = DatasetWriter(storage, prefix_uri, stage=stage, fingerprint=fingerprint, shard_size=shard_size)
    for record in records:
        writer.add(record)
    return writer.close(metrics=metrics, failures=failures)


def input_checksum(storage: Storage, uri: str) -> str:
    """The sha256 an output's fingerprint records for its input at ``uri``: over the shard
    checksums of a dataset's manifest, or of the bytes of a single file."""
    if dataset_exists(storage, uri):
        return sha256_bytes("\n".join(shard.sha256 for shard in read_manifest(storage, uri).shards).encode())
    if not storage.exists(uri):
        raise DataError(f"{uri} is neither a dataset (no {manifest_uri(uri)}) nor a JSONL file")
    return sha256_bytes(storage.read_bytes(uri))


def discard_dataset(storage: Storage, prefix_uri: str) -> None:
    """Delete the dataset (and any checkpoint) at ``prefix_uri``, its manifest first."""
    storage.delete(manifest_uri(prefix_uri))
    storage.delete_prefix(prefix_uri)


def existing_dataset(storage: Storage, prefix_uri: str, fingerprint: Fingerprint, on_change: str) -> Manifest | None:
    """The manifest of the dataset at ``prefix_uri`` when it was made with ``fingerprint`` (a rerun
    keeps it); None when there is none or (``on_change`` redo) it was stale and is now deleted."""
    if not dataset_exists(storage, prefix_uri):
        return None
    manifest = read_manifest(storage, prefix_uri)
    keep = reconcile(
        prefix_uri, manifest.fingerprint, fingerprint, on_change, discard=lambda: discard_dataset(storage, prefix_uri), what="dataset"
    )
    return manifest if keep else None


def iter_records(storage: Storage, prefix_uri: str, model: type[R]) -> Iterator[R]:
    """The records of the dataset at ``prefix_uri``, in order, read one part at a time (checksums
    verified, ids distinct across parts)."""
    manifest = read_manifest(storage, prefix_uri)
    seen: dict[str, str] = {}
    for shard in manifest.shards:
        yield from _read_shard(storage, prefix_uri, shard, model, seen)


def read_records(storage: Storage, prefix_uri: str, model: type[R]) -> list[R]:
    """All records of the dataset at ``prefix_uri``, in order, checksums verified."""
    return list(iter_records(storage, prefix_uri, model))


class RecordStream(Generic[R]):
    """The records of a dataset prefix or a single JSONL file, read again at each iteration (a
    dataset one part at a time, so a pass holds one part in memory); ``len`` is their count."""

    def __init__(self, storage: Storage, uri: str, model: type[R]):
        self.storage, self.uri, self.model = storage, uri, model
        self.is_dataset = dataset_exists(storage, uri)
        if not self.is_dataset and not storage.exists(uri):
            raise DataError(f"{uri} is neither a dataset (no {manifest_uri(uri)}) nor a JSONL file")
        self._count = read_manifest(storage, uri).count if self.is_dataset else None

    def __iter__(self) -> Iterator[R]:
        if self.is_dataset:
            return iter_records(self.storage, self.uri, self.model)
        records = read_jsonl(self.storage, self.uri, self.model)
        self._count = len(records)
        return iter(records)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count


class RecordStreams(Generic[R]):
    """The records of several :class:`RecordStream` one after another; ``len`` is their count."""

    def __init__(self, streams: Sequence[RecordStream[R]]):
        self.streams = streams

    def __iter__(self) -> Iterator[R]:
        return itertools.chain.from_iterable(self.streams)

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams)


def read_failures(storage: Storage, prefix_uri: str, model: type[R]) -> list[R]:
    """The failure records of the dataset at ``prefix_uri`` (empty when it has none)."""
    manifest = read_manifest(storage, prefix_uri)
    if manifest.failures_shard is None:
        return []
    return _read_shard(storage, prefix_uri, manifest.failures_shard, model)


def load_records(storage: Storage, uri: str, model: type[R]) -> list[R]:
    """Records from a dataset prefix (one with a manifest.json) or from a single JSONL file."""
    return list(RecordStream(storage, uri, model))


# --------------------------------------------------------------------------- checkpoints


class _UnitEntry(BaseModel):
    """One line of a checkpoint shard: a finished unit and what it produced."""

    model_config = ConfigDict(extra="forbid")

    unit: str = Field(min_length=1)
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)


class UnitCheckpoint:
    """Record-granular resume of a stage that processes independent units (e.g. one query each).

    Usage::

        checkpoint = UnitCheckpoint(storage, prefix, stage="generate", fingerprint=f, shard_size=64, interval_s=60)
        if checkpoint.open(on_change) is None:           # None: not complete with this fingerprint
            done = checkpoint.done_units()
            try:
                for unit in units:
                    if unit.id not in done:
                        checkpoint.add(unit.id, outputs, failures)
            finally:
                checkpoint.flush()
            checkpoint.finalize([u.id for u in units], Response, Failure, metrics)

    A shard is written atomically each time ``shard_size`` units are buffered, or once the oldest
    buffered unit has waited ``interval_s`` seconds, so a crash loses at most that much; a unit
    found twice counts once. Beside each shard a small index (``units-NNNNN.json``, its unit ids)
    lets :meth:`done_units` skip parsing the records. With a ``writer``
    (:class:`~selflengthen.storage.BackgroundWriter`) shards are written on its thread, in order,
    and :meth:`flush` returns at once. One writer per prefix at a time.
    """

    def __init__(
        self,
        storage: Storage,
        output_prefix: str,
        *,
        stage: str,
        fingerprint: Fingerprint,
        shard_size: int,
        interval_s: float | None = None,
        writer: BackgroundWriter | None = None,
    ):
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.storage = storage
        self.output_prefix = output_prefix
        self.stage = stage
        self.fingerprint = fingerprint
        self.shard_size = shard_size
        self.interval_s = interval_s
        self.writer = writer
        self.checkpoint_uri = join_uri(output_prefix, CHECKPOINT_DIR)
        self.fingerprint_uri = join_uri(self.checkpoint_uri, FINGERPRINT_NAME)
        self._buffer: list[tuple[str, str]] = []  # (unit id, its checkpoint line)
        self._oldest = 0.0  # monotonic time the oldest buffered unit was added
        self._next_shard: int | None = None

    def open(self, on_change: str) -> Manifest | None:
        """Apply the rerun rule: the manifest of a dataset complete under this fingerprint (the
        stage is skipped), else None, with a checkpoint of this fingerprint to resume or none yet
        (the first flush records the fingerprint, then writes the first shard). A complete dataset
        or checkpoint of other settings is refused, or deleted with ``on_change`` redo."""
        complete = existing_dataset(self.storage, self.output_prefix, self.fingerprint, on_change)
        if complete is not None:
            return complete
        started = self.storage.exists(self.fingerprint_uri)
        if started or self._shards():
            recorded = parse_fingerprint(self.storage.read_text(self.fingerprint_uri)) if started else None
            reconcile(
                self.checkpoint_uri, recorded, self.fingerprint, on_change,
                discard=lambda: self.storage.delete_prefix(self.checkpoint_uri), what="checkpoint",
            )  # fmt: skip
        return None

    def _shards(self, listing: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """(index, URI) of the checkpoint shards, in the order they were written."""
        shards = []
        for uri in self.storage.list(self.checkpoint_uri) if listing is None else listing:
            name = uri.rsplit("/", 1)[-1]
            if name.startswith("shard-") and name.endswith(".jsonl"):
                shards.append((int(name[len("shard-"):-len(".jsonl")]), uri))
        return sorted(shards)

    def done_units(self) -> set[str]:
        """Ids of the units already finished (checkpointed or buffered): from each shard's index,
        or from its records where a crash left the shard without its index."""
        listing = self.storage.list(self.checkpoint_uri)
        indexed = set(listing)
        done: set[str] = set()
        for number, uri in self._shards(listing):
            index = self._index_uri(number)
            if index in indexed:
                done.update(json.loads(self.storage.read_text(index)))
            else:
                done.update(entry.unit for entry in read_jsonl(self.storage, uri, _UnitEntry))
        done.update(unit for unit, _ in self._buffer)
        return done

    def finished(self, output_model: type[R]) -> Iterator[R]:
        """The outputs of the units checkpointed so far, one shard read at a time (a unit found
        twice counts once)."""
        seen: set[str] = set()
        for _, uri in self._shards():
            for entry in read_jsonl(self.storage, uri, _UnitEntry):
                if entry.unit not in seen:
                    seen.add(entry.unit)
                    yield from self._validated(entry.outputs, output_model)

    def _validated(self, rows: list[dict[str, Any]], model: type[R]) -> list[R]:
        try:
            return [model.model_validate(row) for row in rows]
        except ValidationError as error:
            raise DataError(f"checkpoint {self.checkpoint_uri}: {_describe(error)}") from None

    def add(self, unit_id: str, outputs: Sequence[Record], failures: Sequence[Record] = ()) -> None:
        """Record a finished unit; writes a shard when one is :meth:`due`."""
        if not self._buffer:
            self._oldest = time.monotonic()
        line = (
            f'{{"unit":{json.dumps(unit_id, ensure_ascii=False)},'
            f'"outputs":[{",".join(record.model_dump_json() for record in outputs)}],'
            f'"failures":[{",".join(record.model_dump_json() for record in failures)}]}}'
        )
        self._buffer.append((unit_id, line))
        if self.due():
            self.flush()

    def seconds_until_due(self) -> float | None:
        """Seconds until the buffered units must be written (0: now); None while none are buffered."""
        if not self._buffer:
            return None
        if len(self._buffer) >= self.shard_size:
            return 0.0
        if self.interval_s is None:
            return None
        return max(0.0, self._oldest + self.interval_s - time.monotonic())

    def due(self) -> bool:
        """Whether a shard is due: ``shard_size`` units buffered, or the oldest waited ``interval_s``."""
        return self.seconds_until_due() == 0.0

    def flush(self) -> None:
        """Write the buffered units as one new shard (call it on cancellation and interrupts too);
        with a writer the shard is queued on it."""
        if not self._buffer:
            return
        units = [unit for unit, _ in self._buffer]
        data = "".join(line + "\n" for _, line in self._buffer).encode("utf-8")
        self._buffer = []
        if self.writer is None:
            self._write(units, data)
        else:
            self.writer.submit(lambda: self._write(units, data))

    def _write(self, units: list[str], data: bytes) -> None:
        """One shard, then its index (a shard without one, left by a crash, is read in full)."""
        if self._next_shard is None:
            if not self.storage.exists(self.fingerprint_uri):
                self.storage.write_text(self.fingerprint_uri, self.fingerprint.model_dump_json(indent=2))
            self._next_shard = max((index for index, _ in self._shards()), default=-1) + 1
        self.storage.write_bytes(join_uri(self.checkpoint_uri, f"shard-{self._next_shard:05d}.jsonl"), data)
        self.storage.write_text(self._index_uri(self._next_shard), json.dumps(units, ensure_ascii=False))
        self._next_shard += 1

    def _index_uri(self, number: int) -> str:
        """The index of shard ``number``: a JSON list of its unit ids."""
        return join_uri(self.checkpoint_uri, f"units-{number:05d}.json")

    def finalize(
        self,
        unit_order: Iterable[str],
        output_model: type[Record],
        failure_model: type[Record],
        metrics: dict[str, Any] | Tally | None = None,
    ) -> Manifest:
        """Write the stage's dataset (outputs in ``unit_order``, failures) and drop the checkpoint.

        ``metrics`` is the manifest's metrics, or a :class:`Tally` fed every output as it is
        written. Units of ``unit_order`` never added produced nothing; a checkpointed unit missing
        from ``unit_order`` means the checkpoint belongs to other inputs, which is an error.

        Memory stays bounded: the shards are read one at a time into a local spill (SQLite in a
        temporary folder: ``TMPDIR``, about the size of the checkpoint) keyed by each unit's place
        in ``unit_order``, which gives them back in that order, each parsed once; only the unit ids
        (and the failures) are held.
        """
        self.flush()
        if self.writer is not None:
            self.writer.close()
        with tempfile.TemporaryDirectory(prefix="sl-finalize-") as folder:
            spill = _UnitSpill(os.path.join(folder, "units.sqlite"), unit_order)
            try:
                for _, uri in self._shards():
                    spill.add(self.storage.read_text(uri), uri)
                if spill.unknown:
                    unknown = sorted(spill.unknown)
                    raise DataError(
                        f"{self.checkpoint_uri} holds {len(unknown)} unit(s) not among this stage's inputs "
                        f"(e.g. {unknown[0]!r}); delete that folder to start the stage over"
                    )
                writer = DatasetWriter(self.storage, self.output_prefix, stage=self.stage, fingerprint=self.fingerprint, shard_size=self.shard_size)
                tally = None if metrics is None or isinstance(metrics, dict) else metrics
                failures: list[Record] = []
                for line in spill.lines():
                    try:
                        entry = _UnitEntry.model_validate_json(line)
                    except ValidationError as error:
                        raise DataError(f"checkpoint {self.checkpoint_uri}: unit entry: {_describe(error)}") from None
                    for record in self._validated(entry.outputs, output_model):
                        writer.add(record)
                        if tally is not None:
                            tally.add(record)
                    failures.extend(self._validated(entry.failures, failure_model))
                manifest = writer.close(metrics=metrics if tally is None else tally.result(failures), failures=failures)
            finally:
                spill.close()
        self.storage.delete_prefix(self.checkpoint_uri)
        return manifest


_UNIT_PREFIX = '{"unit":'
_DECODER = json.JSONDecoder()


def _unit_of(line: str, where: str) -> str:
    """The unit id of a checkpoint line, read without parsing its records (lines start with it)."""
    try:
        if line.startswith(_UNIT_PREFIX):
            unit, _ = _DECODER.raw_decode(line, len(_UNIT_PREFIX))
            if isinstance(unit, str):
                return unit
        return _UnitEntry.model_validate_json(line).unit
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        raise DataError(f"{where}: not a checkpoint entry (a unit id, its outputs and failures)") from None


class _UnitSpill:
    """Checkpoint lines kept on local disk under their unit's place in the stage's input order;
    the first line of a unit wins, lines of units not in that order are counted in ``unknown``."""

    def __init__(self, path: str, unit_order: Iterable[str]):
        self.position: dict[str, int] = {}
        for unit in unit_order:
            self.position.setdefault(unit, len(self.position))
        self.unknown: set[str] = set()
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE units (position INTEGER PRIMARY KEY, line TEXT NOT NULL)")

    def add(self, text: str, source: str) -> None:
        """The lines of one checkpoint shard (``text``, read from ``source``)."""
        rows = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            unit = _unit_of(line, f"{source} line {number}")
            if unit in self.position:
                rows.append((self.position[unit], line))
            else:
                self.unknown.add(unit)
        self.db.executemany("INSERT OR IGNORE INTO units VALUES (?, ?)", rows)

    def lines(self) -> Iterator[str]:
        for (line,) in self.db.execute("SELECT line FROM units ORDER BY position"):
            yield line

    def close(self) -> None:
        self.db.close()
