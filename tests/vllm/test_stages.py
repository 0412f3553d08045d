"""Every generation stage against the real vLLM server (CPU build), configured as the cluster runs
it: server-side ``n``, the stage-2 prefill continued by the server (``continue_final_message``), a
LoRA adapter served by name, and the server's own context limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from selflengthen.client import GenerationClient
from selflengthen.config import SamplingConfig
from selflengthen.datasets import read_failures, read_records
from selflengthen.evaluation import evaluate
from selflengthen.evaluation.benchmarks import packaged_benchmark
from selflengthen.records import Failure, Query, Response, SftExample
from selflengthen.stages.extend import extend_round, run_extend
from selflengthen.stages.generate import run_generate
from selflengthen.stages.length_control import run_length_control
from selflengthen.stages.self_instruct import run_self_instruct
from selflengthen.storage import get_storage
from tests.fixtures.vllm_server import ADAPTER_NAME, BASE_NAME, VLLM_MAX_MODEL_LEN
from tests.orchestration.helpers import run_config
from tests.stages.helpers import response
from tests.training.helpers import FACTS

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.pretrained]

# An essay the pre-trained tiny model can continue: sentences of its own corpus style, long
# enough to split in halves.
ESSAY = (
    "Rivers begin as small streams high in the hills. They gather rain and melting snow as they run down. "
    "Over many years a river cuts a valley into the land. Towns grow along its banks because the water "
    "carries boats and feeds the fields. In the end every river reaches a lake or the sea."
)
# A query whose prompt alone is longer than the served context (2048 tokens).
HUGE = " ".join(["word"] * (VLLM_MAX_MODEL_LEN * 2))


def served_requests(base_url: str) -> float:
    """Requests the server has finished so far (vLLM's Prometheus counter at /metrics)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{"))


def write_queries(path: Path, texts: dict[str, str]) -> str:
    rows = [{"id": key, "text": text, "language": "en"} for key, text in texts.items()]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def config_for(tmp_path, tiny_model_dir, vllm_endpoint):
    """A run config for the pre-trained tiny model, every role on the vLLM server (``generator``:
    the model name the generator endpoint sends; the base model unless said)."""

    def make(generator: str = BASE_NAME, **sections):
        serving = {
            "generator": vllm_endpoint(generator).model_dump(),
            "extender": vllm_endpoint().model_dump(),
            "judge": vllm_endpoint().model_dump(),
        }
        return run_config(str(tmp_path), model={"base": str(tiny_model_dir)}, serving=serving, storage={"shard_size": 2}, **sections)

    return make


def test_self_instruct_proposes_and_judges_on_the_server(tmp_path, config_for, vllm_server):
    config = config_for(
        self_instruct={"num_instructions": 2, "max_attempts_per_slot": 2, "sampling": {"max_tokens": 48, "seed": 3},
                       "judge_sampling": {"max_tokens": 4}},
    )  # fmt: skip
    before = served_requests(vllm_server.base_url)
    result = run_self_instruct(config, output=str(tmp_path / "queries"))

    queries = read_records(get_storage(), result.output_uri, Query)
    failures = read_failures(get_storage(), result.output_uri, Failure)
    assert len(queries) + len(failures) == 2
    assert all(q.source == "self-instruct" and q.text for q in queries)
    # each slot sent at least one proposal (a raw completion) to vLLM
    assert served_requests(vllm_server.base_url) - before >= 2


def test_generate_and_held_out_answers(tmp_path, config_for):
    config = config_for(generate={"samples_per_query": 2, "max_retries": 1, "sampling": {"max_tokens": 512, "seed": 5}})
    queries = write_queries(tmp_path / "queries.jsonl", {q[:12]: q for q, _ in FACTS[:2]})
    storage = get_storage()
    for kind in ("initial", "heldout"):
        output = str(tmp_path / kind)
        result = run_generate(config, queries=queries, output=output, kind=kind)
        answers = read_records(storage, output, Response)
        failures = read_failures(storage, output, Failure)
        assert len(answers) + len(failures) == 4 == result.manifest.count + result.manifest.failures
        assert answers, f"the pre-trained tiny model answers some {kind} samples: {[f.detail for f in failures]}"
        assert all(a.kind == kind and a.words > 0 and a.finish_reason == "stop" for a in answers)
        by_query: dict[str, set[str]] = {}
        for answer in answers:
            by_query.setdefault(answer.query_id, set()).add(answer.text)
        # two samples of one query drew with different seeds: different texts
        assert all(len(texts) == len([a for a in answers if a.query_id == query]) for query, texts in by_query.items())


async def test_server_side_n_draws_the_samples_the_client_would_emulate(vllm_endpoint):
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=24, seed=41)
    messages = [{"role": "user", "content": "Write about rivers."}]
    async with GenerationClient(vllm_endpoint()) as client:
        together = await client.chat(messages, sampling, n=3)
        apart = [
            (await client.chat(messages, sampling.model_copy(update={"seed": 41 + i})))[0] for i in range(3)
        ]
    assert len({c.text for c in together}) == 3, [c.text for c in together]
    # vLLM gives sample i of a seeded request the seed seed + i (see selflengthen/client.py)
    assert [c.text for c in together] == [c.text for c in apart]


