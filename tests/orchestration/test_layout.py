"""Deterministic URIs per run, phase and stage."""

import pytest

from selflengthen.orchestration.layout import RunData, RunLayout, evaluation_name, phase_index, served_generation
from tests.orchestration.helpers import run_config


def test_uris_depend_only_on_workdir_and_run_id() -> None:
    config = run_config("s3://bucket/runs")
    layout = RunLayout(config)
    assert layout.root == "s3://bucket/runs/unit"
    assert layout.iteration(2, "extended") == "s3://bucket/runs/unit/iteration-2/extended"
    assert layout.phase("final", "train", "generator") == "s3://bucket/runs/unit/final/train/generator"
    assert layout.server_record("iteration-1", "extender") == "s3://bucket/runs/unit/serving/iteration-1-extender.json"
    assert layout.heldout(0) == "s3://bucket/runs/unit/heldout/generator-0"
    assert layout.report("report.json") == "s3://bucket/runs/unit/report/report.json"
    assert RunLayout(config.model_copy(update={"seed": 7})).iteration(1, "initial") == layout.iteration(1, "initial")


def test_run_data_collects_each_iterations_datasets_in_order() -> None:
    layout = RunLayout(run_config("s3://bucket/runs"))
    data = RunData.parse("")
    for k in (1, 2):
        data = RunData.parse(data.add(initial=layout.iteration(k, "initial"), extended=layout.iteration(k, "extended"), selected=layout.iteration(k, "selected")).model_dump_json())
    assert data.responses == [
        "s3://bucket/runs/unit/iteration-1/initial",
        "s3://bucket/runs/unit/iteration-1/extended",
        "s3://bucket/runs/unit/iteration-2/initial",
        "s3://bucket/runs/unit/iteration-2/extended",
    ]
    assert data.selected == ["s3://bucket/runs/unit/iteration-1/selected", "s3://bucket/runs/unit/iteration-2/selected"]


def test_phases_number_iterations_then_final_then_evaluation() -> None:
    config = run_config("/runs")
    assert [phase_index(config, p) for p in ("iteration-1", "iteration-2", "final", "evaluation")] == [1, 2, 3, 4]
    for bad in ("iteration-0", "iteration-3", "iteration-x", "tail"):
        with pytest.raises(ValueError, match="unknown phase"):
            phase_index(config, bad)


def test_the_generator_served_in_a_phase() -> None:
    config = run_config("/runs")
    assert [served_generation(config, p) for p in ("iteration-1", "iteration-2", "final")] == [0, 1, 2]
    assert [evaluation_name(config, p) for p in ("iteration-1", "final", "evaluation")] == ["generator-0", "generator-2", "final"]
    with pytest.raises(ValueError, match="final model"):
        served_generation(config, "evaluation")
