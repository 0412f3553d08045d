"""Extension chains against a scripted OpenAI-compatible server: each initial response runs
``extend.chains`` chains, each successful chain is its own record, and a chain retries up to
``extend.attempts`` attempts (docs/method.md, step 3)."""

import threading

from selflengthen.datasets import read_failures, read_records
from selflengthen.records import Failure, Response, stable_id
from selflengthen.stages.extend import run_extend
from selflengthen.storage import get_storage
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay, response

DRAFT = "\n\n".join(essay(12, seed=i) for i in range(4))


class Extender:
    """Stage 1 answers two new paragraphs; stage 2 (a prefilled assistant turn) continues with two
    more, or, for the first ``failures`` stage-2 requests, with a text that has no final punctuation."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.stage2 = 0
        self.lock = threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        if messages[-1]["role"] == "user":
            return "\n\n".join(essay(15, seed=100 + i) for i in range(3))
        with self.lock:
            self.stage2 += 1
            failing = self.stage2 <= self.failures
        return essay(40, seed=200 + self.stage2)[:-1] if failing else "\n\n".join(essay(30, seed=300 + i) for i in range(2))


def _jsonl(tmp_path, records: list[Response]) -> str:
    path = tmp_path / "initial.jsonl"
    path.write_text("".join(record.model_dump_json() + "\n" for record in records), encoding="utf-8")
    return str(path)


def _run(tmp_path, scripted_server, extender: Extender, initial: list[Response], **extend):
    server = scripted_server(extender)
    config = run_config(
        str(tmp_path),
        extend={"rounds": 1, **extend},
        select={"length_biased_initial": False},
        serving={"extender": server.endpoint().model_dump()},
    )
    storage = get_storage()
    source, output = _jsonl(tmp_path, initial), str(tmp_path / "extended")
    result = run_extend(config, responses=source, output=output)
    return result, read_records(storage, output, Response), read_failures(storage, output, Failure), server


def test_every_successful_chain_is_its_own_record(tmp_path, scripted_server):
    initial = [response(DRAFT, index=0), response(DRAFT, query="Write about bridges.", index=0)]
    result, extended, failures, _ = _run(tmp_path, scripted_server, Extender(), initial, chains=2, attempts=3)
    assert not failures
    assert len(extended) == 4 and len({r.id for r in extended}) == 4
    for source in initial:
        chains = sorted(r.chain for r in extended if r.initial_id == source.id)
        assert chains == [0, 1]
    assert all(r.words > 1.2 * r.initial_words and r.attempts == 1 for r in extended)
    assert result.metrics["extended"] == 4 and result.metrics["failed"] == 0


def test_a_chain_retries_up_to_its_attempts(tmp_path, scripted_server):
    # The first two stage-2 answers fail the checks: the chain succeeds at its third attempt.
    _, extended, failures, server = _run(tmp_path, scripted_server, Extender(failures=2), [response(DRAFT)], chains=1, attempts=3)
    assert not failures and len(extended) == 1
    assert extended[0].attempts == 3
    assert [(r.attempt, r.accepted, r.reason) for r in extended[0].rounds] == [
        (1, False, "no_final_punctuation"), (2, False, "no_final_punctuation"), (3, True, None)
    ]
    assert len(server.requests) == 6  # two requests (stage 1, stage 2) per attempt


def test_a_chain_that_never_succeeds_is_one_failure_after_its_attempts(tmp_path, scripted_server):
    result, extended, failures, server = _run(tmp_path, scripted_server, Extender(failures=99), [response(DRAFT)], chains=2, attempts=2)
    assert not extended
    assert len(failures) == 2 and len({f.id for f in failures}) == 2
    assert all(f.reason == "below_min_ratio" and f.attempts == 2 for f in failures)
    assert len(server.requests) == 2 * 2 * 2  # chains x attempts x (stage 1 + stage 2)
    assert result.metrics["failed"] == 2


def test_initial_responses_are_length_sampled_before_extension(tmp_path, scripted_server):
    initial = [response(DRAFT + "\n\n" + essay(5 * i, seed=50 + i), index=i) for i in range(1, 11)]
    server = scripted_server(Extender())
    config = run_config(str(tmp_path), extend={"rounds": 1, "chains": 1, "attempts": 1}, serving={"extender": server.endpoint().model_dump()})
    storage = get_storage()
    source, output = _jsonl(tmp_path, initial), str(tmp_path / "extended")
    result = run_extend(config, responses=source, output=output)
    done = [r.initial_id for r in read_records(storage, output, Response)]
    done += [f.id for f in read_failures(storage, output, Failure)]
    shortest = min(initial, key=lambda r: r.words)
    assert result.metrics["input_records"] == 10 and 0 < result.metrics["input_not_kept"] < 10
    assert result.metrics["units"] == len(done) == 10 - result.metrics["input_not_kept"]
    assert stable_id(shortest.id, "extend", 0, "failure") not in done and shortest.id not in done  # rank 1: always dropped