def test_extend_continues_the_prefill_on_the_server(tmp_path, config_for):
    # One response: length-biased thinning before extension would drop it (the shortest is always dropped).
    config = config_for(
        extend={"chains": 1, "attempts": 1, "rounds": 2, "sampling": {"max_tokens": 768, "seed": 9}},
        select={"length_biased_initial": False},
    )
    # One sentence a paragraph: the round splits the text at its paragraph midpoint.
    initial = response(ESSAY.replace(". ", ".\n\n"), query="Write about rivers.")
    storage = get_storage()

    async def rounds():
        """Rounds of attempts 1..4 until stage 1 gives a text to prefill (the tiny model may ramble)."""
        async with GenerationClient(config.serving.extender) as client:
            tried = []
            for attempt in range(1, 5):
                tried.append(await extend_round(client, config, initial, initial.text, (1, attempt, 1)))
                if tried[-1].stage1_text:
                    break
            return tried

    tried = asyncio.run(rounds())
    record = tried[-1]
    assert record.stage1_text, [r.reason for r in tried]
    prefill = record.stage1_text + config.extend.prefill_separator
    assert record.continuation.strip(), "the server continued the final assistant message"
    assert record.text == (prefill + record.continuation.lstrip()).strip()
    assert record.finish_reason in ("stop", "length")

    responses = tmp_path / "initial.jsonl"
    responses.write_text(initial.model_dump_json() + "\n", encoding="utf-8")
    output = str(tmp_path / "extended")
    result = run_extend(config, responses=str(responses), output=output)
    extended = read_records(storage, output, Response)
    failures = read_failures(storage, output, Failure)
    assert len(extended) + len(failures) == 1 == result.manifest.count + result.manifest.failures
    for answer in extended:
        assert answer.words > config.extend.min_ratio * initial.words
        assert any(r.accepted and r.continuation for r in answer.rounds)
    for failure in failures:
        assert failure.reason == "below_min_ratio" and failure.detail.startswith("round rejections:")


def test_length_control_rewrites_each_query_on_the_server(tmp_path, config_for, vllm_server):
    config = config_for(
        length_control={"min_words": 20, "max_words": 4000, "unit": 100, "coarse_unit": 200,
                        "rewrite_sampling": {"max_tokens": 48, "seed": 2}},
    )  # fmt: skip
    sources = tmp_path / "responses.jsonl"
    rows = [response(f"{ESSAY}\n\n{answer}", query=q) for q, answer in FACTS[:3]]  # distinct texts: one example each
    sources.write_text("".join(r.model_dump_json() + "\n" for r in rows), encoding="utf-8")
    before = served_requests(vllm_server.base_url)
    result = run_length_control(config, responses=[str(sources)], output=str(tmp_path / "length"))

    examples = read_records(get_storage(), result.output_uri, SftExample)
    assert len(examples) == 3 and result.metrics["examples"] == 3
    for example in examples:
        constraint = example.meta["constraint"]
        assert example.meta["llm_rewrite"] or constraint["text"] in example.messages[0].content
        assert example.messages[1].content in {row.text for row in rows}
    assert served_requests(vllm_server.base_url) - before == 3  # one rewrite request per example


