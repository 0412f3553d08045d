"""Serve and teardown steps: with a real local model server (transformers serve, tiny model), and
the exit handler on Kubeflow against a scripted Kubernetes API and an S3 endpoint that is down."""

import socket
from datetime import datetime, timezone

import httpx
import pytest

from selflengthen.errors import EndpointError
from selflengthen.orchestration import serving
from selflengthen.orchestration.layout import RunLayout
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import COMPLETE_NAME, TrainedModel
from tests.cluster.fake_kube import FakeKubeAPI, status
from tests.orchestration.helpers import alive, run_config


@pytest.mark.integration
def test_serve_replace_teardown_and_teardown_of_the_run(tmp_path, untrained_model_dir, monkeypatch) -> None:
    monkeypatch.setenv(serving.LOCAL_DIR_ENV, str(tmp_path))
    config = run_config(str(tmp_path / "runs"), model={"base": str(untrained_model_dir)})
    storage = get_storage()
    first = serving.serve(config, phase="iteration-1", server="generator", models={"generator": str(untrained_model_dir)})
    assert first == RunLayout(config).server_record("iteration-1", "generator")
    old = serving.ServerRecord.model_validate_json(storage.read_text(first))
    endpoint = serving.endpoint_for(config, first, "generator")
    assert endpoint.base_url == old.base_url and endpoint.model == old.model
    assert httpx.get(f"{endpoint.base_url}/models", timeout=10).status_code == 200
    assert (tmp_path / "logs" / "server-iteration-1-generator.log").exists()

    # A rerun of the same serve step (the first run was killed) replaces the server it left.
    again = serving.serve(config, phase="iteration-1", server="generator", models={"generator": str(untrained_model_dir)})
    new = serving.ServerRecord.model_validate_json(storage.read_text(again))
    assert new.pid != old.pid and not alive(old.pid) and alive(new.pid)
    assert serving.with_endpoint(config, again, "generator").serving.generator.base_url == new.base_url

    other = serving.serve(config, phase="iteration-1", server="extender", models={"extender": str(untrained_model_dir)})
    other_pid = serving.ServerRecord.model_validate_json(storage.read_text(other)).pid
    assert serving.teardown(config, phase="iteration-1", server="generator") == [f"iteration-1 generator (pid {new.pid})"]
    assert not alive(new.pid) and not storage.exists(again)
    assert serving.teardown(config, phase="iteration-1", server="generator") == []

    assert serving.teardown_run(config) == [f"iteration-1 extender (pid {other_pid})"]
    assert not alive(other_pid) and storage.list(RunLayout(config).serving()) == []


def test_a_lora_result_without_a_merged_model_is_refused_locally(tmp_path) -> None:
    config = run_config(str(tmp_path / "runs"))
    output = str(tmp_path / "train")
    trained = TrainedModel(
        role="generator", method="lora", base_model="/models/base", adapter=join_uri(output, "adapter"), model=None,
        steps=1, completed_at=datetime.now(timezone.utc),
    )  # fmt: skip
    get_storage().write_text(join_uri(output, COMPLETE_NAME), trained.model_dump_json())
    assert serving.served_model(get_storage(), output) == serving.ServedModel(model="/models/base", adapter=join_uri(output, "adapter"))
    with pytest.raises(EndpointError, match="training.save_merged"):
        serving.serve(config, phase="iteration-2", server="generator", models={"generator": output})


def test_missing_records_are_clear_errors(tmp_path) -> None:
    config = run_config(str(tmp_path / "runs"))
    with pytest.raises(EndpointError, match="serve step of this phase has not run"):
        serving.endpoint_for(config, RunLayout(config).server_record("iteration-1", "generator"), "generator")


# --------------------------------------------------------------------------- the exit handler on Kubeflow

NS = "ns1"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
TRAINJOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (S3 that cannot be reached)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kubeflow_config(endpoint: str):
    return run_config(
        "s3://runs/unit",
        model={"base": "s3://models/base"},
        storage={"s3_endpoint": endpoint, "s3_secure": False, "max_retries": 0},
        pipeline={"namespace": NS},
        execution={"target": "kubeflow", "training": "trainjob"},
    )


def listed(*names: str) -> dict:
    return {"metadata": {}, "items": [{"metadata": {"name": name}} for name in names]}


def test_the_exit_handler_deletes_cluster_objects_when_s3_is_unreachable(monkeypatch, caplog) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    config = kubeflow_config(f"127.0.0.1:{closed_port()}")
    kube = FakeKubeAPI()
    kube.reply("GET", DEPLOYMENTS, 200, listed("sl-unit-generator-it1"))
    kube.reply("DELETE", f"{DEPLOYMENTS}/sl-unit-generator-it1", 200, {})
    kube.reply("GET", SERVICES, 200, listed("sl-unit-generator-it1"))
    kube.reply("DELETE", f"{SERVICES}/sl-unit-generator-it1", 200, {})
    kube.reply("GET", TRAINJOBS, 200, listed("sl-unit-extender-it2"))
    kube.reply("DELETE", f"{TRAINJOBS}/sl-unit-extender-it2", 200, {})

    stopped = serving.teardown_run(config, api_client=kube.api_client)

    kube.assert_done()
    assert stopped == ["Deployment/sl-unit-generator-it1", "Service/sl-unit-generator-it1", "TrainJob/sl-unit-extender-it2"]
    assert kube.requests[0].query["labelSelector"] == "selflengthen.io/run-id=unit,app.kubernetes.io/component=model-server"
    assert kube.requests[4].query["labelSelector"] == "selflengthen.io/run-id=unit,app.kubernetes.io/component=trainer"
    assert "the server records stay" in caplog.text


