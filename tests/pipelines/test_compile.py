"""The compiled pipeline: kept up to date in the repository, and shaped as the design says."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines import compile_pipeline
from selflengthen.cli import app
from selflengthen.config import RunConfig, default_config_path, load_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = REPO / "configs" / "cluster-qwen2.5-7b.yaml"
COMPILED = REPO / "pipelines" / "compiled" / "selflengthen-cluster.yaml"
REGENERATE = f"selflengthen compile --config {CLUSTER_CONFIG.relative_to(REPO)} --output {COMPILED.relative_to(REPO)}"
SIDE_EFFECT_STEPS = ("serve", "teardown", "prepare", "report", "identify-run")


def compiled(config: RunConfig, tmp_path: Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform spec) of ``config``'s pipeline."""
    spec, platform = yaml.safe_load_all(compile_pipeline(config, tmp_path / "pipeline.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def dag(spec: dict, component: str) -> dict:
    return spec["components"][component]["dag"]["tasks"]


def executor_tasks(spec: dict):
    """(task name, task) of every container task in every DAG."""
    executors = {name for name, component in spec["components"].items() if "executorLabel" in component}
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    for tasks in (d["tasks"] for d in dags):
        for name, task in tasks.items():
            if task["componentRef"]["name"] in executors:
                yield name, task


def test_the_compiled_cluster_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(load_config(CLUSTER_CONFIG), tmp_path / "fresh.yaml").read_text()
    assert _content(fresh) == _content(COMPILED.read_text()), f"{COMPILED.relative_to(REPO)} is out of date; regenerate it with: {REGENERATE}"


def _content(compiled_yaml: str) -> list[str]:
    """The lines of a compiled pipeline but the kfp version that wrote it (a patch release of the
    SDK changes that line only)."""
    return [line for line in compiled_yaml.splitlines() if not line.startswith("sdkVersion:")]


def test_iterations_are_unrolled_each_feeding_the_next(tmp_path: Path) -> None:
    config = load_config(CLUSTER_CONFIG)
    spec, _ = compiled(config, tmp_path)
    body = dag(spec, "comp-exit-handler-1")
    names = ["iteration", *(f"iteration-{k}" for k in range(2, config.iterations + 1))]
    assert [name for name in body if name.startswith("iteration")] == names
    assert body["iteration"]["inputs"]["parameters"]["generator"]["taskOutputParameter"]["producerTask"] == "prepare"
    for previous, current in zip(names, names[1:]):
        for role in ("generator", "extender"):
            source = body[current]["inputs"]["parameters"][role]["taskOutputParameter"]
            assert source == {"outputParameterKey": role, "producerTask": previous}
    assert body["final"]["inputs"]["parameters"]["generator"]["taskOutputParameter"]["producerTask"] == names[-1]
    assert body["report"]["dependentTasks"] == ["final", "identify-run"]


def serving_tasks(tasks: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(server -> serve task, server -> teardown task) of one DAG."""
    serves, teardowns = {}, {}
    for name, task in tasks.items():
        server = task["inputs"]["parameters"].get("server", {}).get("runtimeValue", {}).get("constant")
        if server is not None:
            (serves if task["componentRef"]["name"].startswith("comp-serve") else teardowns)[server] = name
    return serves, teardowns


def endpoint_of(tasks: dict, step: str) -> str:
    return tasks[step]["inputs"]["parameters"]["endpoint"]["taskOutputParameter"]["producerTask"]


@pytest.mark.parametrize("layout", ["shared", "sequential", "per_role"])
def test_an_iteration_tears_servers_down_before_selecting_and_training(tmp_path: Path, layout: str) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG, {"serving.layout": layout}), tmp_path)
    tasks = dag(spec, "comp-iteration")
    display = {task["taskInfo"]["name"]: name for name, task in tasks.items()}
    serves, teardowns = serving_tasks(tasks)
    users = {server: set(tasks[teardown]["dependentTasks"]) for server, teardown in teardowns.items()}
    if layout == "shared":
        assert set(serves) == set(teardowns) == {"shared"}
        assert users["shared"] == {"self-instruct", "heldout", "evaluate", "generate", "extend"}
    else:
        assert set(serves) == set(teardowns) == {"base", "generator", "extender"}
        assert users == {"base": {"self-instruct"}, "generator": {"heldout", "evaluate", "generate"}, "extender": {"extend"}}
    assert set(teardowns.values()) <= set(tasks["select"]["dependentTasks"])
    assert tasks[display["train generator"]]["dependentTasks"] == ["sft-data"]
    assert tasks[display["train extender"]]["dependentTasks"] == ["sft-data"]


@pytest.mark.parametrize("layout", ["shared", "sequential", "per_role"])
def test_each_layout_serves_the_roles_as_it_says_and_the_stages_use_their_server(tmp_path: Path, layout: str) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG, {"serving.layout": layout, "serving.cluster.replicas": 2}), tmp_path)
    # the serve steps read the layout and the replicas from the compiled-in config
    compiled_config = json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"])
    assert compiled_config["serving"]["layout"] == layout and compiled_config["serving"]["cluster"]["replicas"] == 2
    tasks = dag(spec, "comp-iteration")
    serves, teardowns = serving_tasks(tasks)
    inputs = {server: tasks[serve]["inputs"]["parameters"] for server, serve in serves.items()}
    served = {
        server: {role: params[role] for role in ("base", "generator", "extender") if params[role] != {"runtimeValue": {"constant": ""}}}
        for server, params in inputs.items()
    }
    server_of = {"self-instruct": "base", "heldout": "generator", "evaluate": "generator", "generate": "generator", "extend": "extender"}
    if layout == "shared":
        # one server loads the base model and both roles' models; every stage talks to it
        assert served == {"shared": {role: {"componentInputParameter": role} for role in ("base", "generator", "extender")}}
        server_of = dict.fromkeys(server_of, "shared")
    else:
        # a role's server gets its model and the base model's URI (to know whether they are the same)
        assert served == {role: {name: {"componentInputParameter": name} for name in {"base", role}} for role in ("base", "generator", "extender")}
    for step, server in server_of.items():
        assert endpoint_of(tasks, step) == serves[server], step
    waits = {server: set(tasks[serve].get("dependentTasks", [])) for server, serve in serves.items()}
    if layout == "sequential":  # the next server starts once the previous one is down
        assert waits == {"base": set(), "generator": {teardowns["base"]}, "extender": {teardowns["generator"]}}
    else:
        assert all(not wait for wait in waits.values())


def test_with_the_generator_proposing_no_base_model_is_served(tmp_path: Path) -> None:
    config = load_config(CLUSTER_CONFIG, {"serving.layout": "sequential", "self_instruct.model": "generator"})
    spec, _ = compiled(config, tmp_path)
    for component in ("comp-iteration", "comp-final"):
        tasks = dag(spec, component)
        serves, _ = serving_tasks(tasks)
        server = tasks[endpoint_of(tasks, "self-instruct")]["inputs"]["parameters"]["server"]["runtimeValue"]["constant"]
        assert "base" not in serves and server == "generator"


@pytest.mark.parametrize("layout", ["shared", "sequential", "per_role"])
def test_the_final_phase_serves_by_layout_and_the_final_model_alone_afterwards(tmp_path: Path, layout: str) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG, {"serving.layout": layout}), tmp_path)
    tasks = dag(spec, "comp-final")
    serves = [task for task in tasks.values() if task["componentRef"]["name"].startswith("comp-serve")]
    servers = [task["inputs"]["parameters"]["server"]["runtimeValue"]["constant"] for task in serves]
    expected = {"shared": ["shared", "shared"], "sequential": ["base", "generator", "generator"], "per_role": ["base", "generator", "generator"]}
    assert sorted(servers) == sorted(expected[layout])
    final_serve = next(name for name, task in tasks.items() if task["taskInfo"]["name"] == "serve final model")
    assert tasks[final_serve]["inputs"]["parameters"]["generator"]["taskOutputParameter"]["producerTask"] == "train"


def test_teardown_of_every_server_is_the_exit_handler(tmp_path: Path) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG), tmp_path)
    exit_task = spec["root"]["dag"]["tasks"]["teardown-run"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    assert "taskFinalStatus" in exit_task["inputs"]["parameters"]["status"]


def test_every_task_retries_and_caches_unless_it_has_side_effects(tmp_path: Path) -> None:
    config = load_config(CLUSTER_CONFIG)
    spec, _ = compiled(config, tmp_path)
    tasks = list(executor_tasks(spec))
    assert len(tasks) > 12 * config.iterations
    for name, task in tasks:
        assert task["retryPolicy"]["maxRetryCount"] == config.pipeline.retries, name
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        assert cached == (not name.startswith(SIDE_EFFECT_STEPS)), name


def test_images_secrets_and_security_context_come_from_the_config(tmp_path: Path) -> None:
    config = load_config(CLUSTER_CONFIG, {"pipeline.image": "registry.example/runtime@sha256:" + "a" * 64, "pipeline.api_key_secret": "keys"})
    spec, executors = compiled(config, tmp_path)
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
    assert images == {config.pipeline.image}
    for name, settings in executors.items():
        assert settings["securityContext"] == {"runAsNonRoot": True}, name
        storage = settings["secretAsEnv"][0]
        assert storage["secretName"] == config.pipeline.storage_secret
        assert {e["envVar"] for e in storage["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    generation = [name for name in executors if name.startswith(("exec-generate", "exec-extend", "exec-self-instruct"))]
    assert generation and all(executors[name]["secretAsEnv"][-1]["secretName"] == "keys" for name in generation)
    assert "secretAsEnv" not in executors["exec-select"] or len(executors["exec-select"]["secretAsEnv"]) == 1


def test_the_pipeline_root_comes_from_the_config(tmp_path: Path) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG, {"pipeline.pipeline_root": "s3://artifacts/kfp"}), tmp_path)
    assert spec["defaultPipelineRoot"] == "s3://artifacts/kfp"
    spec, _ = compiled(load_config(CLUSTER_CONFIG, {"pipeline.pipeline_root": None}), tmp_path)
    assert "defaultPipelineRoot" not in spec


def test_inline_training_runs_in_the_trainer_image_with_its_gpus_trainjobs_do_not(tmp_path: Path) -> None:
    placement = {
        "execution.training": "inline",
        "trainjob.gpus_per_node": 2,
        "trainjob.node_selector": {"pool": "gpu"},
        "trainjob.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
    }
    config = load_config(CLUSTER_CONFIG, placement)
    spec, executors = compiled(config, tmp_path)
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == config.trainjob.image
    accelerator = train["resources"]["accelerator"]
    assert (accelerator["resourceCount"], accelerator["resourceType"]) == ("2", "nvidia.com/gpu")
    assert executors["exec-train"]["nodeSelector"] == {"labels": {"pool": "gpu"}}
    assert executors["exec-train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": "30"}
    ], "tolerationSeconds is kept (add_toleration_json would drop the camelCase key)"
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-generate"]["container"]["resources"]

    spec, executors = compiled(load_config(CLUSTER_CONFIG), tmp_path)
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == config.pipeline.image and "accelerator" not in train["resources"]
    assert "nodeSelector" not in executors["exec-train"]


@pytest.mark.parametrize(
    ("overrides", "mounted"),
    [
        ({"execution.training": "inline", "execution.model_cache_pvc": "models"}, True),  # multi-user: the runs' namespace is pipeline.namespace
        ({"execution.training": "inline", "execution.model_cache_pvc": "models", "pipeline.run_namespace": "selflengthen"}, True),
        ({"execution.training": "inline", "execution.model_cache_pvc": "models", "pipeline.run_namespace": "kubeflow"}, False),  # standalone KFP
        ({"execution.training": "inline"}, False),  # no cache
        ({"execution.training": "trainjob", "execution.model_cache_pvc": "models"}, False),  # the TrainJob mounts it
    ],
)
def test_the_inline_train_step_mounts_the_model_cache_where_its_pod_can(tmp_path: Path, overrides: dict, mounted: bool) -> None:
    from selflengthen.cluster.objects import MODEL_CACHE_DIR
    from selflengthen.modelio import MODEL_CACHE_ENV

    spec, executors = compiled(load_config(CLUSTER_CONFIG, overrides), tmp_path)
    containers = {name: executor["container"] for name, executor in spec["deploymentSpec"]["executors"].items() if "container" in executor}
    trains = [name for name in containers if name == "exec-train" or name.startswith("exec-train-")]
    assert len(trains) >= 2  # one per iteration and role
    for name, container in containers.items():
        env = container.get("env", [])
        if mounted and name in trains:
            (mount,) = executors[name]["pvcMount"]
            assert (mount["mountPath"], mount["pvcNameParameter"]["runtimeValue"]["constant"]) == (MODEL_CACHE_DIR, "models")
            assert {"name": MODEL_CACHE_ENV, "value": MODEL_CACHE_DIR} in env
        else:
            assert "pvcMount" not in executors.get(name, {}) and all(variable["name"] != MODEL_CACHE_ENV for variable in env), name


def test_the_inline_train_step_starts_torchrun_with_one_process_per_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from selflengthen.orchestration import training
    from selflengthen.training.launch import TrainingRequest

    commands = []
    monkeypatch.setattr(training.subprocess, "run", lambda command, check: commands.append(command) or subprocess.CompletedProcess(command, 0))
    config = load_config(CLUSTER_CONFIG, {"execution.training": "inline", "trainjob.gpus_per_node": 4})
    request = TrainingRequest(role="generator", data_uri="s3://b/d", base_model_uri="s3://b/m", output_uri="s3://b/o")
    training.train_under_torchrun(config, request, nproc_per_node=config.trainjob.gpus_per_node)
    (command,) = commands
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert command[command.index("--role"):command.index("--config")] == request.arguments(config_path=None)


def test_every_step_takes_the_run_id_from_the_uncached_identify_step(tmp_path: Path) -> None:
    spec, _ = compiled(load_config(CLUSTER_CONFIG), tmp_path)
    assert spec["root"]["inputDefinitions"]["parameters"]["run_id"]["defaultValue"] == ""
    body = dag(spec, "comp-exit-handler-1")
    identify = body["identify-run"]["inputs"]["parameters"]
    # the whole value, so the backend resolves it (kubeflow/pipelines backend/src/v2/driver/resolve.go)
    assert identify["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert identify["explicit_run_id"]["componentInputParameter"] == "pipelinechannel--run_id"
    assert body["identify-run"]["cachingOptions"] == {}
    for name in ("prepare", "report", "iteration", "final"):
        assert body[name]["inputs"]["parameters"]["run_id"]["taskOutputParameter"]["producerTask"] == "identify-run", name
    for sub_pipeline in ("comp-iteration", "comp-final"):  # inside, every task takes the sub-pipeline's run_id input
        for name, task in dag(spec, sub_pipeline).items():
            assert task["inputs"]["parameters"]["run_id"] == {"componentInputParameter": "run_id"}, name
    exit_inputs = spec["root"]["dag"]["tasks"]["teardown-run"]["inputs"]["parameters"]
    assert exit_inputs["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert exit_inputs["explicit_run_id"]["componentInputParameter"] == "run_id"


@pytest.mark.parametrize("scratch", [{}, {"execution.steps.scratch": "40Gi", "execution.train_step.scratch": "300Gi"}])
def test_steps_that_create_cluster_objects_know_their_pod_and_every_step_has_resources(tmp_path: Path, scratch: dict) -> None:
    config = load_config(CLUSTER_CONFIG, scratch)
    spec, executors = compiled(config, tmp_path)
    fields = {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
    creators = [name for name in executors if name.startswith(("exec-serve", "exec-train", "exec-teardown-run"))]
    assert len(creators) >= 3
    for name in creators:
        assert {item["name"]: item["fieldPath"] for item in executors[name]["fieldPathAsEnv"]} == fields, name
    for name, executor in spec["deploymentSpec"]["executors"].items():
        resources = executor["container"]["resources"]
        expected = config.execution.train_step if name.startswith("exec-train") else config.execution.steps
        assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == (expected.cpu, expected.memory), name
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (expected.cpu, expected.memory), name
        # the scratch emptyDir is the step's TMPDIR (finalize's spill, model downloads), sized by the config
        (mount,) = executors[name]["emptyDirMounts"]
        assert mount == {"volumeName": "scratch", "mountPath": "/scratch", **({"sizeLimit": expected.scratch} if expected.scratch else {})}, name
        assert {"name": "TMPDIR", "value": "/scratch"} in executor["container"]["env"], name


@pytest.mark.parametrize("overrides", [{"eval.enabled": False, "length_control.extra_queries": 0}, {"eval.per_iteration": False}])
def test_optional_steps_follow_the_config(tmp_path: Path, overrides: dict) -> None:
    config = load_config(CLUSTER_CONFIG, overrides)
    spec, _ = compiled(config, tmp_path)
    names = [task["componentRef"]["name"] for _, task in executor_tasks(spec)]
    evaluations = sum(name.startswith("comp-evaluate") for name in names)
    assert evaluations == (1 if config.eval.enabled else 0)
    final = [task["componentRef"]["name"] for task in dag(spec, "comp-final").values()]
    assert any(name.startswith("comp-generate") for name in final) == bool(config.length_control.extra_queries)


# the GPU examples in configs/ and the local default, packaged
EXAMPLE_CONFIGS = [*sorted((REPO / "configs").glob("*.yaml")), default_config_path()]


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda path: path.name)
def test_the_cli_compiles_every_example_config(tmp_path: Path, path: Path) -> None:
    output = tmp_path / "out" / "pipeline.yaml"
    result = CliRunner().invoke(app, ["compile", "--config", str(path), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text().startswith("# PIPELINE DEFINITION")


def test_export_step_follows_the_report_with_the_hub_token_secret(tmp_path: Path) -> None:
    plain, _ = compiled(load_config(CLUSTER_CONFIG), tmp_path)
    assert "export" not in dag(plain, "comp-exit-handler-1")
    config = load_config(CLUSTER_CONFIG, {"export.enabled": True, "export.hub_repo": "me/long", "serving.cluster.hf_token_secret": "hf"})
    spec, executors = compiled(config, tmp_path)
    export = dag(spec, "comp-exit-handler-1")["export"]
    assert export["dependentTasks"] == ["identify-run", "report"] and export["cachingOptions"] == {}
    secrets = {item["secretName"]: item["keyToEnv"] for item in executors["exec-export"]["secretAsEnv"]}
    assert secrets["hf"] == [{"envVar": "HF_TOKEN", "secretKey": "HF_TOKEN"}]


def test_the_prepare_step_of_a_hub_base_model_gets_the_hub_token_secret(tmp_path: Path) -> None:
    def prepare_secrets(overrides: dict) -> dict:
        _, executors = compiled(load_config(CLUSTER_CONFIG, {"serving.cluster.hf_token_secret": "hf", **overrides}), tmp_path)
        return {item["secretName"]: item["keyToEnv"] for item in executors["exec-prepare"].get("secretAsEnv", [])}

    assert prepare_secrets({"model.base": "hf://meta-llama/Llama-3.1-8B-Instruct"})["hf"] == [{"envVar": "HF_TOKEN", "secretKey": "HF_TOKEN"}]
    assert "hf" not in prepare_secrets({})  # an s3:// base: prepare reads nothing from the Hub


def test_every_data_input_is_an_edge_and_serve_steps_output_url_and_model(tmp_path: Path) -> None:
    config = load_config(CLUSTER_CONFIG)
    spec, _ = compiled(config, tmp_path)
    body = dag(spec, "comp-exit-handler-1")
    names = ["iteration", *(f"iteration-{k}" for k in range(2, config.iterations + 1))]
    assert body["iteration"]["inputs"]["parameters"]["run_data"]["runtimeValue"]["constant"] == ""
    for previous, current in zip(names, names[1:]):
        source = body[current]["inputs"]["parameters"]["run_data"]["taskOutputParameter"]
        assert source == {"outputParameterKey": "run_data", "producerTask": previous}
    assert body["final"]["inputs"]["parameters"]["run_data"]["taskOutputParameter"]["producerTask"] == names[-1]
    iteration = dag(spec, "comp-iteration")
    sft = iteration["sft-data"]["inputs"]["parameters"]
    assert sft["run_data"] == {"componentInputParameter": "run_data"}
    assert {sft[name]["taskOutputParameter"]["producerTask"] for name in ("selected", "initial", "extended")} == {"select", "generate", "extend"}
    outputs = spec["components"]["comp-iteration"]["dag"]["outputs"]["parameters"]["run_data"]["valueFromParameter"]
    assert outputs == {"outputParameterKey": "run_data", "producerSubtask": "sft-data"}
    length_control = dag(spec, "comp-final")["length-control"]["inputs"]["parameters"]
    assert length_control["run_data"] == {"componentInputParameter": "run_data"}
    serve = spec["components"]["comp-serve"]["outputDefinitions"]["parameters"]
    assert set(serve) == {"record", "url", "model"}
    assert iteration["generate"]["inputs"]["parameters"]["endpoint"]["taskOutputParameter"]["outputParameterKey"] == "record"
