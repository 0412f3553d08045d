"""The stage scheduler (selflengthen.stages.common): a bounded number of units in flight, so finished
units reach the checkpoint at a steady rate; a checkpoint cadence by units and by time; shard writes
off the event loop (a blocked or retrying storage never stalls requests, a write that finally fails
fails the stage with the shards before it kept)."""

import asyncio
import glob
import json
import os
import threading
import time

import pytest
from minio.error import ServerError

from selflengthen.datasets import UnitCheckpoint, read_failures, read_records
from selflengthen.errors import StorageError
from selflengthen.fingerprint import Fingerprint
from selflengthen.records import Failure, Response
from selflengthen.stages.common import PriorityGate, process_units
from selflengthen.stages.extend import run_extend
from selflengthen.stages.generate import run_generate
from selflengthen.storage import Storage, get_storage, join_uri
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay, response
from tests.stages.test_extend import DRAFT, Extender

LATENCY_S = 0.04


def test_units_in_flight_never_exceed_the_bound_and_are_replenished(tmp_path):
    checkpoint = UnitCheckpoint(Storage(), str(tmp_path / "out"), stage="s", fingerprint=Fingerprint.of({}), shard_size=4)
    running, most, finished = 0, 0, []

    async def work(unit_id: str, delay: float):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(delay)
        running -= 1
        finished.append(unit_id)
        return unit_id, ([], [])

    units = [(f"u{i:02d}", 0.5 if i == 0 else 0.001) for i in range(30)]
    asyncio.run(process_units(units, work, checkpoint, "s", limit=3))
    assert most == 3
    # u00 is slow: the other two slots keep turning, every other unit starting as one finishes.
    assert finished[-1] == "u00" and sorted(finished) == [unit_id for unit_id, _ in units]
    assert checkpoint.done_units() == {unit_id for unit_id, _ in units}


def _checkpointed_over_time(output: str, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    """Poll the units the checkpoint indexes hold (an index is written after its shard): what a kill
    at that moment would leave."""
    best = 0
    while not stop.is_set():
        count = 0
        for path in glob.glob(os.path.join(output, "_checkpoint", "units-*.json")):
            try:
                with open(path, encoding="utf-8") as handle:
                    count += len(json.load(handle))
            except (OSError, ValueError):
                pass
        best = max(best, count)  # finalize deletes the checkpoint at the end
        samples.append((time.monotonic(), best))
        time.sleep(0.005)


def _finished_at_half(tmp_path, scripted_server, name: str, *, units: int, limit: int, shard_size: int, interval_s: float) -> float:
    """Extend ``units`` responses (4 sequential requests each) against a server with a fixed latency;
    the fraction of units checkpointed at half the stage's time."""
    extender = Extender()

    def slow(messages):
        time.sleep(LATENCY_S)
        return extender(messages)

    server = scripted_server(slow)
    endpoint = server.endpoint().model_copy(update={"max_concurrency": 4, "units_in_flight": limit})
    config = run_config(
        str(tmp_path),
        extend={"rounds": 2, "chains": 1, "attempts": 1},
        select={"length_biased_initial": False},
        serving={"extender": endpoint.model_dump()},
        storage={"shard_size": shard_size, "checkpoint_interval_s": interval_s},
    )
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(response(DRAFT, index=i).model_dump_json() + "\n" for i in range(units)), encoding="utf-8")
    output = str(tmp_path / name)
    stop, samples = threading.Event(), []
    monitor = threading.Thread(target=_checkpointed_over_time, args=(output, stop, samples))
    monitor.start()
    start = time.monotonic()
    try:
        result = run_extend(config, responses=str(source), output=output)
    finally:
        stop.set()
        monitor.join()
    end = time.monotonic()
    assert result.manifest.count + result.manifest.failures == units
    assert len(server.requests) == 4 * units
    half = start + (end - start) / 2
    return max(count for at, count in samples if at <= half) / units


def test_a_stage_killed_at_half_time_keeps_at_least_the_bounds_share(tmp_path, scripted_server):
    units, limit = 64, 8
    fraction = _finished_at_half(tmp_path, scripted_server, "bounded", units=units, limit=limit, shard_size=1, interval_s=60)
    # Units finish in the order they started, one about every 1/64 of the stage's time: at half time,
    # half of them less those still in flight.
    assert fraction >= 0.5 - limit / units


