"""Evaluation end to end against a real OpenAI-compatible server serving the tiny model, which is
both the writer and the judge (as a judge it mostly fails to answer in JSON: those prompts must be
counted as unscored, never scored by default)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.config import default_config_path, load_config
from selflengthen.evaluation import evaluate
from selflengthen.evaluation.benchmarks import packaged_benchmark

pytestmark = pytest.mark.integration

# the benchmark copies that ship with the package, found the way the evaluation finds its defaults
BENCHMARKS = Path(packaged_benchmark("longen")).parent
SMALL = ["--set", "eval.sampling.max_tokens=48", "--set", "eval.judge_sampling.max_tokens=48", "--set", "eval.judge_retries=1"]
runner = CliRunner()


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_generate_length_and_quality_with_the_tiny_model(model_server, tmp_path):
    predictions = str(tmp_path / "predictions")
    generate = runner.invoke(
        app,
        ["eval", "generate", "-b", "longen", "-f", str(BENCHMARKS / "longen.jsonl"), "-e", model_server.base_url,
         "-m", model_server.model, "-o", predictions, "--max-prompts", "3", *SMALL],
    )  # fmt: skip
    assert generate.exit_code == 0, generate.output
    assert last_json(generate.stdout)["predictions"] == 3

    length = runner.invoke(app, ["eval", "length", "-b", "longen", "-p", predictions, "--json"])
    assert length.exit_code == 0, length.output
    summary = last_json(length.stdout)
    assert summary["count"] == 3 and 0 <= summary["overall"] <= 100
    assert set(summary) == {"overall", "count", "by_type", "by_language", "by_range"}

    verdicts = tmp_path / "verdicts.jsonl"
    quality = runner.invoke(
        app,
        ["eval", "quality", "-p", predictions, "--judge-endpoint", model_server.base_url, "--judge-model",
         model_server.model, "--rubric", "self-lengthen", "--json", "--output", str(verdicts), *SMALL,
         "--set", "eval.min_scored_fraction=0"],
    )  # fmt: skip
    assert quality.exit_code == 0, quality.output
    summary = last_json(quality.stdout)
    assert summary["count"] == 3 and summary["scored"] + summary["unscored"] == 3
    assert sum(summary["unscored_reasons"].values()) == summary["unscored"]
    if summary["unscored"]:
        assert f"warning: the judge scored {summary['scored']} of 3 prompts" in quality.stderr
    if not summary["scored"]:
        assert summary["overall"] is None
    for line in verdicts.read_text().splitlines():
        verdict = json.loads(line)
        assert ("scores" in verdict) != ("reason" in verdict)


def test_the_evaluate_step_with_the_tiny_model(endpoint_config, tmp_path):
    config = load_config(
        default_config_path(),
        {
            "workdir": str(tmp_path / "run"),
            "eval.benchmarks": ["longen", "longbench-write"],
            "eval.benchmark_files": {
                "longen": str(BENCHMARKS / "longen.jsonl"),
                "longbench-write": str(BENCHMARKS / "longbench_write_en.jsonl"),
            },
            "eval.max_prompts": 2,
            "eval.sampling.max_tokens": 32,
            "eval.quality_rubric": "longbench-write",
            "eval.judge_retries": 1,
            "eval.judge_sampling.max_tokens": 32,
            "serving.judge": endpoint_config.model_dump(),
        },
    )
    output = tmp_path / "eval"

    results = evaluate(config, endpoint=endpoint_config, output=str(output), iteration=1)

    assert set(results) == {"longen", "longbench-write"}
    assert results["longen"]["count"] == 2 and 0 <= results["longen"]["overall"] <= 100
    assert results["longbench-write"]["count"] == 2 and "by_bucket" in results["longbench-write"]
    for benchmark in results:
        quality = results[benchmark]["quality"]
        assert quality["rubric"] == "longbench-write" and quality["scored"] + quality["unscored"] == 2
        assert len((output / benchmark / "length.jsonl").read_text().splitlines()) == 2
        assert len((output / benchmark / "quality.jsonl").read_text().splitlines()) == 2
        assert (output / benchmark / "predictions" / "manifest.json").exists()
    assert "S_l" in results["longbench-write"]["quality"] and "S_l" not in results["longen"]["quality"]
    written = json.loads((output / "summary.json").read_text())
    assert written == json.loads(json.dumps({"iteration": 1, "benchmarks": results}))
