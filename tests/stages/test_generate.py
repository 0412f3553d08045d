"""The generate stage against a scripted server: each query of a many-part input dataset, read a
part at a time with a few units in flight, gives exactly the records its samples call for, in the
input's order, and a sample that fails the checks is given up after its retries."""

import threading
import time

from selflengthen.datasets import read_failures, read_manifest, read_records, write_records
from selflengthen.fingerprint import Fingerprint
from selflengthen.records import Failure, Query, Response, stable_id
from selflengthen.stages.generate import run_generate
from selflengthen.storage import get_storage
from selflengthen.text import count_words
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay

QUERIES = 30


def answer(query: str) -> str:
    """Query ``n`` is answered by an essay of 20 + n words; every fifth query by a text without final punctuation."""
    number = int(query.rsplit(" ", 1)[-1].rstrip("."))
    text = essay(20 + number, seed=number)
    return text[:-1] if number % 5 == 4 else text


def test_generate_streams_its_input_and_writes_each_querys_records_in_input_order(tmp_path, scripted_server):
    lock, calls = threading.Lock(), []

    def reply(messages):
        with lock:
            calls.append(1)
            slow = len(calls) % 3 == 0
        time.sleep(0.05 if slow else 0.0)  # answers come back out of order
        return answer(messages[-1]["content"])

    server = scripted_server(reply)
    endpoint = server.endpoint().model_copy(update={"max_concurrency": 3, "units_in_flight": 4})
    config = run_config(
        str(tmp_path),
        generate={"samples_per_query": 2, "max_retries": 1},
        serving={"generator": endpoint.model_dump()},
        storage={"shard_size": 4},
    )
    storage = get_storage()
    queries = [Query(id=f"q{i:02d}", text=f"Write about topic {i}.", language="en") for i in range(QUERIES)]
    write_records(storage, str(tmp_path / "queries"), queries, stage="self-instruct", fingerprint=Fingerprint.of({}), shard_size=4)
    output = str(tmp_path / "initial")
    result = run_generate(config, queries=str(tmp_path / "queries"), output=output)

    expected = [
        Response(
            id=stable_id(query.id, "initial", sample), query_id=query.id, query=query.text, language="en", kind="initial",
            sample_index=sample, text=answer(query.text), words=count_words(answer(query.text)), finish_reason="stop", attempts=1,
        )
        for query in queries if int(query.id[1:]) % 5 != 4 for sample in range(2)
    ]  # fmt: skip
    assert read_records(storage, output, Response) == expected
    failures = read_failures(storage, output, Failure)
    assert [(f.query_id, f.reason, f.attempts) for f in failures] == [
        (query.id, "no_final_punctuation", 2) for query in queries if int(query.id[1:]) % 5 == 4 for _ in range(2)
    ]
    metrics = read_manifest(storage, output).metrics
    assert metrics["units"] == QUERIES and metrics["responses"] == len(expected) and metrics["requests"] == len(calls)
    assert result.manifest.count == len(expected) and len(calls) == 2 * (QUERIES + QUERIES // 5)