def test_requests_of_older_units_go_first():
    gate, served = PriorityGate(1), []

    async def request(rank: int, arrive_after: float) -> None:
        await asyncio.sleep(arrive_after)
        async with gate.slot(rank):
            served.append(rank)
            await asyncio.sleep(0.01)

    async def main() -> None:
        # rank 5 takes the free slot; 3, 9, 1 and 7 queue while it runs, then go by rank
        await asyncio.gather(request(5, 0), *(request(rank, 0.001 * (i + 1)) for i, rank in enumerate((3, 9, 1, 7))))

    asyncio.run(main())
    assert served == [5, 1, 3, 7, 9] and gate.free == 1


def test_a_cancelled_waiter_passes_its_turn_on():
    gate = PriorityGate(1)

    async def main() -> list[int]:
        served: list[int] = []
        async with gate.slot(0):
            waiter = asyncio.ensure_future(_take(gate, 1, served))
            later = asyncio.ensure_future(_take(gate, 2, served))
            await asyncio.sleep(0.01)
            waiter.cancel()
        await later
        return served

    assert asyncio.run(main()) == [2] and gate.free == 1


async def _take(gate: PriorityGate, rank: int, served: list[int]) -> None:
    async with gate.slot(rank):
        served.append(rank)


def test_checkpoint_cadence_by_time_writes_shards_before_shard_size_is_reached(tmp_path, scripted_server):
    units, limit = 64, 8
    fraction = _finished_at_half(tmp_path, scripted_server, "timed", units=units, limit=limit, shard_size=1000, interval_s=0.1)
    assert fraction >= 0.5 - 2 * limit / units - 0.1  # at most 0.1 s of finished units (of about 2.6 s) not yet written


def test_checkpoint_is_due_by_units_or_by_time(tmp_path):
    storage, prefix = Storage(), str(tmp_path / "out")
    checkpoint = UnitCheckpoint(storage, prefix, stage="s", fingerprint=Fingerprint.of({}), shard_size=3, interval_s=0.2)
    checkpoint.add("a", [], [])
    assert not checkpoint.due() and 0 < checkpoint.seconds_until_due() <= 0.2
    time.sleep(0.25)
    assert checkpoint.due()
    checkpoint.add("b", [], [])  # a due shard is written by the next add
    assert checkpoint.seconds_until_due() is None and checkpoint.done_units() == {"a", "b"}
    for unit in "cde":
        checkpoint.add(unit, [], [])
    assert checkpoint.seconds_until_due() is None  # three units: a shard at once
    assert len([uri for uri in storage.list(join_uri(prefix, "_checkpoint")) if "/shard-" in uri]) == 2


# --------------------------------------------------------------------------- storage off the event loop


def _generate_config(tmp_path, server, **storage):
    endpoint = server.endpoint().model_copy(update={"max_concurrency": 2, "units_in_flight": 2})
    return run_config(
        str(tmp_path),
        generate={"samples_per_query": 1, "max_retries": 0},
        serving={"generator": endpoint.model_dump()},
        storage={"shard_size": 1, **storage},
    )


def _queries(tmp_path, count: int) -> str:
    path = tmp_path / "queries.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"q{i:02d}", "text": f"Write about topic {i}.", "language": "en"}) + "\n" for i in range(count)),
        encoding="utf-8",
    )
    return str(path)


def test_a_blocked_storage_write_does_not_stall_requests(tmp_path, scripted_server, monkeypatch):
    queries = 12
    all_answered = threading.Event()
    server = None

    def answer(messages):
        time.sleep(0.01)
        if len(server.requests) == queries:
            all_answered.set()
        return essay(60)

    server = scripted_server(answer)
    real_write_bytes = Storage.write_bytes
    waited: list[bool] = []

    def blocking_write(self, uri, data):
        if "/_checkpoint/shard-" in uri and not waited:
            waited.append(all_answered.wait(timeout=30))  # the first shard's write hangs until every request is answered
        real_write_bytes(self, uri, data)

    monkeypatch.setattr(Storage, "write_bytes", blocking_write)
    output = str(tmp_path / "initial")
    result = run_generate(_generate_config(tmp_path, server), queries=_queries(tmp_path, queries), output=output)
    assert waited == [True]  # the requests went on while the write was blocked
    responses = read_records(get_storage(), output, Response)
    assert sorted(r.query_id for r in responses) == [f"q{i:02d}" for i in range(queries)]
    assert result.manifest.count == queries


