"""`selflengthen run` answers bad input with a clear message, a non-zero exit and no server left."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from selflengthen.cli import app


@pytest.mark.integration
def test_a_missing_base_model_fails_the_prepare_step_with_its_reason(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["run", "--workdir", str(workdir), "--set", f"model.base={tmp_path / 'no-model'}", "--set", "model.build_tiny=false", "--set", "pipeline.retries=0"],
    )
    assert result.exit_code == 2, result.output
    assert "Inner task failed: 'prepare'" in result.output
    assert "is not a Hugging Face model folder" in result.output  # the step's own error, from its output
    assert (workdir / "logs" / "pipeline.log").is_file()
    assert not (workdir / "report.json").exists()


def test_unknown_config_keys_are_refused_before_anything_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workdir", str(tmp_path / "run"), "--set", "pipeline.imagee=x"])
    assert result.exit_code == 2
    assert "pipeline.imagee: unknown key" in result.output
    assert not (tmp_path / "run").exists()
