"""The report step: gather a finished run's figures from its layout and publish the report.

Per iteration: counts (queries, responses, extended, accepted, rejections per check and stage),
the length statistics of the initial responses, the extended responses and the Generator's
held-out answers before and after the iteration's training, and (when ``eval.per_iteration``)
the benchmark scores of the Generator before and after it. After the iterations: the final model's
held-out answers, the final collection, the length-control data, the final training and the
evaluation of the final model. First of all, the lengthening rows: the held-out answer length and
scores per stage, which the report opens with and the KFP Metrics list first.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selflengthen.config import RunConfig
from selflengthen.datasets import dataset_exists, iter_records, read_failures, read_manifest
from selflengthen.orchestration.layout import FINAL_PHASE, RunLayout
from selflengthen.records import Failure, Response
from selflengthen.report import Samples, data_uri, lengthening_rows, render_markdown, write_report
from selflengthen.stats import length_stats
from selflengthen.storage import Storage, get_storage, join_uri

EVALUATION_SUMMARY = "summary.json"
TRAINING_FIGURES = ("steps", "train_loss", "tokens_seen", "tokens_per_s")


@dataclass
class BuiltReport:
    data: dict[str, Any]
    samples: Samples

    def metrics(self) -> dict[str, Any]:
        """The figures shown as KFP Metrics: first the held-out answer length (mean, median) and the
        scores per stage (``lengthening_<stage>_...``), then each iteration's counts, lengths and scores."""
        stages = {
            row["stage"].replace(" ", "_"): {"count": row["count"], "mean": row["mean"], "median": row["median"], **row["scores"]}
            for row in self.data["lengthening"]
        }
        return {
            "lengthening": stages,
            **{
                f"iteration{entry['iteration']}": {key: entry[key] for key in ("counts", "lengths", "evaluation") if key in entry}
                for entry in self.data["iterations"]
            },
        }


def _words(storage: Storage, uri: str) -> list[int]:
    return [response.words for response in iter_records(storage, uri, Response)]


def _failure_reasons(storage: Storage, uri: str) -> dict[str, int]:
    return dict(Counter(failure.reason for failure in read_failures(storage, uri, Failure)))


def iteration_entry(storage: Storage, layout: RunLayout, iteration: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The report entry of one iteration and its length samples."""
    uri = {name: layout.iteration(iteration, name) for name in ("queries", "initial", "extended", "selected")}
    manifests = {name: read_manifest(storage, value) for name, value in uri.items()}
    samples = {
        "initial": _words(storage, uri["initial"]),
        "extended": _words(storage, uri["extended"]),
        "generator_before": _words(storage, layout.heldout(iteration - 1)),
        "generator_after": _words(storage, layout.heldout(iteration)),
    }
    counts = {
        "queries": manifests["queries"].count,
        "responses": manifests["initial"].count,
        "extended": manifests["extended"].count,
        "accepted": manifests["selected"].count,
        "rejected": {
            "generation": _failure_reasons(storage, uri["initial"]),
            "extension": _failure_reasons(storage, uri["extended"]),
            "selection": manifests["selected"].metrics.get("rejected", {}),
        },
    }
    entry = {
        "iteration": iteration,
        "counts": counts,
        "lengths": {name: length_stats(words) for name, words in samples.items()},
        "training": {role: _training_figures(storage, layout.iteration(iteration, "train", role)) for role in ("generator", "extender")},
    }
    scores = {"before": _scores(storage, layout, f"generator-{iteration - 1}"), "after": _scores(storage, layout, f"generator-{iteration}")}
    if any(scores.values()):
        entry["evaluation"] = scores
    return entry, samples


def _scores(storage: Storage, layout: RunLayout, name: str) -> dict[str, Any] | None:
    """The benchmark summaries of the evaluation ``name`` (``generator-<j>`` or ``final``), if it ran."""
    summary = join_uri(layout.evaluation(name), EVALUATION_SUMMARY)
    return json.loads(storage.read_text(summary))["benchmarks"] if storage.exists(summary) else None


def _training_figures(storage: Storage, output: str) -> dict[str, Any]:
    from selflengthen.training.output import METRICS_NAME

    figures = json.loads(storage.read_text(join_uri(output, METRICS_NAME)))
    shown = {key: figures.get(key) for key in TRAINING_FIGURES}
    if "carried_forward" in figures:  # no training: training.on_no_examples is carry_forward
        shown.update({key: figures[key] for key in ("carried_forward", "reason")})
    return shown


def _final_entry(storage: Storage, config: RunConfig, layout: RunLayout) -> dict[str, Any]:
    final: dict[str, Any] = {}
    if dataset_exists(storage, layout.heldout_final()):
        final["heldout"] = length_stats(_words(storage, layout.heldout_final()))
    collected = layout.phase(FINAL_PHASE, "collected")
    if dataset_exists(storage, collected):
        final["collected"] = length_stats(_words(storage, collected))
    final["length_control"] = read_manifest(storage, layout.phase(FINAL_PHASE, "length-control")).metrics
    final["training"] = _training_figures(storage, layout.phase(FINAL_PHASE, "train", "generator"))
    evaluations = {"before": _scores(storage, layout, f"generator-{config.iterations}"), "final": _scores(storage, layout, "final")}
    if any(evaluations.values()):
        final["evaluation"] = {name: scores for name, scores in evaluations.items() if scores}
    return final


def build_report(config: RunConfig) -> BuiltReport:
    """The report of the run described by ``config`` (all its iterations and the final phase)."""
    storage = get_storage(config.storage)
    layout = RunLayout(config)
    entries, samples = [], {}
    for iteration in range(1, config.iterations + 1):
        entry, samples[iteration] = iteration_entry(storage, layout, iteration)
        entries.append(entry)
    data = {
        "run_id": config.run_id,
        "config_hash": config.config_hash(),
        "iterations": entries,
        "final": _final_entry(storage, config, layout),
    }
    data["lengthening"] = lengthening_rows(data)
    return BuiltReport(data, samples)


def publish_report(config: RunConfig, built: BuiltReport, *, markdown_path: str | None = None) -> str:
    """Write the report below the run's ``report/`` folder (and the Markdown, plots inlined, to
    ``markdown_path``: the KFP Markdown visualization); returns the report.json URI."""
    prefix = RunLayout(config).report()
    plots = write_report(get_storage(config.storage), prefix, built.data, built.samples)
    if markdown_path:
        inline = render_markdown(built.data, {name: data_uri(png) for name, png in plots.items()})
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(inline, encoding="utf-8")
    return join_uri(prefix, "report.json")
