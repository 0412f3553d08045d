"""Run identity: each Kubeflow run gets its own id (KFP's run id) unless one is given; every prefix,
object name and label derives from it, and a given id again resumes that run."""

import json

import pytest

from selflengthen.cluster.objects import object_labels, object_name
from selflengthen.config import ConfigError
from selflengthen.orchestration import steps
from selflengthen.orchestration.layout import RunLayout
from tests.orchestration.helpers import run_config

# KFP run ids are UUIDs (backend/src/v2/compiler/argocompiler/argo.go: --run_id, the KFP run's id)
FIRST = "3f2c1a9e-8d4b-4c57-9a1e-6b0d2f7c5e11"
SECOND = "b71e0c42-5a9d-4f3e-8c26-0d9a4e1f7b38"


def identify(config_json: str, explicit: str, kfp: str) -> str:
    return steps.identify_run(config_json, explicit_run_id=explicit, kfp_run_id=kfp)


def test_two_runs_of_one_compiled_pipeline_share_nothing(tmp_path) -> None:
    config_json = run_config(str(tmp_path / "runs")).to_json()  # the same compiled config for both runs
    first, second = identify(config_json, "", FIRST), identify(config_json, "", SECOND)
    assert (first, second) == (FIRST, SECOND)
    configs = [run_config(str(tmp_path / "runs"), run_id=run_id) for run_id in (first, second)]
    roots = {RunLayout(config).root for config in configs}
    names = {object_name(config.run_id, "generator", 1) for config in configs}
    labels = {object_labels(config.run_id, "generator", 1, name="n", app="vllm", component="model-server")["selflengthen.io/run-id"] for config in configs}
    assert len(roots) == len(names) == len(labels) == 2
    assert all(len(name) <= 63 for name in names)


def test_an_explicit_run_id_resumes_that_run(tmp_path) -> None:
    config_json = run_config(str(tmp_path / "runs")).to_json()
    assert identify(config_json, "my-run", FIRST) == identify(config_json, "my-run", SECOND) == "my-run"


def test_steps_work_under_the_run_id_they_are_given(tmp_path) -> None:
    config_json = run_config(str(tmp_path / "runs")).to_json()
    assert json.loads(config_json)["run_id"] == "unit"
    layout = RunLayout(run_config(str(tmp_path / "runs"), run_id=FIRST))
    get = steps.step("probe")(lambda config: steps.StepResult(RunLayout(config).root, "ok"))
    assert get(config_json, run_id=FIRST) == layout.root


@pytest.mark.parametrize(
    ("explicit", "kfp", "message"),
    [
        ("", "{{$.pipeline_job_uuid}}", "KFP backend did not fill the run placeholder"),
        ("", "", "no run id"),
        ("Not_A_Label", FIRST, "run_id"),
    ],
)
def test_a_run_without_a_usable_id_is_refused(tmp_path, explicit, kfp, message) -> None:
    with pytest.raises(ConfigError, match=message):
        identify(run_config(str(tmp_path / "runs")).to_json(), explicit, kfp)
