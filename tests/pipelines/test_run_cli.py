"""`selflengthen run` answers bad input with a clear message, a non-zero exit and no server left."""

import re
from pathlib import Path

from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.orchestration.local import _failure_message


def test_a_missing_base_model_is_refused_before_any_step(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "--workdir", str(workdir), "--set", f"model.base={tmp_path / 'no-model'}", "--set", "model.build_tiny=false"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0].startswith(f"error: base model {tmp_path / 'no-model'} is not a Hugging Face model folder")
    assert "Inner task failed" not in result.output  # no step ran, none was retried
    assert not workdir.exists()


def test_a_failed_step_reports_its_cause_first() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "steps.py", line 141, in prepare',
        "selflengthen.errors.TrainingError: base model /m: model.safetensors is not a readable safetensors file",
        "Task 'prepare' finished with status FAILURE",
    ]
    message = _failure_message(RuntimeError("Pipeline 'selflengthen' finished with status FAILURE. Inner task failed: 'prepare'."),
                               {"prepare": lines}, Path("/w/logs/pipeline.log"))  # fmt: skip
    first, second, *_ = message.splitlines()
    assert first == "step prepare failed: base model /m: model.safetensors is not a readable safetensors file"
    assert second.startswith("Pipeline 'selflengthen' finished with status FAILURE")
    assert message.endswith("the whole output: /w/logs/pipeline.log")


def test_unknown_config_keys_are_refused_before_anything_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workdir", str(tmp_path / "run"), "--set", "pipeline.imagee=x"])
    assert result.exit_code == 2
    assert "pipeline.imagee: unknown key" in result.output
    assert not (tmp_path / "run").exists()


def test_a_step_that_fails_deterministically_is_not_retried(tmp_path: Path, monkeypatch) -> None:
    """The prepare step meets a missing base model (the up-front check is switched off to reach it):
    the run stops at that step's first attempt with the cause first, although pipeline.retries is 2."""
    monkeypatch.setattr("selflengthen.orchestration.local.check_run_inputs", lambda config: None)
    workdir, missing = tmp_path / "run", tmp_path / "no-model"
    result = CliRunner().invoke(
        app, ["run", "--workdir", str(workdir), "--set", f"model.base={missing}", "--set", "model.build_tiny=false"]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("error"))  # after the run's start line
    assert lines[first].startswith(f"error: step prepare failed: base model {missing} is not a Hugging Face model folder")
    assert lines[first + 1].startswith("(not retried")
    assert "Inner task failed" not in result.output
    log = re.sub(r"\x1b\[[0-9;]*m", "", (workdir / "logs" / "pipeline.log").read_text())
    assert log.count("Executing task 'prepare'") == 1 and "Retrying in" not in log
