"""The local runner's pieces: the local config, the task count, the progress display."""

import io
import json

from rich.console import Console
from rich.progress import Progress

from pipelines import build_pipeline
from selflengthen.orchestration.local import PipelineLog, count_tasks, local_config
from selflengthen.orchestration.steps import STEP_MARKER
from tests.orchestration.helpers import run_config


def test_local_config_makes_paths_absolute_and_artefacts_local(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = run_config(
        "runs/x",
        model={"base": "models/tiny", "tokenizer": "file://tok"},
        eval={"benchmark_files": {"longen": "bench/longen.jsonl", "longbench-write": "s3://b/lbw.jsonl"}},
        self_instruct={"seeds_uri": "seeds.jsonl"},
    )
    local = local_config(config, tmp_path / "work")
    assert local.workdir == str(tmp_path / "work")
    assert local.model.base == str(tmp_path / "models" / "tiny")
    assert local.model.tokenizer == str(tmp_path / "tok")
    assert local.eval.benchmark_files == {"longen": str(tmp_path / "bench" / "longen.jsonl"), "longbench-write": "s3://b/lbw.jsonl"}
    assert local.self_instruct.seeds_uri == str(tmp_path / "seeds.jsonl")
    assert local.training.save_merged  # a local server loads a merged folder, not an adapter


def test_artefacts_on_s3_stay_there(tmp_path) -> None:
    config = run_config("s3://bucket/runs", training={"method": "full"})
    local = local_config(config, tmp_path)
    assert local.workdir == "s3://bucket/runs"
    assert not local.training.save_merged


def test_count_tasks_counts_container_tasks_of_every_sub_pipeline() -> None:
    by_generator = {"eval": {"enabled": False}, "self_instruct": {"model": "generator"}}
    one = count_tasks(build_pipeline(run_config("/r", iterations=1, **by_generator)))
    two = count_tasks(build_pipeline(run_config("/r", iterations=2, **by_generator)))
    per_iteration = 12  # 2 serve, held-out, self-instruct, generate, extend, 2 teardown, select, sft-data, 2 train
    assert two - one == per_iteration
    # identify-run, prepare, report, exit handler + final: serve, held-out, self-instruct, collect, length control,
    # teardown, train, then the final model's serve, held-out answers and teardown
    assert one == per_iteration + 4 + 7 + 3
    # self-instruct by the base model (the reference): its own server in each phase that proposes (sequential layout)
    by_base = count_tasks(build_pipeline(run_config("/r", iterations=1, eval={"enabled": False})))
    assert by_base == one + 2 + 2


def test_pipeline_log_keeps_everything_and_shows_progress() -> None:
    sink = io.StringIO()
    console = Console(file=io.StringIO(), width=200)
    with Progress(console=console) as progress:
        task = progress.add_task("starting", total=4)
        log = PipelineLog(sink, console, progress, task)
        step = {"step": "generate", "label": "iteration-1 initial", "summary": "12 responses", "seconds": 3.25}
        log.write("10:00:00 - INFO - Executing task \x1b[96m'generate'\x1b[0m\n    ::partial")
        log.write(f" line\n    {STEP_MARKER}{json.dumps(step)}\n")
        log.write("10:00:01 - INFO - Task \x1b[96m'generate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n")
        log.write("Task extend cache hit (key=0123456789ab); skipping execution.\n")
        log.write("10:00:02 - ERROR - Task 'select' finished with status FAILURE\n")
        assert progress.tasks[0].completed == 3
    shown = console.file.getvalue()
    assert "generate" in shown and "12 responses" in shown and "(3.2 s)" in shown
    assert "extend (finished before: cached)" in shown and "select failed" in shown
    assert list(log.failed) == ["select"] and "Task 'select' finished with status FAILURE" in log.failed["select"][-1]
    assert "::partial line" in sink.getvalue() and "Executing task" in sink.getvalue()
