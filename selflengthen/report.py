"""The run report: ``report.json``, ``report.md`` and ``report.html`` with length plots, and the
length table the CLI prints.

A report is a JSON-able dict::

    {"iterations": [{"iteration": 1,
                     "counts": {"queries": ..., "responses": ..., "extended": ..., "accepted": ...,
                                "rejected": {"generation": {reason: n}, "extension": {...}, "selection": {...}}},
                     "lengths": {"initial": STATS, "extended": STATS,
                                 "generator_before": STATS, "generator_after": STATS}}, ...],
     ...further keys}

where STATS is ``{"count", "mean", "median", "p90", "max"}`` in words (the Self-Lengthen counter).
The plots need the word counts themselves (``samples``: iteration -> distribution name -> counts).
Rendering needs matplotlib only for the plots, imported when they are drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

from rich.table import Table

from selflengthen.storage import Storage, join_uri

# The length distributions of an iteration, in the order they are shown, with their labels.
DISTRIBUTIONS = {
    "initial": "initial responses",
    "extended": "extended responses",
    "generator_before": "Generator, held-out, before",
    "generator_after": "Generator, held-out, after",
}
STATS = ("mean", "median", "p90", "max")
REPORT_JSON = "report.json"
REPORT_FILES = ("report.json", "report.md", "report.html")
Samples = dict[int, dict[str, list[int]]]


def plot_lengths(samples: dict[str, list[int]], title: str) -> bytes:
    """A PNG of the iteration's length distributions (overlaid histograms, shared bins)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    values = [value for counts in samples.values() for value in counts]
    figure, axes = pyplot.subplots(figsize=(7, 3.6), dpi=100)
    try:
        bins = _bins(values)
        for name, label in DISTRIBUTIONS.items():
            if samples.get(name):
                axes.hist(samples[name], bins=bins, histtype="step", linewidth=1.8, label=f"{label} (n={len(samples[name])})")
        axes.set_title(title)
        axes.set_xlabel("length (words)")
        axes.set_ylabel("texts")
        axes.legend(fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        pyplot.close(figure)


def _bins(values: list[int], count: int = 30) -> list[float]:
    top = max(values, default=0) or 1
    return [top * i / count for i in range(count + 1)]


def _format(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _length_rows(entry: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, label in DISTRIBUTIONS.items():
        stats = entry["lengths"].get(name, {})
        rows.append([label, _format(stats.get("count", 0)), *(_format(stats.get(key, 0)) for key in STATS)])
    return rows


def _count_lines(counts: dict[str, Any]) -> list[str]:
    lines = [f"{key}: {value}" for key, value in counts.items() if not isinstance(value, dict)]
    for stage, reasons in counts.get("rejected", {}).items():
        listed = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "none"
        lines.append(f"rejected in {stage}: {listed}")
    return lines


def _score_lines(entry: dict[str, Any]) -> list[str]:
    """One line per benchmark: its overall score before and after the iteration."""
    scores = entry.get("evaluation", {})
    benchmarks = sorted({name for side in scores.values() if side for name in side})
    return [
        f"{name} overall: " + ", ".join(f"{side} {_format((scores.get(side) or {}).get(name, {}).get('overall', '-'))}" for side in ("before", "after"))
        for name in benchmarks
    ]


def training_summary(figures: dict[str, Any]) -> str:
    """A training run's figures in a few words: steps and loss, or why nothing was trained."""
    if "carried_forward" in figures:
        return f"not trained, {figures['carried_forward']} carried forward: {figures['reason']}"
    loss = figures.get("train_loss")
    return f"{figures.get('steps')} steps" + (f", loss {loss:.3f}" if isinstance(loss, float) else "")


def _entry_lines(entry: dict[str, Any]) -> list[str]:
    """The bullet lines of an iteration: counts, training, scores."""
    training = [f"{role} training: {training_summary(figures)}" for role, figures in entry.get("training", {}).items()]
    return [*_count_lines(entry["counts"]), *training, *_score_lines(entry)]


def render_markdown(report: dict[str, Any], images: dict[int, str]) -> str:
    """Markdown: per iteration, counts, a length table and the plot (``images``: iteration -> src)."""
    header = f"| distribution | n | {' | '.join(STATS)} |\n|---|---:|{'---:|' * len(STATS)}"
    parts = [f"# Self-Lengthen report: {report.get('run_id', '')}".rstrip(": "), "", "Lengths in words (Self-Lengthen counter)."]
    for entry in report["iterations"]:
        parts += ["", f"## Iteration {entry['iteration']}", ""]
        parts += [f"- {line}" for line in _entry_lines(entry)]
        parts += ["", header, *("| " + " | ".join(row) + " |" for row in _length_rows(entry))]
        if entry["iteration"] in images:
            parts += ["", f"![lengths, iteration {entry['iteration']}]({images[entry['iteration']]})"]
    for key, value in report.items():
        if key not in ("iterations", "run_id"):
            parts += ["", f"## {key}", "", "```json", json.dumps(value, indent=2, ensure_ascii=False), "```"]
    return "\n".join(parts) + "\n"


def render_html(report: dict[str, Any], plots: dict[int, bytes]) -> str:
    """A standalone HTML page: the same content as the Markdown, plots embedded as base64 PNGs."""
    body = [f"<h1>Self-Lengthen report {html.escape(str(report.get('run_id', '')))}</h1>", "<p>Lengths in words (Self-Lengthen counter).</p>"]
    for entry in report["iterations"]:
        body.append(f"<h2>Iteration {entry['iteration']}</h2><ul>")
        body += [f"<li>{html.escape(line)}</li>" for line in _entry_lines(entry)]
        body.append("</ul><table><tr><th>distribution</th><th>n</th>" + "".join(f"<th>{key}</th>" for key in STATS) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in _length_rows(entry)]
        body.append("</table>")
        if entry["iteration"] in plots:
            encoded = base64.b64encode(plots[entry["iteration"]]).decode("ascii")
            body.append(f'<img alt="lengths, iteration {entry["iteration"]}" src="data:image/png;base64,{encoded}">')
    for key, value in report.items():
        if key not in ("iterations", "run_id"):
            body.append(f"<h2>{html.escape(key)}</h2><pre>{html.escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Self-Lengthen report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def draw_plots(report: dict[str, Any], samples: Samples) -> dict[int, bytes]:
    """One PNG per iteration that has samples."""
    return {
        entry["iteration"]: plot_lengths(samples[entry["iteration"]], f"Iteration {entry['iteration']}: length distributions")
        for entry in report["iterations"]
        if samples.get(entry["iteration"])
    }


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_report(storage: Storage, prefix: str, report: dict[str, Any], samples: Samples) -> dict[int, bytes]:
    """Write report.json, report.md (its plots beside it, in ``plots/``) and report.html below
    ``prefix``; returns the plots (iteration -> PNG)."""
    plots = draw_plots(report, samples)
    for iteration, png in plots.items():
        storage.write_bytes(join_uri(prefix, "plots", f"iteration-{iteration}.png"), png)
    storage.write_text(join_uri(prefix, "report.md"), render_markdown(report, {k: f"plots/iteration-{k}.png" for k in plots}))
    storage.write_text(join_uri(prefix, "report.html"), render_html(report, plots))
    storage.write_text(join_uri(prefix, REPORT_JSON), json.dumps(report, indent=2, ensure_ascii=False))
    return plots


def length_table(report: dict[str, Any]) -> Table:
    """Mean / median / p90 / max length per iteration and distribution (the CLI's closing table)."""
    table = Table(title="Lengths per iteration (words)")
    for column in ("iteration", "distribution", "n", *STATS):
        table.add_column(column, justify="left" if column == "distribution" else "right")
    for entry in report["iterations"]:
        for index, row in enumerate(_length_rows(entry)):
            table.add_row(str(entry["iteration"]) if index == 0 else "", *row, end_section=index == len(DISTRIBUTIONS) - 1)
    return table