def test_a_write_that_finally_fails_fails_the_stage_and_keeps_the_shards_before_it(tmp_path, scripted_server, monkeypatch):
    queries = 10
    server = scripted_server(lambda messages: essay(60))
    config = _generate_config(tmp_path, server)
    real_write_bytes = Storage.write_bytes
    shards: list[str] = []

    def failing_third_shard(self, uri, data):
        if "/_checkpoint/shard-" in uri:
            shards.append(uri)
            if len(shards) == 3:
                raise StorageError(f"cannot write {uri}: disk full")
        real_write_bytes(self, uri, data)

    monkeypatch.setattr(Storage, "write_bytes", failing_third_shard)
    output = tmp_path / "initial"
    with pytest.raises(StorageError, match="shard-00002.jsonl: disk full"):
        run_generate(config, queries=_queries(tmp_path, queries), output=str(output))
    assert len(shards) == 3  # nothing after the failed write was attempted
    assert sorted(path.name for path in (output / "_checkpoint").glob("shard-*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    kept = {json.loads(line)["unit"] for path in (output / "_checkpoint").glob("shard-*.jsonl") for line in path.read_text().splitlines()}
    assert len(kept) == 2 and not (output / "manifest.json").exists()

    monkeypatch.undo()
    asked_before = len(server.requests)
    result = run_generate(config, queries=_queries(tmp_path, queries), output=str(output))
    assert len(server.requests) - asked_before == queries - 2  # the kept units are not asked again
    answered = [r.query_id for r in read_records(get_storage(), str(output), Response)]
    answered += [f.query_id for f in read_failures(get_storage(), str(output), Failure)]
    assert sorted(answered) == [f"q{i:02d}" for i in range(queries)] and result.manifest.count == queries


@pytest.mark.integration
def test_a_retrying_s3_does_not_stall_requests(tmp_path, scripted_server, monkeypatch, s3_storage_config, s3_bucket):
    """The first checkpoint shard's PUT gets HTTP 503 three times (the storage retries after 0.3, 0.6
    and 1.2 s): every request is answered while it retries."""
    queries = 12
    answered_at: list[float] = []

    def answer(messages):
        time.sleep(0.01)
        answered_at.append(time.monotonic())
        return essay(60)

    server = scripted_server(answer)
    s3 = s3_storage_config.model_dump(exclude={"shard_size", "checkpoint_interval_s", "backoff_initial_s", "max_retries"})
    config = _generate_config(tmp_path, server, **s3, backoff_initial_s=0.3, max_retries=3)
    storage = get_storage(config.storage)
    client = storage.s3_backend().client
    real_put = client.put_object
    refused: list[float] = []
    written_at: list[float] = []

    def put_object(bucket, key, *args, **kwargs):
        if "/_checkpoint/shard-" in key and len(refused) < 3:
            refused.append(time.monotonic())
            raise ServerError("server failed with HTTP status code 503", 503)
        result = real_put(bucket, key, *args, **kwargs)
        if "/_checkpoint/shard-" in key:
            written_at.append(time.monotonic())
        return result

    monkeypatch.setattr(client, "put_object", put_object)
    monkeypatch.setattr("selflengthen.stages.common.get_storage", lambda _config: storage)
    output = f"s3://{s3_bucket}/initial"
    result = run_generate(config, queries=_queries(tmp_path, queries), output=output)
    assert len(refused) == 3
    assert max(answered_at) < written_at[0]  # all answered before the first shard got through
    assert sorted(r.query_id for r in read_records(storage, output, Response)) == [f"q{i:02d}" for i in range(queries)]
    assert result.manifest.count == queries
