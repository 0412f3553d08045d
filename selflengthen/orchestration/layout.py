"""Where every artefact of a run lives: one deterministic URI per run, phase and stage.

The layout is a function of the configuration alone (``workdir`` and ``run_id``; on Kubeflow the
run id is the pipeline's identify-run output, see :func:`effective_run_id`), so a rerun of a
run finds its finished work at the same places: a stage whose dataset exists is skipped, and a
resubmitted pipeline gets the same step inputs (and so cache hits)::

    <workdir>/<run_id>/
        iteration-<k>/                  one macro-iteration
            queries/ initial/ extended/ selected/        datasets
            sft/generator/ sft/extender/                 SFT datasets
            train/generator/ train/extender/             training outputs (COMPLETE marks them done)
        final/                          after the iterations, with the final Generator
            queries/ collected/ length-control/ train/generator/
        serving/<phase>-<role>.json     a record per model server (phases above and "evaluation")
        heldout/queries/                the fixed held-out query set of the run
        heldout/generator-<j>/          the Generator's answers after j iterations (j = 0: base)
        heldout/final/                  the final model's answers (after the length-following SFT)
        base-model.json, base-model/    an hf:// base model: its pinned revision, and its copy when
                                        the run's storage is S3
        eval/generator-<j>/ eval/final/ evaluation outputs
        report/                         report.json, report.md, report.html, plots/
        export/                         dataset/ and model/ with their cards (export.output unset)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from selflengthen.config import ConfigError, RunConfig
from selflengthen.storage import join_uri

FINAL_PHASE = "final"
EVALUATION_PHASE = "evaluation"
PHASES_AFTER = (FINAL_PHASE, EVALUATION_PHASE)


def effective_run_id(explicit_run_id: str, kfp_run_id: str) -> str:
    """The id of a run: ``explicit_run_id`` when set, else the KFP run's own id.

    ``kfp_run_id`` is what the KFP backend puts for ``{{$.pipeline_job_uuid}}`` when the placeholder
    is a task input's whole value (kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go:
    the driver compares the whole string; from backend 2.5.0 on); kfp.local puts a random integer
    drawn once per run. An older backend leaves the placeholder as it is, which is refused here.
    """
    run_id = explicit_run_id.strip() or kfp_run_id.strip()
    if not run_id or "{{" in run_id:
        raise ConfigError(
            f"no run id: the pipeline parameter run_id is empty and the KFP backend did not fill the run placeholder "
            f"({kfp_run_id!r}; backends from 2.5.0 do): pass run_id when submitting the run"
        )
    return run_id


def iteration_phase(iteration: int) -> str:
    return f"iteration-{iteration}"


def phase_index(config: RunConfig, phase: str) -> int:
    """A number per phase: k for iteration-k, N+1 for the final phase, N+2 for the evaluation phase.

    It is the iteration number the phase's records carry (ids, seeds, logs) and tells apart the
    phases' model servers on Kubernetes.
    """
    if phase.startswith("iteration-") and phase.removeprefix("iteration-").isdigit():
        iteration = int(phase.removeprefix("iteration-"))
        if 1 <= iteration <= config.iterations:
            return iteration
    elif phase in PHASES_AFTER:
        return config.iterations + 1 + PHASES_AFTER.index(phase)
    raise ValueError(f"unknown phase {phase!r} (iteration-1..iteration-{config.iterations}, {', '.join(PHASES_AFTER)})")


def served_generation(config: RunConfig, phase: str) -> int:
    """How many iterations the Generator served in ``phase`` has been through (iteration-k: k-1)."""
    index = phase_index(config, phase)
    if phase == EVALUATION_PHASE:
        raise ValueError("the evaluation phase serves the final model (after the length-following SFT)")
    return min(index - 1, config.iterations)


def evaluation_name(config: RunConfig, phase: str) -> str:
    """Where the Generator served in ``phase`` is evaluated: ``generator-<j>``, or ``final``."""
    return "final" if phase == EVALUATION_PHASE else f"generator-{served_generation(config, phase)}"


class RunLayout:
    """The URIs of one run's artefacts."""

    def __init__(self, config: RunConfig):
        self.root = join_uri(config.workdir, config.run_id)
        self.iterations = config.iterations

    def phase(self, phase: str, *parts: str) -> str:
        return join_uri(self.root, phase, *parts)

    def iteration(self, iteration: int, *parts: str) -> str:
        return self.phase(iteration_phase(iteration), *parts)

    def server_record(self, phase: str, role: str) -> str:
        return join_uri(self.serving(), f"{phase}-{role}.json")

    def serving(self) -> str:
        """The folder of every server record of the run (what a teardown of the whole run stops)."""
        return join_uri(self.root, "serving")

    def heldout_queries(self) -> str:
        return join_uri(self.root, "heldout", "queries")

    def heldout(self, generation: int) -> str:
        """Answers to the held-out queries by the Generator after ``generation`` iterations."""
        return join_uri(self.root, "heldout", f"generator-{generation}")

    def heldout_final(self) -> str:
        """Answers to the held-out queries by the final model (after the length-following SFT)."""
        return join_uri(self.root, "heldout", FINAL_PHASE)

    def base_model_record(self) -> str:
        """The JSON pinning an ``hf://`` base model: its id, the revision asked for and the commit used."""
        return join_uri(self.root, "base-model.json")

    def base_model_copy(self) -> str:
        """Where an ``hf://`` base model is copied when the run's artefacts live on S3."""
        return join_uri(self.root, "base-model")

    def export(self, *parts: str) -> str:
        return join_uri(self.root, "export", *parts)

    def evaluation(self, name: str) -> str:
        return join_uri(self.root, "eval", name)

    def report(self, *parts: str) -> str:
        return join_uri(self.root, "report", *parts)


class RunData(BaseModel):
    """The datasets the iterations have made so far, passed from step to step as one graph value
    (``run_data``), so that a step reading earlier iterations' data (the SFT data with
    ``sft_data.accumulate``, length control) has them as inputs: the graph shows the dependency
    and KFP's cache keys on it."""

    model_config = ConfigDict(extra="forbid")

    responses: list[str] = []  # every iteration's initial and extended responses
    selected: list[str] = []  # every iteration's selection

    @classmethod
    def parse(cls, text: str) -> "RunData":
        """The value a step received; empty before the first iteration."""
        return cls.model_validate_json(text) if text else cls()

    def add(self, *, initial: str, extended: str, selected: str) -> "RunData":
        return RunData(responses=[*self.responses, initial, extended], selected=[*self.selected, selected])