def test_a_failed_cluster_delete_still_deletes_the_rest_and_fails_the_exit_handler(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    config = kubeflow_config(f"127.0.0.1:{closed_port()}")
    kube = FakeKubeAPI()
    kube.reply("GET", DEPLOYMENTS, 403, status(403, "Forbidden", "deployments is forbidden"))
    kube.reply("GET", TRAINJOBS, 200, listed("sl-unit-extender-it2"))
    kube.reply("DELETE", f"{TRAINJOBS}/sl-unit-extender-it2", 200, {})

    with pytest.raises(EndpointError, match="left cluster objects behind: deleting model servers .* HTTP 403"):
        serving.teardown_run(config, api_client=kube.api_client)
    kube.assert_done()


# --------------------------------------------------------------------------- serving.layout shared on Kubeflow


def trained_adapter(storage, output: str, role: str, base: str) -> str:
    """A finished LoRA training output at ``output`` (its COMPLETE marker) for ``role`` over ``base``."""
    adapter = join_uri(output, "adapter")
    trained = TrainedModel(
        role=role, method="lora", base_model=base, adapter=adapter, model=None, steps=1, completed_at=datetime.now(timezone.utc)
    )
    storage.write_text(join_uri(output, COMPLETE_NAME), trained.model_dump_json())
    return adapter


@pytest.mark.integration
def test_the_shared_server_answers_each_stage_by_its_role_name_with_concurrency_scaled_to_replicas(
    monkeypatch, s3_storage_config, s3_bucket
) -> None:
    from tests.cluster.fake_kube import echo

    root = f"s3://{s3_bucket}"
    config = run_config(
        f"{root}/runs",
        model={"base": f"{root}/models/base"},
        storage=s3_storage_config.model_dump(),
        serving={"generator": {"model": "generator", "max_concurrency": 16}, "extender": {"model": "extender"}, "cluster": {"replicas": 4}},
        pipeline={"namespace": NS},
        execution={"target": "kubeflow"},
    )
    assert config.serving.layout == "shared"
    storage = get_storage(config.storage)
    adapters = {role: trained_adapter(storage, f"{root}/runs/unit/iteration-1/train/{role}", role, config.model.base) for role in ("generator", "extender")}
    name = "sl-unit-shared-it2"
    kube = FakeKubeAPI()
    kube.reply("POST", SERVICES, 201, echo(uid="s1"))
    kube.reply("POST", DEPLOYMENTS, 201, echo(uid="d1", generation=1))
    ready = {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4}
    kube.reply("GET", f"{DEPLOYMENTS}/{name}", 200, lambda request: {**kube.requests[1].body, "metadata": {**kube.requests[1].body["metadata"], "generation": 1}, "status": ready})
    monkeypatch.setattr("selflengthen.serving.cluster.kube_api_client", lambda error_type: kube.api_client)

    models = {"base": config.model.base, "generator": f"{root}/runs/unit/iteration-1/train/generator", "extender": f"{root}/runs/unit/iteration-1/train/extender"}
    record_uri = serving.serve(config, phase="iteration-2", server="shared", models=models)

    kube.assert_done()
    deployment = kube.requests[1].body
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == 4
    assert args[: args.index("--host")] == [
        "--model", "/models/base", "--served-model-name", "base", "--enable-lora",
        "--lora-modules", "generator=/models/adapters/generator", "extender=/models/adapters/extender",
        "--max-lora-rank", "8", "--max-loras", "2",
    ]  # fmt: skip
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert fetch == [f"{config.model.base}=/models/base", *(f"{adapters[role]}=/models/adapters/{role}" for role in ("generator", "extender"))]
    # every stage reaches the one server, under its role's name; the base model under its own
    generator = serving.endpoint_for(config, record_uri, "generator")
    extender = serving.endpoint_for(config, record_uri, "extender")
    proposer = serving.with_endpoint(config, record_uri, "generator", model=config.self_instruct.model).serving.generator
    assert generator.base_url == extender.base_url == proposer.base_url == f"http://{name}.{NS}.svc:8000/v1"
    assert (generator.model, extender.model, proposer.model) == ("generator", "extender", "base")
    assert generator.model_source.startswith(models["generator"]) and proposer.model_source == config.model.base
    assert generator.max_concurrency == 16 * 4 and extender.max_concurrency == 32 * 4  # the Service spreads them over 4 replicas
