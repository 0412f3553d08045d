"""The pipeline's steps as plain functions: what each KFP component calls, and nothing more.

Every step takes the run's configuration as one JSON string (``config_json``) plus a few URIs and
names, writes its output at the deterministic place of :class:`RunLayout`, and returns that URI, so
a rerun finds finished work and a resubmitted pipeline gets cache hits. Around the call, a step

* logs its figures to the component's KFP ``Metrics`` output (when given),
* prints one summary line (``STEP_MARKER`` + JSON) that the local runner shows as progress,
* on a deterministic failure (a :class:`SelfLengthenError` that is not ``transient``) prints
  ``FAILED_MARKER`` + JSON with the cause, on which the local runner stops the run at once: kfp.local
  retries a failed task by count only (kfp 2.17, ``kfp/local/orchestrator/task_executor.py``), as
  Kubeflow Pipelines does (a retry count with backoff in the compiled task), so without it bad input
  would be run ``pipeline.retries`` more times;
* appends its timing (process start, call start and end) to ``timings.jsonl`` of the local run's
  folder when there is one (``bench/local_run_breakdown.py`` reads it).

Imports stay light here: each step imports the library part it needs when it runs, so a step's
process loads only what it uses.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selflengthen.config import ConfigError, Role, RunConfig, parse_config
from selflengthen.errors import SelfLengthenError
from selflengthen.logs import stage_logger
from selflengthen.orchestration import serving
from selflengthen.orchestration.layout import (
    EVALUATION_PHASE,
    FINAL_PHASE,
    RunData,
    RunLayout,
    effective_run_id,
    evaluation_name,
    phase_index,
    served_generation,
)
from selflengthen.storage import get_storage

STEP_MARKER = "::selflengthen-step::"
# Printed (+ JSON with the step and the cause) by a step that failed deterministically: the local
# runner stops the run at once instead of letting kfp.local retry it (every attempt would fail alike).
FAILED_MARKER = "::selflengthen-failed::"
TIMINGS_NAME = "timings.jsonl"


@dataclass
class StepResult:
    """What a step returns: its output(s), figures for KFP Metrics, a one-line summary."""

    output: Any
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a_b_c`` -> number (KFP Metrics take numbers only)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def log_metrics(artifact: Any, metrics: dict[str, Any]) -> None:
    """Log ``metrics`` to a KFP Metrics artifact and write them to its file (a local cache hit needs
    the artifact's file to exist)."""
    flat = flatten_metrics(metrics)
    for name, value in flat.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(flat, indent=2, sort_keys=True), encoding="utf-8")


