"""The local runner: the same pipeline function as on Kubeflow, run by ``kfp.local`` on one machine.

``run_local(config, workdir)`` runs every step as a subprocess of this Python (SubprocessRunner
without a virtual environment: no installs, the current environment's imports), with kfp.local's
output cache in the run's folder, so running it again with the same folder skips the finished
steps and resumes an unfinished one from its checkpointed records. Model servers are local
processes (``execution.target`` local; a kubeflow config is refused). The run id is the config's
``run_id``, passed as the pipeline's run_id parameter, so the same folder and config resume the
run. The run's folder holds::

    <workdir>/report.json report.md report.html plots/   the report, copied from the run's storage
    <workdir>/<run_id>/...                                 the artefacts when storage is local
    <workdir>/kfp/                                         kfp.local's task outputs and cache
    <workdir>/logs/pipeline.log                            every task's output; server logs beside it
    <workdir>/timings.jsonl                                each step's timing (bench/local_run_breakdown.py)

On the console: one line per finished step and a progress bar over the pipeline's tasks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selflengthen.config import ConfigError, RunConfig
from selflengthen.errors import SelfLengthenError
from selflengthen.logs import stage_logger
from selflengthen.orchestration import serving
from selflengthen.orchestration.layout import RunLayout
from selflengthen.orchestration.steps import FAILED_MARKER, STEP_MARKER, check_run_inputs
from selflengthen.report import REPORT_JSON
from selflengthen.storage import get_storage, is_s3_uri

LOG_NAME = "pipeline.log"
LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_CACHED = re.compile(r"Task (\S+) cache hit")
_CAUSE = re.compile(r"^(?:error|[\w.]*(?:Error|Exception|Failed)): (.+)$")


class PipelineFailed(SelfLengthenError):
    """A step of the local pipeline failed; the message names it and shows the end of its log."""


class _StepFailedDeterministically(BaseException):
    """Raised from the log watcher when a step reports a deterministic failure, to end the run
    before kfp.local retries the step. A BaseException, so kfp.local's ``except Exception``
    handlers let it through (its tasks run in this thread: the pipeline has no ParallelFor)."""

    def __init__(self, task: str, cause: str) -> None:
        super().__init__(cause)
        self.task = task
        self.cause = cause


def _absolute(path: str | None) -> str | None:
    """A local path (plain or file://) made absolute; URIs of other schemes as they are."""
    if path is None or ("://" in path and not path.startswith("file://")):
        return path
    return str(Path(path.removeprefix("file://")).resolve())


def local_config(config: RunConfig, workdir: Path) -> RunConfig:
    """``config`` as the local run uses it: local paths made absolute (steps need not share the
    caller's working directory), artefacts below ``workdir`` unless they go to S3, and LoRA results
    also saved merged (a local server loads a model folder, not an adapter)."""
    model = config.model.model_copy(update={"base": _absolute(config.model.base), "tokenizer": _absolute(config.model.tokenizer)})
    evaluation = config.eval.model_copy(update={"benchmark_files": {k: _absolute(v) for k, v in config.eval.benchmark_files.items()}})
    instruct = config.self_instruct.model_copy(update={"seeds_uri": _absolute(config.self_instruct.seeds_uri)})
    training = config.training.model_copy(update={"save_merged": config.training.save_merged or config.training.method == "lora"})
    return config.model_copy(
        update={
            "workdir": config.workdir if is_s3_uri(config.workdir) else str(workdir),
            "model": model,
            "eval": evaluation,
            "self_instruct": instruct,
            "training": training,
        }
    )


def count_tasks(pipeline: Any) -> int:
    """How many container tasks the compiled pipeline runs (nested sub-pipelines included)."""
    spec = pipeline.pipeline_spec
    executors = {name for name, component in spec.components.items() if component.executor_label}
    dags = [spec.root.dag, *(component.dag for component in spec.components.values() if component.HasField("dag"))]
    return sum(task.component_ref.name in executors for dag in dags for task in dag.tasks.values())


class PipelineLog(io.TextIOBase):
    """Stands in for stdout during the run: every line goes to the log file; task starts, step
    summaries, cache hits and failures also drive the console's progress display. The last lines of
    each failed task are kept (``failed``: task name -> lines) for the error message."""

    def __init__(self, log_file: io.TextIOBase, console: Console, progress: Progress, task_id: int):
        self.log_file = log_file
        self.console = console
        self.progress = progress
        self.task_id = task_id
        self.pending = ""
        self.task_lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.failed: dict[str, list[str]] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log_file.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._watch(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log_file.flush()

    def _watch(self, line: str) -> None:
        self.task_lines.append(line)
        if FAILED_MARKER in line:
            failure = json.loads(line.split(FAILED_MARKER, 1)[1])
            task = " ".join(part for part in (failure["step"], failure["label"]) if part)
            self.console.print(f"[red]✗ {task} failed[/]", highlight=False)
            raise _StepFailedDeterministically(task, failure["cause"])
        if STEP_MARKER in line:
            step = json.loads(line.split(STEP_MARKER, 1)[1])
            self.console.print(
                f"[green]✓[/] {step['step']:<15} {step['label']:<24} {step['summary']} [dim]({step['seconds']:.1f} s)[/]",
                highlight=False,
            )
        elif match := _STARTED.search(line):
            self.task_lines.clear()
            self.progress.update(self.task_id, description=f"running {match.group(1)}")
        elif match := _CACHED.search(line):
            self.console.print(f"[dim]↺ {match.group(1)} (finished before: cached)[/]", highlight=False)
            self.progress.advance(self.task_id)
        elif match := _FINISHED.search(line):
            self.progress.advance(self.task_id)
            if match.group(2) != "SUCCESS":
                self.failed[match.group(1)] = list(self.task_lines)
                self.console.print(f"[red]✗ {match.group(1)} failed[/]", highlight=False)


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does (so the clean-up below runs)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def _stop_children(keep: set[int]) -> None:
    """Stop, by PID, the processes this process started during the run (the step running when it
    was interrupted), not those in ``keep`` (started before the run)."""
    import psutil

    children = [child for child in psutil.Process().children(recursive=True) if child.pid not in keep]
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@contextlib.contextmanager
def _pipeline_output(workdir: Path, console: Console, total: int) -> Iterator[PipelineLog]:
    """stdout and kfp.local's log records to ``logs/pipeline.log`` and the progress display."""
    log_path = workdir / "logs" / LOG_NAME
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with log_path.open("a", encoding="utf-8") as log_file, Progress(*columns, console=console, transient=True) as progress:
        output = PipelineLog(log_file, console, progress, progress.add_task("starting", total=total))
        handler = logging.StreamHandler(output)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(output), warnings.catch_warnings():
                # kfp.local notes that Kubernetes-only settings (GPUs, display names, the image) do
                # nothing locally; that is by design here.
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                yield output
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def failure_cause(lines: list[str]) -> str | None:
    """The last error a step's output reports (its ``error: ...`` line or its exception's last line)."""
    causes = [match.group(1) for line in lines if (match := _CAUSE.match(line.strip()))]
    return causes[-1] if causes else None


def _failure_message(error: RuntimeError, failed: dict[str, list[str]], log_path: Path) -> str:
    """The failed step and its cause first, then kfp.local's message and the end of each failed step's output."""
    causes = [f"step {task} failed: {cause}" for task, lines in failed.items() if (cause := failure_cause(lines))]
    parts = [*causes, _ANSI.sub("", str(error))]
    for task, lines in failed.items():
        parts.append(f"--- end of the output of step {task}:\n" + "\n".join(lines))
    parts.append(f"the whole output: {log_path}")
    return "\n".join(parts)


def run_local(config: RunConfig, workdir: str | Path, *, console: Console | None = None) -> dict[str, Any]:
    """Run the whole pipeline of ``config`` on this machine with kfp.local; returns the report.

    Rerunning with the same ``workdir`` continues a killed or failed run: finished steps are
    cache hits (or find their outputs and skip), an unfinished step resumes from its checkpoint.
    """
    from kfp import local

    from pipelines import build_pipeline

    if config.execution.target != "local":
        raise ConfigError(
            f"execution.target is {config.execution.target}: this config runs on Kubeflow (selflengthen compile); "
            "selflengthen run needs execution.target local"
        )
    workdir = Path(workdir).resolve()
    given = config
    config = local_config(config, workdir)
    check_run_inputs(config)
    workdir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    log = stage_logger(config.run_id, "run")
    if config.training.save_merged != given.training.save_merged:
        log.info("training.save_merged is set for this local run: a local server loads a merged model, not a LoRA adapter")
    pipeline = build_pipeline(config)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(workdir / "kfp"),
        enable_caching=config.pipeline.caching,
    )
    previous_dir = os.environ.get(serving.LOCAL_DIR_ENV)
    os.environ[serving.LOCAL_DIR_ENV] = str(workdir)
    started = time.monotonic()
    earlier_children = _child_pids()
    log.info("running %d iteration(s) locally in %s (artefacts: %s)", config.iterations, workdir, RunLayout(config).root)
    try:
        with _terminate_on_sigterm(), _pipeline_output(workdir, console, count_tasks(pipeline)) as output:
            try:
                pipeline(config_json=config.to_json(), run_id=config.run_id)
            except RuntimeError as error:
                raise PipelineFailed(_failure_message(error, output.failed, workdir / "logs" / LOG_NAME)) from None
            except _StepFailedDeterministically as failure:
                raise PipelineFailed(
                    f"step {failure.task} failed: {failure.cause}\n"
                    "(not retried: the same input fails every attempt alike; fix it and run again with the same "
                    f"workdir to resume)\nthe whole output: {workdir / 'logs' / LOG_NAME}"
                ) from None
    except BaseException:
        _stop_children(keep=earlier_children)
        serving.teardown_run(config)
        raise
    finally:
        if previous_dir is None:
            os.environ.pop(serving.LOCAL_DIR_ENV, None)
        else:
            os.environ[serving.LOCAL_DIR_ENV] = previous_dir
    log.info("finished in %.0f s", time.monotonic() - started)
    get_storage(config.storage).download_dir(RunLayout(config).report(), workdir)
    return json.loads((workdir / REPORT_JSON).read_text(encoding="utf-8"))
