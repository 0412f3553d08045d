"""`selflengthen submit` against a stand-in KFP API that records the calls (tests/fixtures/kfp_api.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selflengthen.cli import app
from tests.fixtures.kfp_api import KfpServer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "cluster-qwen2.5-7b.yaml"
COMPILED = ROOT / "pipelines" / "compiled" / "selflengthen-cluster.yaml"
RUNNER = CliRunner()


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own: the test sees that submit leaves nothing there (no kfp context, no token)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def submit(server: KfpServer, *arguments: str, env: dict[str, str] | None = None):
    return RUNNER.invoke(
        app, ["submit", "--config", str(CONFIG), "--pipeline", str(COMPILED), "--host", server.url, "--poll", "0", *arguments], env=env
    )


def test_submit_uploads_a_version_and_runs_it_with_account_namespace_and_parameters(kfp_server: KfpServer, _home: Path):
    kfp_server.state.multi_user = True
    result = submit(
        kfp_server, "--namespace", "team-a", "--experiment", "lengthen", "--run-name", "first", "--run-id", "",
        "--service-account", "default-editor", "--token-env", "KFP_TOKEN", "--version-name", "v1",
        env={"KFP_TOKEN": "secret-token-value"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert kfp_server.paths() == [
        ("GET", "/apis/v2beta1/healthz"),  # kfp.Client's constructor: is it multi-user?
        ("GET", "/apis/v2beta1/healthz"),  # submit: mode and release
        ("GET", "/apis/v2beta1/pipelines"),
        ("POST", "/apis/v2beta1/pipelines"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),
        ("POST", "/apis/v2beta1/pipelines/upload_version"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    listing, create, _, upload, _, new_experiment, run = kfp_server.calls[2:]
    assert listing.query["namespace"] == "team-a"
    assert create.body == {"display_name": "selflengthen", "namespace": "team-a"}
    assert upload.query == {"name": "v1", "pipelineid": "p-1"}  # the first version carries the name asked for
    assert upload.body["uploadfile"] == COMPILED.read_bytes()
    assert [version["display_name"] for version in kfp_server.state.versions["p-1"]] == ["v1"]
    assert "pipeline p-1 version v1 (p-1-v1)" in result.output
    assert new_experiment.body == {"display_name": "lengthen", "namespace": "team-a"}
    assert run.body["service_account"] == "default-editor" and run.body["display_name"] == "first"
    assert run.body["experiment_id"] == "e-1"
    assert run.body["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "p-1-v1"}
    parameters = run.body["runtime_config"]["parameters"]
    assert parameters["run_id"] == "" and json.loads(parameters["config_json"])["pipeline"]["namespace"] == "selflengthen"
    assert all(call.headers.get("authorization") == "Bearer secret-token-value" for call in kfp_server.calls)
    run_id = kfp_server.state.runs and next(iter(kfp_server.state.runs))
    assert f"run URL: {kfp_server.url}/#/runs/details/{run_id}" in result.output
    assert "secret-token-value" not in result.output
    assert not [path for path in _home.rglob("*") if path.is_file()], "submit wrote a file below HOME"


def test_a_second_submit_adds_a_version_to_the_pipeline_and_reuses_the_experiment(kfp_server: KfpServer):
    assert submit(kfp_server, "--version-name", "one").exit_code == 0
    result = submit(kfp_server, "--version-name", "two", "--run-id", "resume-me")
    assert result.exit_code == 0, result.output
    assert [(call.method, call.path) for call in kfp_server.calls[-7:]] == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/pipelines"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),
        ("POST", "/apis/v2beta1/pipelines/upload_version"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    upload, run = kfp_server.calls[-3], kfp_server.calls[-1]
    assert upload.query == {"name": "two", "pipelineid": "p-1"}  # standalone KFP: no namespace
    assert run.body["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "p-1-v2"}
    assert run.body["experiment_id"] == "e-1" and run.body["service_account"] == "selflengthen-runner"
    assert run.body["runtime_config"]["parameters"]["run_id"] == "resume-me"


def test_wait_follows_the_run_and_exits_zero_when_it_succeeds(kfp_server: KfpServer):
    kfp_server.state.run_states = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    result = submit(kfp_server, "--wait")
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("run state")] == [
        "run state: PENDING", "run state: RUNNING", "run state: SUCCEEDED"
    ]
    assert kfp_server.paths().count(("GET", f"/apis/v2beta1/runs/{next(iter(kfp_server.state.runs))}")) == 4


def test_wait_exits_non_zero_with_the_backend_error_when_the_run_fails(kfp_server: KfpServer):
    kfp_server.state.run_states = ["RUNNING", "FAILED"]
    kfp_server.state.run_error = "task serve-generator failed: model server cannot start"
    result = submit(kfp_server, "--wait")
    assert result.exit_code == 1
    assert "ended FAILED: task serve-generator failed: model server cannot start" in result.output
    assert "/#/runs/details/" in result.output


def test_a_refused_upload_names_the_step_and_the_server_message(kfp_server: KfpServer):
    kfp_server.state.refuse[("POST", "/apis/v2beta1/pipelines")] = (403, "user may not create pipelines in namespace kubeflow")
    result = submit(kfp_server)
    assert result.exit_code == 2
    assert "creating pipeline 'selflengthen'" in result.output and "HTTP 403" in result.output
    assert "user may not create pipelines in namespace kubeflow" in result.output
    assert ("POST", "/apis/v2beta1/runs") not in kfp_server.paths()


def test_submit_refuses_a_compiled_file_of_another_config_and_a_local_config(kfp_server: KfpServer, tmp_path: Path):
    result = submit(kfp_server, "--set", "iterations=2")
    assert result.exit_code == 2 and "compiled from another config" in result.output
    local = RUNNER.invoke(app, ["submit", "--host", kfp_server.url])
    assert local.exit_code == 2 and "execution.target is local" in local.output
    assert kfp_server.calls == []


def test_an_unset_token_variable_is_refused_before_any_call(kfp_server: KfpServer):
    result = submit(kfp_server, "--token-env", "NO_SUCH_TOKEN_VAR")
    assert result.exit_code == 2 and "NO_SUCH_TOKEN_VAR" in result.output
    assert kfp_server.calls == []


def test_in_a_pod_the_projected_kfp_token_is_sent(kfp_server: KfpServer, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("projected-sa-token")
    result = submit(kfp_server, env={"KF_PIPELINES_SA_TOKEN_PATH": str(token)})
    assert result.exit_code == 0, result.output
    assert {call.headers.get("authorization") for call in kfp_server.calls} == {"Bearer projected-sa-token"}


def test_register_uploads_a_version_once_per_content(kfp_server: KfpServer, tmp_path: Path):
    kfp_server.state.pipelines["p-1"] = {"pipeline_id": "p-1", "display_name": "selflengthen", "namespace": "", "created_at": "2026-11-29T00:00:00Z"}
    kfp_server.state.versions["p-1"] = []
    for _ in range(2):
        result = RUNNER.invoke(app, ["register", "--pipeline", str(COMPILED), "--host", kfp_server.url])
        assert result.exit_code == 0, result.output
    uploads = [call for call in kfp_server.calls if call.path == "/apis/v2beta1/pipelines/upload_version"]
    assert len(uploads) == 1 and uploads[0].query["name"].startswith("sha256-")
    assert uploads[0].body["uploadfile"] == COMPILED.read_bytes()
    assert "pipeline selflengthen (p-1) version sha256-" in result.output
    changed = tmp_path / "pipeline.yaml"
    changed.write_text(COMPILED.read_text() + "\n# changed\n")
    assert RUNNER.invoke(app, ["register", "--pipeline", str(changed), "--host", kfp_server.url]).exit_code == 0
    assert len(kfp_server.state.versions["p-1"]) == 2


def test_register_on_a_new_pipeline_names_its_first_version_after_the_content_and_uploads_it_once(kfp_server: KfpServer):
    for _ in range(2):
        result = RUNNER.invoke(app, ["register", "--pipeline", str(COMPILED), "--host", kfp_server.url])
        assert result.exit_code == 0, result.output
    assert kfp_server.paths().count(("POST", "/apis/v2beta1/pipelines")) == 1
    assert kfp_server.paths().count(("POST", "/apis/v2beta1/pipelines/upload_version")) == 1
    (version,) = kfp_server.state.versions["p-1"]
    assert version["display_name"].startswith("sha256-")
    assert f"version {version['display_name']} ({version['pipeline_version_id']})" in result.output


def test_submit_prints_the_version_it_created_under_its_default_name(kfp_server: KfpServer):
    result = submit(kfp_server)
    assert result.exit_code == 0, result.output
    (version,) = kfp_server.state.versions["p-1"]
    assert re.fullmatch(r"\d{8}-\d{6}-sha256-[0-9a-f]{12}", version["display_name"])
    assert f"pipeline p-1 version {version['display_name']} ({version['pipeline_version_id']})" in result.output