def test_eval_generate_and_judge(tmp_path, config_for, vllm_endpoint):
    config = config_for(
        eval={"benchmarks": ["longen"], "benchmark_files": {"longen": packaged_benchmark("longen")}, "max_prompts": 2,
              "quality_rubric": "self-lengthen", "judge_retries": 1,
              "sampling": {"max_tokens": 48, "seed": 4}, "judge_sampling": {"max_tokens": 48}},
    )  # fmt: skip
    results = evaluate(config, endpoint=vllm_endpoint(), output=str(tmp_path / "eval"), iteration=None)

    longen = results["longen"]
    assert longen["count"] == 2 and 0 <= longen["overall"] <= 100
    quality = longen["quality"]
    assert quality["count"] == 2 and quality["scored"] + quality["unscored"] == 2
    assert sum(quality["unscored_reasons"].values()) == quality["unscored"]
    verdicts = (tmp_path / "eval" / "longen" / "quality.jsonl").read_text().splitlines()
    assert len(verdicts) == 2 and all(("scores" in v) != ("reason" in v) for v in map(json.loads, verdicts))


def test_the_trained_adapter_answers_as_generator(vllm_server, vllm_adapter_dir):
    cards = {card["id"]: card for card in httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()["data"]}
    assert cards[BASE_NAME]["max_model_len"] == VLLM_MAX_MODEL_LEN
    assert cards[ADAPTER_NAME]["root"] == str(vllm_adapter_dir) and cards[ADAPTER_NAME]["parent"] == BASE_NAME

    question = FACTS[0][0]
    answers = {}
    for model in (BASE_NAME, ADAPTER_NAME):
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 16, "temperature": 0}
        reply = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=120).json()
        assert reply["model"] == model
        answers[model] = reply["choices"][0]["message"]["content"]
    assert answers[ADAPTER_NAME] and answers[ADAPTER_NAME] != answers[BASE_NAME], answers


def test_a_prompt_longer_than_the_context_is_refused_by_the_server(tmp_path, config_for):
    # With fit_context off the client sends the prompt as it is: vLLM itself refuses it (HTTP 400).
    config = config_for(generate={"samples_per_query": 1, "max_retries": 0, "sampling": {"max_tokens": 16}})
    config.serving.generator.fit_context = False
    queries = write_queries(tmp_path / "queries.jsonl", {"huge": HUGE, "short": FACTS[1][0]})
    output = str(tmp_path / "initial")
    result = run_generate(config, queries=queries, output=output)

    failures = {f.query_id: f for f in read_failures(get_storage(), output, Failure)}
    assert failures["huge"].reason == "prompt_too_long"
    assert "HTTP 400" in failures["huge"].detail and "maximum context length" in failures["huge"].detail
    assert result.metrics["failure_reasons"]["prompt_too_long"] == 1
    answered = {r.query_id for r in read_records(get_storage(), output, Response)} | set(failures)
    assert answered == {"huge", "short"}


@pytest.mark.parametrize("model", [BASE_NAME, ADAPTER_NAME])
def test_a_prompt_longer_than_the_context_is_refused_before_sending(tmp_path, config_for, vllm_server, model):
    # The base model's card gives max_model_len (an adapter's names the base as its parent); the
    # client counts the prompt with vLLM's /tokenize and refuses it without asking for a completion.
    config = config_for(model, generate={"samples_per_query": 1, "max_retries": 0, "sampling": {"max_tokens": 16}})
    queries = write_queries(tmp_path / "queries.jsonl", {"huge": HUGE})
    output = str(tmp_path / "initial")
    before = served_requests(vllm_server.base_url)
    run_generate(config, queries=queries, output=output)

    (failure,) = read_failures(get_storage(), output, Failure)
    assert failure.reason == "prompt_too_long" and "not sent" in failure.detail and str(VLLM_MAX_MODEL_LEN) in failure.detail
    assert served_requests(vllm_server.base_url) == before
