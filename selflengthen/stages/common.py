"""What every generation stage shares: resumable unit processing over the generation client.

A stage is a set of *units* (a query, a response, a self-instruct slot), each turned by an async
worker into output records and failure records. Finished units are checkpointed in shards under
the output prefix, so a rerun of a killed stage continues where it stopped; a finished stage
(its manifest exists) is skipped. Both hold only under the same fingerprint
(:mod:`selflengthen.fingerprint`): the stage's settings, its model and its inputs' checksums.

A request refused for what it holds (:class:`~selflengthen.errors.RequestRefused`: a prompt longer
than the model's context, a 4xx) fails its unit only: the unit is finished with a Failure of that
reason, so the stage goes on and a rerun does not send it again. A server that cannot be reached
(retries exhausted) fails the stage. The metrics count every failure reason (``failure_reasons``).

Scheduling (:func:`process_units`): a bounded number of units is in flight, the next starting as
one finishes, and their requests are served oldest unit first (:class:`PriorityGate`), so units
finish in the order they started and reach the checkpoint at a steady rate, by units and by time;
shards are written on a writer thread. The input is read a part at a time (:class:`InputUnits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from selflengthen.client import Completion, GenerationClient
from selflengthen.config import RunConfig
from selflengthen.datasets import Manifest, RecordStream, RecordStreams, UnitCheckpoint, input_checksum
from selflengthen.errors import DataError, RequestRefused
from selflengthen.fingerprint import stage_fingerprint
from selflengthen.logs import stage_logger
from selflengthen.records import Failure, Query, Record, Response, stable_id
from selflengthen.stats import FailureReasons, Known, Tallies, Tally, length_stats
from selflengthen.storage import BackgroundWriter, Storage, get_storage

# A unit's worker: it gets the stage's client as its UnitClient (chat, continue_chat), the config and its item.
Work = Callable[["UnitClient", RunConfig, Any], Awaitable[tuple[list[Record], list[Failure]]]]
# Makes a new tally of the stage's own metrics (selflengthen.stats.Tally), fed its outputs as they are written.
Metrics = Callable[[], Tally]


@dataclass
class StageResult:
    """Where a stage wrote its dataset, its manifest, and whether it was already complete."""

    output_uri: str
    manifest: Manifest
    skipped: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        console=Console(stderr=True),
    )


class PriorityGate:
    """At most ``capacity`` requests at once, a waiting request of an older unit (lower rank) first.

    In front of the client's own first-come-first-served limit of the same size: the requests of
    the units in flight would otherwise take turns, so every unit would finish near the end of its
    batch; served oldest unit first, units finish in the order they started, at a steady rate."""

    def __init__(self, capacity: int):
        self.free = capacity
        self.waiting: list[tuple[int, int, asyncio.Future]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, rank: int) -> AsyncIterator[None]:
        if self.free and not self.waiting:
            self.free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(self.waiting, (rank, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # the turn came with the cancellation: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self.waiting:
            _, _, turn = heapq.heappop(self.waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


class UnitClient:
    """The stage's client as one unit uses it: each request waits for its turn at the stage's
    :class:`PriorityGate`, ranked by when the unit started."""

    def __init__(self, client: GenerationClient, gate: PriorityGate, rank: int):
        self.client, self.gate, self.rank = client, gate, rank

    async def chat(self, *args: Any, **kwargs: Any) -> list[Completion]:
        async with self.gate.slot(self.rank):
            return await self.client.chat(*args, **kwargs)

    async def continue_chat(self, *args: Any, **kwargs: Any) -> list[Completion]:
        async with self.gate.slot(self.rank):
            return await self.client.continue_chat(*args, **kwargs)


async def process_units(
    units: Iterable[tuple[str, Any]],
    work: Callable[[str, Any], Awaitable[tuple[str, tuple[list[Record], list[Failure]]]]],
    checkpoint: UnitCheckpoint,
    stage: str,
    limit: int,
    total: int | None = None,
) -> list[str]:
    """Run ``work`` (unit id, item -> unit id, (outputs, failures)) over the units not yet
    checkpointed, at most ``limit`` at a time: the next unit starts as one finishes, so units finish
    (and reach the checkpoint) at a steady rate instead of all near the end. Every finished unit
    goes to the checkpoint; a shard is written when one is due (by units or by time), on the
    checkpoint's writer thread, and a failed write fails the stage. ``units`` is read lazily,
    ``limit`` at a time in a worker thread (it may read storage); ``total`` (their number) sizes
    the progress bar. Returns the ids of all units, in order."""
    done = checkpoint.done_units()
    order: list[str] = []

    def not_done() -> Iterator[tuple[str, Any]]:
        for unit_id, item in units:
            order.append(unit_id)
            if unit_id not in done:
                yield unit_id, item

    todo = not_done()
    ready: deque[tuple[str, Any]] = deque()
    running: set[asyncio.Future] = set()
    exhausted = False

    async def start_more() -> None:
        nonlocal exhausted
        while len(running) < limit and not (exhausted and not ready):
            if not ready:
                ready.extend(await asyncio.to_thread(lambda: list(itertools.islice(todo, limit))))
                exhausted = len(ready) < limit
                continue
            running.add(asyncio.ensure_future(work(*ready.popleft())))

    with _progress() as progress:
        task = progress.add_task(stage, total=total, completed=len(done))
        try:
            await start_more()
            while running:
                finished, _ = await asyncio.wait(running, timeout=checkpoint.seconds_until_due(), return_when=asyncio.FIRST_COMPLETED)
                for future in finished:
                    running.discard(future)
                    unit_id, (outputs, failures) = future.result()
                    checkpoint.add(unit_id, outputs, failures)
                    progress.advance(task)
                if checkpoint.due():
                    checkpoint.flush()
                if checkpoint.writer is not None:
                    checkpoint.writer.check()
                await start_more()
        finally:
            for future in running:
                future.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            try:
                checkpoint.flush()
            finally:
                if checkpoint.writer is not None:
                    await asyncio.to_thread(checkpoint.writer.close)
    return order


def refusal(stage: str, unit_id: str, item: Any, error: RequestRefused) -> Failure:
    """The Failure of a unit whose request was refused, naming its query when the unit has one."""
    query_id = getattr(item, "query_id", None) or (item.id if isinstance(item, Query) else None)
    return Failure(
        id=stable_id(unit_id, stage, "refused"), stage=stage, query_id=query_id, reason=error.reason, attempts=1, detail=str(error)
    )


class ResponseLengths:
    """``lengths``: percentiles of the stage's response lengths (Self-Lengthen counter), when it has responses."""

    def __init__(self) -> None:
        self.words = array("q")

    def add(self, record: Record) -> None:
        if isinstance(record, Response):
            self.words.append(record.words)

    def result(self, failures: Sequence[Failure]) -> dict:
        return {"lengths": length_stats(self.words)} if self.words else {}


