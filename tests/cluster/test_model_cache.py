"""The shared model cache (execution.model_cache_pvc): fetched once per content into the PVC,
mounted read-only by model servers and trainers; without it, today's copy per server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selflengthen.cluster.fetch import fetch
from selflengthen.cluster.objects import to_manifest
from selflengthen.cluster.trainjob import build_trainjob
from selflengthen.modelio import COMPLETE, MODEL_CACHE_ENV, localize
from selflengthen.serving.cluster import build_model_server
from selflengthen.serving.plan import ServerPlan
from selflengthen.storage import get_storage
from selflengthen.training.launch import TrainingRequest
from tests.cluster.conftest import cluster_config
from tests.fixtures.k8s_validation import validate_object

CACHE_MOUNT = {"name": "model-cache", "mountPath": "/model-cache"}


def test_servers_fill_the_cache_in_the_init_container_and_read_it_read_only():
    config = cluster_config(execution__model_cache_pvc="models")
    plan = ServerPlan.for_role(config, "generator", "s3://models/base", "s3://runs/demo/adapter")
    server = build_model_server(config, "generator", 1, plan)
    deployment = to_manifest(server.deployment)
    validate_object(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    (fetch_container,), (vllm,) = pod["initContainers"], pod["containers"]
    assert {**CACHE_MOUNT, "readOnly": False} in fetch_container["volumeMounts"]  # the writer
    assert {**CACHE_MOUNT, "readOnly": True} in vllm["volumeMounts"]
    assert {"name": MODEL_CACHE_ENV, "value": "/model-cache"} in fetch_container["env"]
    models = next(volume for volume in pod["volumes"] if volume["name"] == "models")
    assert models["emptyDir"]["sizeLimit"] == "1Mi"  # links only


def test_without_the_cache_each_server_copies_the_model_into_its_own_volume():
    config = cluster_config()
    plan = ServerPlan.for_role(config, "generator", "s3://models/base")
    pod = to_manifest(build_model_server(config, "generator", 1, plan).deployment)["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
    assert all(mount["name"] != "model-cache" for container in pod["containers"] + pod["initContainers"] for mount in container["volumeMounts"])


def test_trainers_mount_the_cache_read_only():
    request = TrainingRequest(role="generator", data_uri="s3://runs/d", base_model_uri="s3://models/base", output_uri="s3://runs/o")
    job = build_trainjob(cluster_config(execution__model_cache_pvc="models"), 1, request)
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    assert {**CACHE_MOUNT, "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert {"name": MODEL_CACHE_ENV, "value": "/model-cache"} in job["spec"]["trainer"]["env"]


@pytest.mark.integration
def test_a_folder_is_fetched_once_per_content_and_linked(s3_storage_config, s3_bucket: str, tmp_path: Path, monkeypatch):
    storage = get_storage(s3_storage_config)
    uri = f"s3://{s3_bucket}/models/base"
    storage.write_text(f"{uri}/config.json", '{"model_type": "qwen2"}')
    storage.write_bytes(f"{uri}/model.safetensors", b"1" * 32)
    cache = tmp_path / "pvc"
    monkeypatch.setenv(MODEL_CACHE_ENV, str(cache))
    fetch([(uri, str(tmp_path / "pod-a" / "models" / "base"))], s3_storage_config)
    fetch([(uri, str(tmp_path / "pod-b" / "models" / "base"))], s3_storage_config)
    (entry,) = [path for path in cache.iterdir()]
    assert (entry / COMPLETE).exists() and (entry / "model.safetensors").read_bytes() == b"1" * 32
    for pod in ("pod-a", "pod-b"):
        link = tmp_path / pod / "models" / "base"
        assert link.is_symlink() and link.resolve() == entry.resolve()
    storage.write_bytes(f"{uri}/model.safetensors", b"2" * 32)  # new content, new entry
    assert localize(uri, s3_storage_config) != entry and len(list(cache.iterdir())) == 2


@pytest.mark.integration
def test_an_unwritable_cache_without_the_entry_downloads_privately(s3_storage_config, s3_bucket: str, tmp_path: Path, monkeypatch):
    """A trainer's read-only mount: creating anything in it fails (here below a file, as root
    ignores permission bits), so the folder is downloaded for the process instead."""
    storage = get_storage(s3_storage_config)
    uri = f"s3://{s3_bucket}/models/base"
    storage.write_text(f"{uri}/config.json", "{}")
    (tmp_path / "mount").write_text("not a folder")
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "mount" / "pvc"))
    folder = localize(uri, s3_storage_config)
    try:
        assert (folder / "config.json").read_text() == "{}" and tmp_path not in folder.parents
    finally:
        shutil.rmtree(folder.parent)


@pytest.mark.integration
def test_the_inline_train_step_reads_the_base_model_a_server_cached(s3_storage_config, s3_bucket: str, tmp_path: Path, monkeypatch):
    """The env the inline train step gets with the cache mounted (pipelines/tasks.py
    mount_model_cache) makes the trainer read the entry a model server's init container filled:
    the same folder, no copy of its own; a new content is fetched into the cache once."""
    from selflengthen.training.trainer import _localize

    storage = get_storage(s3_storage_config)
    uri = f"s3://{s3_bucket}/models/base"
    storage.write_text(f"{uri}/config.json", '{"model_type": "qwen2"}')
    cache = tmp_path / "pvc"
    monkeypatch.setenv(MODEL_CACHE_ENV, str(cache))
    fetch([(uri, str(tmp_path / "server" / "models" / "base"))], s3_storage_config)
    (entry,) = list(cache.iterdir())
    config = cluster_config(storage=s3_storage_config.model_dump(), execution__training="inline", execution__model_cache_pvc="models")
    assert _localize(uri, config, "base model") == entry and list(cache.iterdir()) == [entry]
    storage.write_text(f"{uri}/config.json", '{"model_type": "llama"}')
    fresh = _localize(uri, config, "base model")
    assert fresh.parent == cache and (fresh / "config.json").read_text() == '{"model_type": "llama"}'


def test_streaming_from_s3_hands_vllm_the_uri_and_fetches_only_the_adapters():
    config = cluster_config(serving__cluster__stream_from_s3=True, execution__model_cache_pvc="models", storage__s3_region="eu-1")
    plan = ServerPlan.for_role(config, "generator", "s3://models/base", "s3://runs/demo/adapter")
    deployment = to_manifest(build_model_server(config, "generator", 1, plan).deployment)
    validate_object(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (fetch_container,), (vllm,) = pod["initContainers"], pod["containers"]
    assert fetch_container["args"] == ["s3://runs/demo/adapter=/models/adapters/gen"]  # the adapter only, under its served name
    args = vllm["args"]
    assert args[:4] == ["--model", "s3://models/base", "--load-format", "runai_streamer"]
    env = {item["name"]: item.get("value", item.get("valueFrom")) for item in vllm["env"]}
    assert env["AWS_ENDPOINT_URL"] == env["RUNAI_STREAMER_S3_ENDPOINT"] == "http://minio.ns1.svc:9000"
    assert env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"] == "0" and env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_DEFAULT_REGION"] == "eu-1" and "HF_HUB_OFFLINE" not in env
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "selflengthen-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    # off (the default): the base is copied and vLLM reads the copy, with no S3 credentials
    pod = to_manifest(build_model_server(cluster_config(), "generator", 1, ServerPlan.for_role(cluster_config(), "generator", "s3://models/base")).deployment)["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:2] == ["--model", "/models/base"] and "--load-format" not in pod["containers"][0]["args"]
    assert not {"AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY"} & {item["name"] for item in pod["containers"][0]["env"]}


def test_streaming_is_refused_on_a_local_run():
    from selflengthen.config import parse_config

    with pytest.raises(ValueError, match="serving.cluster.stream_from_s3: the cluster's vLLM pods stream from S3"):
        parse_config({"run_id": "r", "workdir": "/tmp/runs", "model": {"base": "/tmp/model"}, "serving": {"cluster": {"stream_from_s3": True}}})
