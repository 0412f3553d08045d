"""Self-instruct against a scripted OpenAI-compatible server: the proposal is a continuation of a
pre-filled assistant turn of the chat template, a multi-line instruction survives, only an exact yes
of the judge counts, and the example pool resets (docs/method.md, step 1)."""

import itertools
import threading

from selflengthen.datasets import read_failures, read_records
from selflengthen.prompts import packaged_seeds, self_instruct_prompt
from selflengthen.records import Failure, Query
from selflengthen.stages.self_instruct import InstructionPool, run_self_instruct
from selflengthen.storage import get_storage
from tests.orchestration.helpers import run_config

TOPICS = ["lighthouses", "glaciers", "old maps", "night trains", "bee keeping", "salt marshes"]


class Proposer:
    """Proposals are two-line instructions on a new topic each; the judge answers ``verdict``."""

    def __init__(self, verdict: str):
        self.verdict = verdict
        self.topics = itertools.cycle(TOPICS)
        self.lock = threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        if messages[-1]["role"] == "user":
            return self.verdict
        with self.lock:
            topic = next(self.topics)
        return f"Write a long history of {topic}.\nCover how they began, how they changed and where they stand today."


def _run(tmp_path, scripted_server, verdict: str, **settings):
    server = scripted_server(Proposer(verdict))
    config = run_config(
        str(tmp_path),
        self_instruct={"num_instructions": 3, "max_attempts_per_slot": 2, **settings},
        serving={"generator": server.endpoint().model_dump()},
    )
    output = str(tmp_path / "queries")
    result = run_self_instruct(config, output=output, iteration=1)
    storage = get_storage()
    return result, read_records(storage, output, Query), read_failures(storage, output, Failure), server


def test_proposals_continue_a_prefilled_assistant_turn_and_keep_every_line(tmp_path, scripted_server):
    _, queries, failures, server = _run(tmp_path, scripted_server, "yes")
    assert not failures and len(queries) == 3
    assert all(query.text.count("\n") == 1 and query.text.endswith("where they stand today.") for query in queries)
    proposals = [body for body in server.requests if body["messages"][-1]["role"] == "assistant"]
    assert len(proposals) == 3
    for body in proposals:
        user, assistant = body["messages"]
        shots = [line.split(": ", 1)[1] for line in assistant["content"].split("\n")[:2]]
        task, prefill, stop = self_instruct_prompt(shots, "en")
        assert user == {"role": "user", "content": task} and assistant["content"] == prefill
        assert prefill.endswith("\nInstruction 3: ")
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        assert stop in body["stop"] and stop == "\nInstruction 4"


def test_only_an_exact_yes_of_the_judge_counts_by_default(tmp_path, scripted_server):
    result, queries, failures, _ = _run(tmp_path, scripted_server, "Yes, it is suitable.")
    assert not queries and len(failures) == 3
    assert result.metrics["empty_slot_reasons"] == {"judged_unsuitable": 3}
    lenient = _run(tmp_path / "lenient", scripted_server, "Yes, it is suitable.", judge_match="lenient")
    assert len(lenient[1]) == 3


def test_first_line_only_when_multi_line_is_off(tmp_path, scripted_server):
    _, queries, _, _ = _run(tmp_path, scripted_server, "yes", multi_line=False)
    assert queries and all("\n" not in query.text and query.text.startswith("Write a long history") for query in queries)


def test_the_example_pool_grows_and_resets_to_the_seeds():
    seeds = {"en": list(packaged_seeds("en"))}
    pool = InstructionPool(seeds, grow=True, reset_every=3)
    assert pool.claim("Write about rivers in spring.", "en") and pool.claim("Write about rivers in winter.", "en")
    assert pool.examples["en"] == seeds["en"] + ["Write about rivers in spring.", "Write about rivers in winter."]
    assert pool.claim("Write about rivers in autumn.", "en")
    assert pool.examples["en"] == seeds["en"]  # the third accepted instruction resets the pool
    assert not pool.claim("write about RIVERS in spring!", "en")  # deduplication outlives the reset
    assert pool.claim("Write about rivers at night.", "en") and pool.examples["en"][-1] == "Write about rivers at night."
