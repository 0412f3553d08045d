"""What a command loads: `--help` and a stage that neither trains nor tokenizes load neither torch
nor transformers (each costs seconds and hundreds of MB before anything happens).

Each command runs in a fresh interpreter, the way a user or a KFP task starts it; the modules it
loaded are read from that process's ``sys.modules`` as it exits.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

from selflengthen.datasets import read_manifest
from selflengthen.config import parse_config
from selflengthen.evaluation.benchmarks import RubricName
from selflengthen.evaluation.judge import RUBRICS
from selflengthen.storage import get_storage
from tests.stages.helpers import essay, response

REPO = Path(__file__).resolve().parents[2]
MODEL_LIBRARIES = ("torch", "transformers")
# Runs the command as `python -m selflengthen ...` does and writes the loaded modules when the process exits.
RECORDER = """
import atexit, json, runpy, sys
modules_file, *arguments = sys.argv[1:]
atexit.register(lambda: open(modules_file, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["selflengthen", *arguments]
runpy.run_module("selflengthen", run_name="__main__")
"""


def run_command(tmp_path: Path, *arguments: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `selflengthen ARGUMENTS` in a new interpreter; its result and the top-level packages it loaded."""
    modules_file = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, str(modules_file), *arguments], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    loaded = {name.partition(".")[0] for name in json.loads(modules_file.read_text())}
    return result, loaded


def test_help_loads_no_model_library(tmp_path):
    result, loaded = run_command(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout and "tiny-model" in result.stdout
    assert loaded.isdisjoint(MODEL_LIBRARIES), loaded & set(MODEL_LIBRARIES)
    assert "openai" not in loaded  # no command's HTTP client either


def test_select_stage_loads_no_model_library(tmp_path):
    responses = [response(essay(20 + i, seed=i), index=i) for i in range(20)]
    (tmp_path / "extended.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in responses))
    result, loaded = run_command(tmp_path, "select", "-i", str(tmp_path / "extended.jsonl"), "-o", str(tmp_path / "selected"))
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(get_storage(parse_config({"model": {"base": "unused"}}).storage), str(tmp_path / "selected"))
    assert manifest.count == json.loads(result.stdout)["records"] > 0
    assert loaded.isdisjoint(MODEL_LIBRARIES), loaded & set(MODEL_LIBRARIES)


def test_command_line_rubrics_are_the_judges():
    assert set(get_args(RubricName)) == set(RUBRICS)