class TruncationMetrics:
    """Answers (responses or predictions) and how many the token budget cut off; ``noun`` names them in the metrics."""

    def __init__(self, noun: str) -> None:
        self.noun, self.answers, self.truncated = noun, 0, 0

    def add(self, answer: Response) -> None:
        self.answers += 1
        self.truncated += answer.finish_reason == "length"

    def result(self, failures: Sequence[Failure]) -> dict:
        return {self.noun: self.answers, "truncated": self.truncated}


def run_units(
    config: RunConfig,
    *,
    stage: str,
    role: str,
    units: Iterable[tuple[str, Any]],
    output_uri: str,
    output_model: type[Record],
    work: Work,
    metrics: Metrics,
    sections: Sequence[str],
    inputs: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    storage: Storage | None = None,
    iteration: int | None = None,
    resume: Callable[[Iterable[Record]], Any] | None = None,
) -> StageResult:
    """Process ``units`` with ``work`` against the ``role`` endpoint, resumably; finalize the dataset.

    ``units`` (unit id, item) may be read lazily (a stream of an input dataset): it is iterated once
    and its ``len``, when it has one, sizes the progress bar and the ``units`` metric.
    ``sections`` (dotted config paths), ``inputs`` (URI -> sha256) and ``extra`` settings make the
    stage's fingerprint, together with the ``role`` endpoint's model. ``resume`` is called with the
    records already checkpointed by an interrupted earlier run.
    """
    storage = storage or get_storage(config.storage)
    log = stage_logger(config.run_id, stage, iteration)
    fingerprint = stage_fingerprint(config, sections=sections, role=role, inputs=inputs, extra=extra)
    checkpoint = UnitCheckpoint(
        storage, output_uri, stage=stage, fingerprint=fingerprint,
        shard_size=config.storage.shard_size, interval_s=config.storage.checkpoint_interval_s, writer=BackgroundWriter(),
    )  # fmt: skip
    manifest = checkpoint.open(config.on_change)
    if manifest is not None:
        log.info("already complete at %s (%d records); skipped", output_uri, manifest.count)
        return StageResult(output_uri, manifest, skipped=True, metrics=manifest.metrics)
    storage.check_writable(output_uri)
    if resume is not None:
        resume(checkpoint.finished(output_model))
    endpoint = getattr(config.serving, role)
    total = len(units) if isinstance(units, Sized) else None

    async def main() -> list[str]:
        async with GenerationClient(endpoint, tokenizer=tokenizer_for(config, endpoint), role=role) as client:

            gate, ranks = PriorityGate(endpoint.max_concurrency), itertools.count()

            async def one(unit_id: str, item: Any) -> tuple[str, tuple[list[Record], list[Failure]]]:
                try:
                    return unit_id, await work(UnitClient(client, gate, next(ranks)), config, item)
                except RequestRefused as error:
                    return unit_id, ([], [refusal(stage, unit_id, item, error)])

            await client.check_health()
            log.info("%s units -> %s via %s (%s)", total if total is not None else "all", output_uri, endpoint.base_url, endpoint.model)
            return await process_units(units, one, checkpoint, stage, endpoint.unit_limit(), total)

    order = asyncio.run(main())

    tally = Tallies(Known({"units": len(order)}), metrics(), ResponseLengths(), FailureReasons())
    manifest = checkpoint.finalize(order, output_model, Failure, tally)
    log.info("wrote %d records, %d failures: %s", manifest.count, manifest.failures, manifest.metrics)
    return StageResult(output_uri, manifest, metrics=manifest.metrics)