def _record_timing(entry: dict[str, Any]) -> None:
    local_dir = os.environ.get(serving.LOCAL_DIR_ENV)
    if local_dir:
        with open(Path(local_dir) / TIMINGS_NAME, "a", encoding="utf-8") as timings:
            timings.write(json.dumps(entry) + "\n")


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def step(name: str, *, imports: tuple[str, ...] = ()) -> Callable[[Callable[..., StepResult]], Callable[..., Any]]:
    """Make ``func(config, **kwargs) -> StepResult`` a step ``(config_json, *, run_id=None, metrics=None, **kwargs)``.

    ``run_id``: the run's id (the pipeline's identify-run output), which replaces the config's.
    ``imports``: the library modules the step works with, imported before its work is timed, so the
    timings tell a step's start-up (interpreter, imports) from its work.
    """

    def decorate(func: Callable[..., StepResult]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(config_json: str, *, run_id: str | None = None, metrics: Any = None, **kwargs: Any) -> Any:
            data = json.loads(config_json)
            if run_id:
                data["run_id"] = run_id
            config = parse_config(data, "the pipeline's config_json" + (f" with run_id {run_id!r}" if run_id else ""))
            label = " ".join(str(kwargs[key]) for key in ("phase", "server", "role", "kind") if key in kwargs)
            for module in imports:
                importlib.import_module(module)
            started = time.time()
            # a step reading a served model keeps its server's lease (selflengthen gc spares it)
            held = serving.server_kept(config, kwargs["endpoint"]) if kwargs.get("endpoint") else contextlib.nullcontext()
            try:
                with held:
                    result = func(config, **kwargs)
            except SelfLengthenError as error:
                if not error.transient:
                    print(FAILED_MARKER + json.dumps({"step": name, "label": label, "cause": str(error)}), flush=True)
                raise
            ended = time.time()
            if metrics is not None:
                log_metrics(metrics, result.metrics)
            stage_logger(config.run_id, name).info("%s: %s (%.1f s)", label or name, result.summary, ended - started)
            line = {"step": name, "label": label, "summary": result.summary, "seconds": round(ended - started, 2)}
            print(STEP_MARKER + json.dumps(line), flush=True)
            _record_timing({"step": name, "label": label, "process_start": _process_start(), "start": started, "end": ended})
            return result.output

        return run

    return decorate


def _stage_result(result: Any, noun: str) -> StepResult:
    manifest = result.manifest
    summary = f"{manifest.count} {noun}" + (f", {manifest.failures} given up" if manifest.failures else "")
    if result.skipped:
        summary += " (already complete)"
    return StepResult(result.output_uri, summary, {"records": manifest.count, "failures": manifest.failures, **manifest.metrics})


# --------------------------------------------------------------------------- model and servers


def tiny_model_missing(config: RunConfig) -> bool:
    """Whether the prepare step is to build the tiny model at ``model.base``."""
    from selflengthen.storage import is_s3_uri

    base = config.model.base
    return config.model.build_tiny and not is_s3_uri(base) and not (Path(base) / "config.json").exists()


def check_base(config: RunConfig, base: str) -> None:
    """The base model at ``base`` must be a causal LM folder; a local one must also hold readable weights."""
    from selflengthen.storage import is_s3_uri
    from selflengthen.training.model import check_base_model, check_weights

    check_base_model(get_storage(config.storage), base, trust_remote_code=config.training.trust_remote_code)
    if not is_s3_uri(base):
        check_weights(Path(base.removeprefix("file://")), f"base model {base}")


def check_run_inputs(config: RunConfig) -> None:
    """What a run reads before its first step: the base model (unless the tiny model is to be built
    there), the seed instructions and the benchmark files. A run checks them before it starts, as
    every attempt of a step would fail on them alike: KFP retries a failed step by count only, not
    by cause (kfp 2.17, kfp/local/orchestrator/task_executor.py: ``for attempt in
    range(max_retries + 1)`` over the task's status; on Kubeflow the retry policy compiles to a
    retry count with backoff)."""
    from selflengthen.evaluation.benchmarks import HF_DATASETS_SCHEME, load_benchmark
    from selflengthen.stages.self_instruct import load_seeds

    from selflengthen.modelio import HUB_SCHEME, localize

    base = config.model.base
    if base.startswith(HUB_SCHEME):
        # The hub cache must hold it (offline: the error names the id and how to provide it); the
        # prepare step pins it and, for an S3 workdir, copies it below the run.
        base = str(localize(base, config.storage))
    if not tiny_model_missing(config):
        check_base(config, base)
    if config.self_instruct.seeds_uri:
        load_seeds(config, config.self_instruct.seeds_uri)
    if config.eval.enabled:
        for benchmark in config.eval.benchmarks:
            source = config.eval.benchmark_files.get(benchmark)
            if source is None or not source.startswith(HF_DATASETS_SCHEME):
                load_benchmark(get_storage(config.storage), benchmark, source)


@step("prepare", imports=("selflengthen.training.model",))
def prepare(config: RunConfig, *, iterations: int) -> StepResult:
    """The base model URI, checked, after building the tiny model there when the config asks for it
    and it is missing; for an ``hf://`` base, the run's pinned copy of it. ``iterations``: how many
    the pipeline was compiled for (a submitted config must ask for as many)."""
    from selflengthen.modelio import HUB_SCHEME

    if config.iterations != iterations:
        raise ConfigError(
            f"iterations is {config.iterations} in config_json, but the pipeline was compiled for {iterations}: "
            "compile it again with this config (selflengthen compile)"
        )
    base = config.model.base
    if base.startswith(HUB_SCHEME):
        from selflengthen.orchestration.base_model import resolve_base_model

        base = resolve_base_model(config)
    built = tiny_model_missing(config)
    if built:
        from selflengthen.tiny_model import build_tiny_model

        build_tiny_model(base, pretrain_steps=config.model.tiny_pretrain_steps)
    check_base(config, base)
    return StepResult(base, f"base model {base}" + (" (tiny model built)" if built else ""))


@step("identify-run")
def identify_run(config: RunConfig, *, explicit_run_id: str, kfp_run_id: str) -> StepResult:
    """The run's id: the explicit one, else KFP's run id (every later step takes it as input)."""
    run_id = effective_run_id(explicit_run_id, kfp_run_id)
    parse_config({**config.model_dump(mode="json"), "run_id": run_id}, "the run id")
    how = "given" if explicit_run_id.strip() else "the KFP run's id"
    return StepResult(run_id, f"run {run_id} ({how}; artefacts at {RunLayout(config.model_copy(update={'run_id': run_id})).root})")


@step("serve", imports=("selflengthen.serving.local", "selflengthen.training.output", "selflengthen.modelio"))
def serve(config: RunConfig, *, phase: str, server: str, base: str, generator: str, extender: str) -> StepResult:
    """Start the model server ``server`` (a role's, or ``shared``) for the roles' models (an empty
    URI: a role it does not serve; ``base``: the run's base model); its record URI, base URL and
    model names (``record``, ``url``, ``model``: role=name, comma-separated)."""
    models = {role: uri for role, uri in (("base", base), ("generator", generator), ("extender", extender)) if uri}
    record_uri = serving.serve(config, phase=phase, server=server, models=models)
    record = serving.ServerRecord.model_validate_json(get_storage(config.storage).read_text(record_uri))
    names = ",".join(f"{role}={name}" for role, name in sorted(record.models.items()))
    return StepResult({"record": record_uri, "url": record.base_url, "model": names}, f"{names} at {record.base_url}")


@step("teardown", imports=("selflengthen.serving.local",))
def teardown(config: RunConfig, *, phase: str, server: str) -> StepResult:
    stopped = serving.teardown(config, phase=phase, server=server)
    return StepResult(None, f"stopped {', '.join(stopped) or 'nothing (no server was running)'}")


@step("teardown-run", imports=("selflengthen.serving.local",))
def _teardown_run(config: RunConfig) -> StepResult:
    stopped = serving.teardown_run(config)
    return StepResult(None, f"stopped {', '.join(stopped) or 'nothing (every server was down already)'}")


def teardown_run(config_json: str, *, explicit_run_id: str, kfp_run_id: str) -> None:
    """The exit handler: every server and TrainJob of the run (its id derived as identify-run does)."""
    _teardown_run(config_json, run_id=effective_run_id(explicit_run_id, kfp_run_id))


# --------------------------------------------------------------------------- generation


@step("self-instruct", imports=("selflengthen.stages.self_instruct",))
def self_instruct(config: RunConfig, *, phase: str, endpoint: str) -> StepResult:
    """New queries: ``self_instruct.num_instructions`` per iteration, ``length_control.extra_queries``
    in the final phase (answered by the final Generator alone). Proposed and judged by the model of
    ``self_instruct.model`` (the base model, or the current Generator) on the server at ``endpoint``."""
    from selflengthen.stages.self_instruct import run_self_instruct

    if phase == FINAL_PHASE:
        settings = config.self_instruct.model_copy(update={"num_instructions": config.length_control.extra_queries})
        config = config.model_copy(update={"self_instruct": settings})
    result = run_self_instruct(
        serving.with_endpoint(config, endpoint, "generator", model=config.self_instruct.model),
        output=RunLayout(config).phase(phase, "queries"),
        iteration=phase_index(config, phase),
    )
    return _stage_result(result, "queries")


@step("generate", imports=("selflengthen.stages.generate",))
def generate(config: RunConfig, *, phase: str, kind: str, queries: str, endpoint: str) -> StepResult:
    """Answers by the Generator: ``initial`` (an iteration) or ``collected`` (the final phase)."""
    from selflengthen.stages.generate import run_generate

    output = RunLayout(config).phase(phase, kind)
    result = run_generate(serving.with_endpoint(config, endpoint, "generator"), queries=queries, output=output, kind=kind)
    return _stage_result(result, "responses")


@step("heldout", imports=("selflengthen.orchestration.heldout",))
def heldout(config: RunConfig, *, phase: str, endpoint: str) -> StepResult:
    """The Generator served in ``phase`` answers the run's held-out queries (in the evaluation
    phase: the final model, after the length-following SFT)."""
    from selflengthen.orchestration.heldout import answer_heldout

    layout = RunLayout(config)
    if phase == EVALUATION_PHASE:
        generation, output = phase_index(config, phase), layout.heldout_final()
    else:
        generation = served_generation(config, phase)
        output = layout.heldout(generation)
    config = serving.with_endpoint(config, endpoint, "generator")
    result = answer_heldout(config, output=output, generation=generation)
    return _stage_result(result, "held-out answers")


@step("extend", imports=("selflengthen.stages.extend",))
def extend(config: RunConfig, *, phase: str, responses: str, endpoint: str) -> StepResult:
    from selflengthen.stages.extend import run_extend

    output = RunLayout(config).phase(phase, "extended")
    result = run_extend(serving.with_endpoint(config, endpoint, "extender"), responses=responses, output=output)
    return _stage_result(result, "extended responses")


# --------------------------------------------------------------------------- data and training


@step("select", imports=("selflengthen.stages.select",))
def select(config: RunConfig, *, phase: str, responses: str) -> StepResult:
    from selflengthen.stages.select import run_select

    output = RunLayout(config).phase(phase, "selected")
    manifest = run_select(config, input=responses, output=output, iteration=phase_index(config, phase))
    return StepResult(output, f"kept {manifest.count} of {manifest.metrics['input']}", manifest.metrics)


@step("sft-data", imports=("selflengthen.stages.sft_data",))
def sft_data(config: RunConfig, *, phase: str, selected: str, initial: str, extended: str, run_data: str) -> StepResult:
    """SFT examples of both roles from this iteration's selection (all iterations' with accumulate:
    the earlier ones from ``run_data``), and ``run_data`` with this iteration's datasets added."""
    from selflengthen.stages.sft_data import run_sft_data

    layout = RunLayout(config)
    iteration = phase_index(config, phase)
    earlier = RunData.parse(run_data)
    previous = earlier.selected if config.sft_data.accumulate else []
    uris = run_sft_data(config, extended=[*previous, selected], output=layout.phase(phase, "sft"), iteration=iteration)
    made = earlier.add(initial=initial, extended=extended, selected=selected)
    return StepResult({**uris, "run_data": made.model_dump_json()}, f"SFT data from {len(previous) + 1} selection(s)")


@step("train", imports=("selflengthen.training",))
def train(config: RunConfig, *, phase: str, role: Role, data: str, previous: str) -> StepResult:
    from selflengthen.orchestration.training import train as train_role
    from selflengthen.report import training_summary

    output = RunLayout(config).phase(phase, "train", role)
    figures = train_role(config, role=role, iteration=phase_index(config, phase), data=data, previous=previous, output=output)
    return StepResult(output, training_summary(figures), figures)


@step("length-control", imports=("selflengthen.stages.length_control",))
def length_control(config: RunConfig, *, run_data: str, collected: str, endpoint: str) -> StepResult:
    """Length-constrained examples from every iteration's responses (``run_data``) plus the final collection."""
    from selflengthen.stages.length_control import run_length_control

    layout = RunLayout(config)
    sources = [*RunData.parse(run_data).responses, *([collected] if collected else [])]
    result = run_length_control(
        serving.with_endpoint(config, endpoint, "generator"),
        responses=sources,
        output=layout.phase(FINAL_PHASE, "length-control"),
    )
    return _stage_result(result, "length-constrained examples")


# --------------------------------------------------------------------------- evaluation and report


@step("evaluate", imports=("selflengthen.evaluation",))
def evaluate(config: RunConfig, *, phase: str, endpoint: str) -> StepResult:
    """The benchmarks answered by the Generator served in ``phase``."""
    from selflengthen.evaluation import evaluate as run_evaluation

    output = RunLayout(config).evaluation(evaluation_name(config, phase))
    results = run_evaluation(config, endpoint=serving.endpoint_for(config, endpoint, "generator"), output=output, iteration=None)
    scores = ", ".join(f"{benchmark} {summary.get('overall', 0):.3f}" for benchmark, summary in results.items())
    return StepResult(output, scores or "no benchmark", results)


@step("report", imports=("selflengthen.orchestration.reporting", "matplotlib.pyplot"))
def report(config: RunConfig, *, markdown: Any = None) -> StepResult:
    """report.json, report.md and report.html below the run; the Markdown also to ``markdown`` (KFP)."""
    from selflengthen.orchestration.reporting import build_report, publish_report

    built = build_report(config)
    uri = publish_report(config, built, markdown_path=markdown.path if markdown is not None else None)
    return StepResult(uri, f"{len(built.data['iterations'])} iteration(s) reported", built.metrics())


@step("export", imports=("selflengthen.export",))
def export(config: RunConfig) -> StepResult:
    """The run's dataset and final model with their cards, to ``export.output`` (and the Hub)."""
    from selflengthen.export import export_run

    result = export_run(config)
    hub = f", pushed to {', '.join(result.hub.values())}" if result.hub else ""
    summary = f"{sum(result.rows.values())} rows and the final model to {result.dataset.rsplit('/', 1)[0]}{hub}"
    return StepResult(result.model, summary, {"rows": result.rows})
