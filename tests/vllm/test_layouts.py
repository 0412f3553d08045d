"""The serving layouts end to end against the real vLLM server (CPU build): the serve step starts
vLLM as ``serving.layout`` says, the generation steps (self-instruct, generate, extend) reach it
through the server record under their role's model name, and the teardown step stops it.

* shared: one server, the base model under its own name and both roles as LoRA adapters (the
  project's adapter of the session, trained on the tiny model), answering every role by name.
* sequential: one role's server at a time; the Generator's is stopped before the Extender's starts.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from selflengthen.datasets import read_failures, read_manifest, read_records
from selflengthen.orchestration import serving, steps
from selflengthen.records import Failure, Response
from selflengthen.storage import get_storage
from tests.fixtures.vllm_server import vllm_cpu_settings
from tests.orchestration.helpers import alive, run_config
from tests.stages.helpers import response
from tests.training.helpers import FACTS
from tests.vllm.test_stages import ESSAY, served_requests, write_queries

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.pretrained]

# As the cluster configs run vLLM: server-side n, the stage-2 prefill continued by the server.
ENDPOINT = {
    "max_concurrency": 8, "request_timeout_s": 300.0, "max_retries": 2, "backoff_initial_s": 0.1, "backoff_max_s": 1.0,
    "server_supports_n": True, "chat_template_continuation": True,
}  # fmt: skip


@pytest.fixture
def layout_config(tmp_path, tiny_model_dir, vllm_python, monkeypatch):
    """A LoRA run config whose local serve step starts vLLM (CPU settings), with small stages."""
    monkeypatch.setenv(serving.LOCAL_DIR_ENV, str(tmp_path))

    def make(layout: str, **sections):
        settings = {
            "self_instruct": {"num_instructions": 2, "max_attempts_per_slot": 1, "sampling": {"max_tokens": 48, "seed": 3},
                              "judge_sampling": {"max_tokens": 4}},
            "generate": {"samples_per_query": 2, "max_retries": 1, "sampling": {"max_tokens": 256, "seed": 5}},
            "extend": {"chains": 1, "attempts": 1, "rounds": 1, "sampling": {"max_tokens": 256, "seed": 9}},
            "select": {"length_biased_initial": False},
            **sections,
        }  # fmt: skip
        return run_config(
            str(tmp_path / "runs"),
            model={"base": str(tiny_model_dir)},
            training={"method": "lora"},
            storage={"shard_size": 2},
            serving={
                "layout": layout,
                "local": vllm_cpu_settings(vllm_python).model_dump(),
                "generator": {**ENDPOINT, "model": "generator"},
                "extender": {**ENDPOINT, "model": "extender"},
            },
            **settings,
        )

    return make


def run_generation_steps(config, tmp_path: Path, phase: str, endpoints: dict[str, str]) -> dict[str, str]:
    """self-instruct, generate (the session's fact queries) and extend (one essay) through the steps,
    each against the server recorded for its role; the output URI of each."""
    as_json = config.to_json()
    queries = write_queries(tmp_path / "queries.jsonl", {q[:12]: q for q, _ in FACTS[:2]})
    initial = tmp_path / "initial.jsonl"
    initial.write_text(response(ESSAY.replace(". ", ".\n\n"), query="Write about rivers.").model_dump_json() + "\n", encoding="utf-8")
    return {
        "self-instruct": steps.self_instruct(as_json, phase=phase, endpoint=endpoints["self-instruct"]),
        "generate": steps.generate(as_json, phase=phase, kind="initial", queries=queries, endpoint=endpoints["generate"]),
        "extend": steps.extend(as_json, phase=phase, responses=str(initial), endpoint=endpoints["extend"]),
    }


def asked_models(outputs: dict[str, str]) -> dict[str, str]:
    """The model name each stage's requests carried (recorded in its output's fingerprint)."""
    storage = get_storage()
    role = {"self-instruct": "generator", "generate": "generator", "extend": "extender"}
    return {stage: read_manifest(storage, uri).fingerprint.settings[f"serving.{role[stage]}.model"] for stage, uri in outputs.items()}


def assert_worked(outputs: dict[str, str]) -> None:
    storage = get_storage()
    for stage, uri in outputs.items():
        manifest = read_manifest(storage, uri)
        assert manifest.count + manifest.failures >= 1, stage
    answers = read_records(storage, outputs["generate"], Response)
    assert answers, [f.detail for f in read_failures(storage, outputs["generate"], Failure)]


def test_shared_one_server_answers_the_base_and_both_adapters_by_name(tmp_path, layout_config, tiny_model_dir, vllm_adapter_dir):
    config = layout_config("shared")  # self-instruct by the base model (the reference)
    trained = str(vllm_adapter_dir.parent)  # the training output holding the session's adapter
    models = {"base": str(tiny_model_dir), "generator": trained, "extender": trained}
    record_uri = serving.serve(config, phase="iteration-2", server="shared", models=models)
    record = serving.ServerRecord.model_validate_json(get_storage().read_text(record_uri))
    try:
        cards = {card["id"]: card for card in httpx.get(f"{record.base_url}/models", timeout=10).json()["data"]}
        assert set(cards) == {"base", "generator", "extender"}
        assert cards["generator"]["parent"] == cards["extender"]["parent"] == "base"
        before = served_requests(record.base_url)
        outputs = run_generation_steps(config, tmp_path, "iteration-2", dict.fromkeys(("self-instruct", "generate", "extend"), record_uri))
        assert_worked(outputs)
        assert asked_models(outputs) == {"self-instruct": "base", "generate": "generator", "extend": "extender"}
        assert served_requests(record.base_url) - before >= 2 + 2 + 2  # proposals, samples, extension stages
    finally:
        stopped = serving.teardown(config, phase="iteration-2", server="shared")
    assert stopped == [f"iteration-2 shared (pid {record.pid})"] and not alive(record.pid)


def test_sequential_serves_one_role_at_a_time(tmp_path, layout_config, tiny_model_dir):
    config = layout_config("sequential", self_instruct={"model": "generator", "num_instructions": 1, "max_attempts_per_slot": 1,
                                                        "sampling": {"max_tokens": 48, "seed": 3}, "judge_sampling": {"max_tokens": 4}})  # fmt: skip
    base = str(tiny_model_dir)
    phase = "iteration-1"  # both roles are the base model
    generator_uri = serving.serve(config, phase=phase, server="generator", models={"base": base, "generator": base})
    generator = serving.ServerRecord.model_validate_json(get_storage().read_text(generator_uri))
    assert generator.models == {"generator": "generator", "base": "generator"}
    as_json = config.to_json()
    queries = write_queries(tmp_path / "queries.jsonl", {q[:12]: q for q, _ in FACTS[:2]})
    outputs = {
        "self-instruct": steps.self_instruct(as_json, phase=phase, endpoint=generator_uri),
        "generate": steps.generate(as_json, phase=phase, kind="initial", queries=queries, endpoint=generator_uri),
    }
    serving.teardown(config, phase=phase, server="generator")
    assert not alive(generator.pid)

    extender_uri = serving.serve(config, phase=phase, server="extender", models={"base": base, "extender": base})
    extender = serving.ServerRecord.model_validate_json(get_storage().read_text(extender_uri))
    try:
        assert extender.base_url != generator.base_url and extender.models == {"extender": "extender", "base": "extender"}
        cards = httpx.get(f"{extender.base_url}/models", timeout=10).json()["data"]
        assert [card["id"] for card in cards] == ["extender"]
        outputs["extend"] = steps.extend(as_json, phase=phase, responses=outputs["generate"], endpoint=extender_uri)
    finally:
        serving.teardown(config, phase=phase, server="extender")
    assert not alive(extender.pid)
    assert_worked(outputs)
    assert asked_models(outputs) == {"self-instruct": "generator", "generate": "generator", "extend": "extender"}