class InputUnits:
    """One unit per record of input datasets (or JSONL files: a :class:`RecordStream` or
    :class:`RecordStreams`), read a part at a time; with ``keep`` (records -> the ids to work on,
    from one pass) only the records it keeps, each id once, worked out on first use."""

    def __init__(self, records: RecordStream | RecordStreams, keep: Callable[[Iterable[Record]], set[str]] | None = None):
        self.records = records
        self._keep = keep
        self._kept: set[str] | None = None

    def _first_of_each_id(self) -> Iterator[Record]:
        """The records, each id's first only: what ``keep`` chooses from and the units are made of."""
        seen: set[str] = set()
        for record in self.records:
            if record.id not in seen:
                seen.add(record.id)
                yield record

    def kept(self) -> set[str] | None:
        if self._keep is not None and self._kept is None:
            self._kept = self._keep(self._first_of_each_id())
        return self._kept

    def __iter__(self) -> Iterator[tuple[str, Record]]:
        kept = self.kept()
        if kept is None:
            return ((record.id, record) for record in self.records)
        return ((record.id, record) for record in self._first_of_each_id() if record.id in kept)

    def __len__(self) -> int:
        kept = self.kept()
        return len(self.records) if kept is None else len(kept)


def run_stage(
    config: RunConfig,
    *,
    stage: str,
    role: str,
    input_uri: str,
    input_model: type[Record],
    output_uri: str,
    output_model: type[Record],
    work: Work,
    metrics: Metrics,
    sections: Sequence[str],
    iteration: int | None = None,
    keep: Callable[[Iterable[Record]], set[str]] | None = None,
) -> StageResult:
    """``run_units`` over the records of dataset (or JSONL file) ``input_uri``, one unit per record,
    read a part at a time; the input's checksum is part of the fingerprint. ``keep`` (records -> the
    ids of those worked on) chooses the records worked on (the metrics then count the input
    records and those not kept)."""
    storage = get_storage(config.storage)
    records = RecordStream(storage, input_uri, input_model)
    if not len(records):
        raise DataError(f"{input_uri} holds no records for stage {stage}")
    units = InputUnits(records, keep)
    if keep is not None:
        stage_metrics = metrics

        def metrics() -> Tally:
            return Tallies(Known({"input_records": len(records), "input_not_kept": len(records) - len(units)}), stage_metrics())

    return run_units(
        config,
        stage=stage,
        role=role,
        units=units,
        output_uri=output_uri,
        output_model=output_model,
        work=work,
        metrics=metrics,
        sections=sections,
        inputs={input_uri: input_checksum(storage, input_uri)},
        storage=storage,
        iteration=iteration,
    )


_TOKENIZERS: dict[str, Any] = {}


def tokenizer_for(config: RunConfig, endpoint) -> Any:
    """The tokenizer whose chat template renders raw-completion prefills (loaded once per process).

    Only needed when the server cannot continue a final assistant message itself.
    """
    if endpoint.chat_template_continuation:
        return None
    source = config.model.tokenizer or config.model.base
    if source not in _TOKENIZERS:
        from selflengthen.modelio import load_tokenizer

        _TOKENIZERS[source] = load_tokenizer(source, config.storage, trust_remote_code=config.training.trust_remote_code)
    return _TOKENIZERS[source]
