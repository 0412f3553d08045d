"""Steps as plain functions: config JSON in, outputs at the layout's places, metrics, progress, timings."""

import json
from pathlib import Path

import pytest

from selflengthen.config import ConfigError
from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import read_manifest, read_records, write_records
from selflengthen.errors import TrainingError
from selflengthen.orchestration import steps
from selflengthen.orchestration.layout import RunData, RunLayout
from selflengthen.orchestration.serving import LOCAL_DIR_ENV
from selflengthen.records import SftExample
from selflengthen.storage import get_storage
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay, response


class MetricsArtifact:
    """What a KFP Metrics output offers a step: log_metric and a path."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.logged: dict[str, float] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.logged[name] = value


def test_flatten_keeps_numeric_leaves_only() -> None:
    nested = {"count": 3, "lengths": {"mean": 1.5, "max": 4}, "reasons": {"a": 1}, "name": "x", "ok": True, "none": None}
    assert steps.flatten_metrics(nested) == {"count": 3, "lengths_mean": 1.5, "lengths_max": 4, "reasons_a": 1}


def test_log_metrics_logs_and_writes_the_artifact_file(tmp_path) -> None:
    artifact = MetricsArtifact(tmp_path / "sub" / "metrics")
    steps.log_metrics(artifact, {"a": {"b": 2}})
    assert artifact.logged == {"a_b": 2}
    assert json.loads(Path(artifact.path).read_text()) == {"a_b": 2}


def extended_responses(config, iteration: int = 1) -> str:
    initial = [response(essay(40 + i, seed=i), query=f"Write about topic {i} ({iteration}).", index=i) for i in range(6)]
    extended = [
        response(essay(80 + 3 * i, seed=10 + i), query=r.query, index=r.sample_index, kind="extended", initial_id=r.id, initial_text=r.text, initial_words=r.words)
        for i, r in enumerate(initial)
    ]
    uri = RunLayout(config).iteration(iteration, "extended")
    write_records(get_storage(), uri, extended, stage="extend", fingerprint=Fingerprint.of({}), shard_size=4)
    return uri


def test_select_then_sft_data_write_at_the_layout_places(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path))
    config = run_config(str(tmp_path / "runs"))
    metrics = MetricsArtifact(tmp_path / "metrics")
    selected = steps.select(config.to_json(), phase="iteration-1", responses=extended_responses(config), metrics=metrics)
    assert selected == RunLayout(config).iteration(1, "selected")
    assert metrics.logged["input"] == 6 and metrics.logged["kept"] >= 1
    layout = RunLayout(config)
    uris = steps.sft_data(
        config.to_json(), phase="iteration-1", selected=selected, initial=layout.iteration(1, "initial"), extended=layout.iteration(1, "extended"), run_data=""
    )
    assert RunData.parse(uris.pop("run_data")) == RunData(responses=[layout.iteration(1, "initial"), layout.iteration(1, "extended")], selected=[selected])
    assert uris == {role: layout.iteration(1, "sft", role) for role in ("generator", "extender")}
    examples = read_records(get_storage(), uris["extender"], SftExample)
    assert len(examples) == metrics.logged["kept"] and {e.role for e in examples} == {"extender"}

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(steps.STEP_MARKER)]
    summaries = [json.loads(line[len(steps.STEP_MARKER):]) for line in lines]
    assert [s["step"] for s in summaries] == ["select", "sft-data"]
    assert summaries[0]["label"] == "iteration-1" and summaries[0]["summary"].startswith("kept ")
    timings = [json.loads(line) for line in (tmp_path / steps.TIMINGS_NAME).read_text().splitlines()]
    assert [t["step"] for t in timings] == ["select", "sft-data"]
    assert all(t["process_start"] <= t["start"] <= t["end"] for t in timings)


def test_sft_data_accumulates_earlier_selections(tmp_path) -> None:
    config = run_config(str(tmp_path / "runs"), sft_data={"accumulate": True})
    first = steps.select(config.to_json(), phase="iteration-1", responses=extended_responses(config))
    second = steps.select(config.to_json(), phase="iteration-2", responses=extended_responses(config, iteration=2))
    layout = RunLayout(config)
    earlier = RunData(responses=[layout.iteration(1, "initial"), layout.iteration(1, "extended")], selected=[first])
    uris = steps.sft_data(
        config.to_json(), phase="iteration-2", selected=second, initial=layout.iteration(2, "initial"), extended=layout.iteration(2, "extended"),
        run_data=earlier.model_dump_json(),
    )  # fmt: skip
    examples = read_records(get_storage(), uris["generator"], SftExample)
    assert len(examples) == read_manifest(get_storage(), first).count + read_manifest(get_storage(), second).count
    assert RunData.parse(uris["run_data"]).selected == [first, second], "the earlier selection came from run_data"


def test_prepare_refuses_a_config_for_another_graph(tmp_path) -> None:
    with pytest.raises(ConfigError, match="compiled for 3"):
        steps.prepare(run_config(str(tmp_path)).to_json(), iterations=3)


def test_prepare_checks_the_base_model(tmp_path) -> None:
    config = run_config(str(tmp_path), model={"base": str(tmp_path / "missing")})
    with pytest.raises(TrainingError, match="not a Hugging Face model folder"):
        steps.prepare(config.to_json(), iterations=config.iterations)
