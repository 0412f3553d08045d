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
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from selflengthen.client import GenerationClient
from selflengthen.config import RunConfig
from selflengthen.datasets import Manifest, UnitCheckpoint, input_checksum, load_records
from selflengthen.errors import DataError, RequestRefused
from selflengthen.fingerprint import stage_fingerprint
from selflengthen.logs import stage_logger
from selflengthen.records import Failure, Query, Record, Response, stable_id
from selflengthen.stats import length_stats
from selflengthen.storage import BackgroundWriter, Storage, get_storage

T = TypeVar("T")
Work = Callable[[GenerationClient, RunConfig, Any], Awaitable[tuple[list[Record], list[Failure]]]]
Metrics = Callable[[list, list[Failure]], dict]


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


async def process_units(
    units: Sequence[tuple[str, Any]],
    work: Callable[[str, Any], Awaitable[tuple[str, tuple[list[Record], list[Failure]]]]],
    checkpoint: UnitCheckpoint,
    stage: str,
    limit: int,
) -> None:
    """Run ``work`` (unit id, item -> unit id, (outputs, failures)) over the units not yet checkpointed, at most ``limit`` at a time: the next unit
    starts as one finishes, so units finish (and reach the checkpoint) at a steady rate instead of
    all near the end. Every finished unit goes to the checkpoint; a shard is written when one is due
    (by units or by time), on the checkpoint's writer thread, and a failed write fails the stage."""
    done = checkpoint.done_units()
    pending = [(unit_id, item) for unit_id, item in units if unit_id not in done]
    todo = iter(pending)
    running: set[asyncio.Future] = set()

    def start_more() -> None:
        for unit_id, item in itertools.islice(todo, limit - len(running)):
            running.add(asyncio.ensure_future(work(unit_id, item)))

    with _progress() as progress:
        task = progress.add_task(stage, total=len(units), completed=len(units) - len(pending))
        try:
            start_more()
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
                start_more()
        finally:
            for future in running:
                future.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            try:
                checkpoint.flush()
            finally:
                if checkpoint.writer is not None:
                    await asyncio.to_thread(checkpoint.writer.close)


def refusal(stage: str, unit_id: str, item: Any, error: RequestRefused) -> Failure:
    """The Failure of a unit whose request was refused, naming its query when the unit has one."""
    query_id = getattr(item, "query_id", None) or (item.id if isinstance(item, Query) else None)
    return Failure(
        id=stable_id(unit_id, stage, "refused"), stage=stage, query_id=query_id, reason=error.reason, attempts=1, detail=str(error)
    )


def response_metrics(outputs: list, failures: list[Failure]) -> dict:
    """Length percentiles of the stage's responses (Self-Lengthen counter)."""
    words = [o.words for o in outputs if isinstance(o, Response)]
    return {"lengths": length_stats(words)} if words else {}


def run_units(
    config: RunConfig,
    *,
    stage: str,
    role: str,
    units: Sequence[tuple[str, Any]],
    output_uri: str,
    output_model: type[Record],
    work: Work,
    metrics: Metrics,
    sections: Sequence[str],
    inputs: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    storage: Storage | None = None,
    iteration: int | None = None,
    resume: Callable[[list[Record]], Any] | None = None,
) -> StageResult:
    """Process ``units`` with ``work`` against the ``role`` endpoint, resumably; finalize the dataset.

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
        resume(checkpoint.collected(output_model, Failure)[0])
    endpoint = getattr(config.serving, role)

    async def main() -> None:
        async with GenerationClient(endpoint, tokenizer=tokenizer_for(config, endpoint), role=role) as client:

            async def one(unit_id: str, item: Any) -> tuple[str, tuple[list[Record], list[Failure]]]:
                try:
                    return unit_id, await work(client, config, item)
                except RequestRefused as error:
                    return unit_id, ([], [refusal(stage, unit_id, item, error)])

            await client.check_health()
            log.info("%d units -> %s via %s (%s)", len(units), output_uri, endpoint.base_url, endpoint.model)
            await process_units(units, one, checkpoint, stage, endpoint.unit_limit())

    asyncio.run(main())

    def stage_metrics(outputs: list, failures: list[Failure]) -> dict:
        return {
            "units": len(units),
            **metrics(outputs, failures),
            **response_metrics(outputs, failures),
            "failure_reasons": dict(Counter(failure.reason for failure in failures)),
        }

    manifest = checkpoint.finalize([unit_id for unit_id, _ in units], output_model, Failure, stage_metrics)
    log.info("wrote %d records, %d failures: %s", manifest.count, manifest.failures, manifest.metrics)
    return StageResult(output_uri, manifest, metrics=manifest.metrics)


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
    keep: Callable[[list[Record]], list[Record]] | None = None,
) -> StageResult:
    """``run_units`` over the records of dataset (or JSONL file) ``input_uri``, one unit per record;
    the input's checksum is part of the fingerprint. ``keep`` chooses the records worked on (the
    metrics then count the input records and those not kept)."""
    storage = get_storage(config.storage)
    records = load_records(storage, input_uri, input_model)
    if not records:
        raise DataError(f"{input_uri} holds no records for stage {stage}")
    kept = records if keep is None else keep(records)
    if keep is not None:
        stage_metrics = metrics

        def metrics(outputs: list, failures: list[Failure]) -> dict:
            return {"input_records": len(records), "input_not_kept": len(records) - len(kept), **stage_metrics(outputs, failures)}

    return run_units(
        config,
        stage=stage,
        role=role,
        units=[(record.id, record) for record in kept],
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
