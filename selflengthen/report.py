"""The run report: ``report.json``, ``report.md`` and ``report.html`` with length plots, and the
length table the CLI prints.

A report is a JSON-able dict::

    {"iterations": [{"iteration": 1,
                     "counts": {"queries": ..., "responses": ..., "extended": ..., "accepted": ...,
                                "rejected": {"generation": {reason: n}, "extension": {...}, "selection": {...}}},
                     "lengths": {"initial": STATS, "extended": STATS,
                                 "generator_before": STATS, "generator_after": STATS},
                     "evaluation": {"before": {benchmark: summary}, "after": {...}}}, ...],
     "final": {"heldout": STATS, "evaluation": {"before": ..., "final": ...}, ...},
     "lengthening": [LENGTHENING ROW, ...],
     ...further keys}

where STATS is ``{"count", "mean", "median", "p90", "max"}`` in words (the Self-Lengthen counter).
The lengthening rows (:func:`lengthening_rows`) are what the report opens with: the Generator's
held-out answer length before iteration 1, after each iteration and after the final SFT, with the
benchmark scores of the same model. The plots need the word counts themselves (``samples``:
iteration -> distribution name -> counts). Markdown and HTML are rendered from one list of blocks
(:func:`report_blocks`), so both show the same figures. Rendering needs matplotlib only for the
plots, imported when they are drawn.
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
LENGTHENING_PLOT = "lengthening"
Samples = dict[int, dict[str, list[int]]]
# A block of the rendered report: ("h2", text), ("p", text), ("ul", [lines]),
# ("table", header, rows), ("img", plot name, alt text).
Block = tuple[Any, ...]


def plot_name(iteration: int) -> str:
    return f"iteration-{iteration}"


# --------------------------------------------------------------------------- figures


def _overall(scores: dict[str, Any] | None) -> dict[str, float]:
    return {name: summary["overall"] for name, summary in (scores or {}).items() if isinstance(summary, dict) and "overall" in summary}


def lengthening_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The Generator's held-out answer length (and its benchmark scores) before iteration 1, after
    each iteration and after the final SFT (when its held-out answers exist)."""
    entries = report["iterations"]
    if not entries:
        return []

    def row(stage: str, stats: dict[str, Any], scores: dict[str, Any] | None) -> dict[str, Any]:
        return {"stage": stage, "count": stats.get("count", 0), "mean": stats.get("mean", 0.0), "median": stats.get("median", 0.0), "scores": _overall(scores)}

    first = entries[0]
    rows = [row("before iteration 1", first["lengths"]["generator_before"], first.get("evaluation", {}).get("before"))]
    rows += [row(f"after iteration {e['iteration']}", e["lengths"]["generator_after"], e.get("evaluation", {}).get("after")) for e in entries]
    final = report.get("final", {})
    if "heldout" in final:
        rows.append(row("after final SFT", final["heldout"], final.get("evaluation", {}).get("final")))
    return rows


def _benchmarks(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({name for row in rows for name in row["scores"]})


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_lengthening(rows: list[dict[str, Any]]) -> bytes:
    """A PNG: mean and median held-out answer length per stage (and the benchmark scores beside)."""
    pyplot = _pyplot()
    benchmarks = _benchmarks(rows)
    figure, axes = pyplot.subplots(1, 2 if benchmarks else 1, figsize=(10 if benchmarks else 7, 3.6), dpi=100, squeeze=False)
    try:
        labels = [row["stage"].replace("iteration ", "it. ") for row in rows]
        positions = list(range(len(rows)))
        lengths = axes[0][0]
        for key in ("mean", "median"):
            lengths.plot(positions, [row[key] for row in rows], marker="o", linewidth=2, label=key)
        lengths.set_title("Generator's held-out answer length")
        lengths.set_ylabel("length (words)")
        lengths.set_ylim(bottom=0)
        lengths.legend(fontsize=8)
        if benchmarks:
            scores = axes[0][1]
            for name in benchmarks:
                scores.plot(positions, [row["scores"].get(name, float("nan")) for row in rows], marker="s", linewidth=2, label=name)
            scores.set_title("benchmark scores (overall)")
            scores.legend(fontsize=8)
        for axis in axes[0]:
            axis.set_xticks(positions, labels, rotation=20, fontsize=8)
            axis.grid(alpha=0.3)
        return _png(figure)
    finally:
        pyplot.close(figure)


def plot_lengths(samples: dict[str, list[int]], title: str) -> bytes:
    """A PNG of the iteration's length distributions: one box per distribution, every text a dot."""
    pyplot = _pyplot()
    shown = [(label, samples[name]) for name, label in DISTRIBUTIONS.items() if samples.get(name)]
    figure, axes = pyplot.subplots(figsize=(7, 0.6 + 0.7 * max(len(shown), 1)), dpi=100)
    try:
        if shown:
            positions = list(range(1, len(shown) + 1))
            axes.boxplot([values for _, values in shown], positions=positions, orientation="horizontal", widths=0.5, showmeans=True)
            for position, (_, values) in zip(positions, shown):
                offsets = [position + 0.18 * ((index % 5) - 2) / 2 for index in range(len(values))]
                axes.scatter(values, offsets, s=12, alpha=0.6, color="tab:blue")
            axes.set_yticks(positions, [f"{label} (n={len(values)})" for label, values in shown], fontsize=8)
            axes.invert_yaxis()  # the first distribution on top
        axes.set_title(title)
        axes.set_xlabel("length (words)")
        axes.set_xlim(left=0)
        axes.grid(axis="x", alpha=0.3)
        return _png(figure)
    finally:
        pyplot.close(figure)


def draw_plots(report: dict[str, Any], samples: Samples) -> dict[str, bytes]:
    """The plots by name: the lengthening summary, then one box plot per iteration with samples."""
    plots = {}
    rows = lengthening_rows(report)
    if rows:
        plots[LENGTHENING_PLOT] = plot_lengthening(rows)
    for entry in report["iterations"]:
        if samples.get(entry["iteration"]):
            plots[plot_name(entry["iteration"])] = plot_lengths(samples[entry["iteration"]], f"Iteration {entry['iteration']}: length distributions")
    return plots


# --------------------------------------------------------------------------- blocks


def _format(value: Any) -> str:
    if value is None:
        return "-"
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


def _flat_rows(value: Any, prefix: str = "") -> list[list[str]]:
    """A nested mapping as (dotted key, value) rows."""
    if isinstance(value, dict):
        return [row for key, inner in value.items() for row in _flat_rows(inner, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list):
        return [[prefix, ", ".join(_format(item) for item in value)]]
    return [[prefix, _format(value)]]


def _final_blocks(final: dict[str, Any]) -> list[Block]:
    titles = {
        "heldout": "Final model, held-out answers (words)",
        "collected": "Final collection (words)",
        "length_control": "Length-control data",
        "training": "Final training",
    }
    blocks: list[Block] = [("h2", "Final phase")]
    for key, value in final.items():
        if key == "evaluation":
            rows = [
                [side, name, *(_format(summary.get(field)) for field in ("overall", "count"))]
                for side, by_benchmark in value.items()
                for name, summary in (by_benchmark or {}).items()
            ]
            blocks += [("h3", "Evaluation"), ("table", ["evaluation", "benchmark", "overall", "prompts"], rows)]
        else:
            blocks += [("h3", titles.get(key, key)), ("table", ["figure", "value"], _flat_rows(value))]
    return blocks


def report_blocks(report: dict[str, Any]) -> list[Block]:
    """The report as blocks, in reading order: the lengthening at a glance, the iterations, the
    final phase, further keys."""
    rows = lengthening_rows(report)
    benchmarks = _benchmarks(rows)
    title = f"Self-Lengthen report: {report.get('run_id', '')}".rstrip(": ")
    blocks: list[Block] = [("h1", title), ("p", "Lengths in words (Self-Lengthen counter)" + (f"; config {report['config_hash']}." if "config_hash" in report else "."))]
    if rows:
        header = ["model", "answers", "mean", "median", *(f"{name} (overall)" for name in benchmarks)]
        table = [[row["stage"], _format(row["count"]), _format(row["mean"]), _format(row["median"]), *(_format(row["scores"].get(name)) for name in benchmarks)] for row in rows]
        blocks += [
            ("h2", "Answer length across iterations"),
            ("p", "The Generator's answers to the run's fixed held-out queries, before iteration 1, after each iteration and after the final SFT."),
            ("glance", ("table", header, table), ("img", LENGTHENING_PLOT, "held-out answer length per iteration")),
        ]
    for entry in report["iterations"]:
        blocks += [
            ("h2", f"Iteration {entry['iteration']}"),
            ("ul", _entry_lines(entry)),
            ("table", ["distribution", "n", *STATS], _length_rows(entry)),
            ("img", plot_name(entry["iteration"]), f"lengths, iteration {entry['iteration']}"),
        ]
    if report.get("final"):
        blocks += _final_blocks(report["final"])
    for key, value in report.items():
        if key not in ("iterations", "run_id", "config_hash", "final", "lengthening"):
            blocks += [("h2", key), ("table", ["figure", "value"], _flat_rows(value))]
    return blocks


# --------------------------------------------------------------------------- rendering


def _markdown(block: Block, images: dict[str, str]) -> list[str]:
    kind = block[0]
    if kind in ("h1", "h2", "h3"):
        return ["#" * int(kind[1]) + " " + block[1], ""]
    if kind == "p":
        return [block[1], ""]
    if kind == "ul":
        return [*(f"- {line}" for line in block[1]), ""]
    if kind == "table":
        header, rows = block[1], block[2]
        align = "|---|" + "---:|" * (len(header) - 1)
        return ["| " + " | ".join(header) + " |", align, *("| " + " | ".join(row) + " |" for row in rows), ""]
    if kind == "img":
        return [f"![{block[2]}]({images[block[1]]})", ""] if block[1] in images else []
    return [line for inner in block[1:] for line in _markdown(inner, images)]  # glance


def render_markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    """Markdown of the report (``images``: plot name -> src; plots without one are left out)."""
    lines = [line for block in report_blocks(report) for line in _markdown(block, images)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _html(block: Block, plots: dict[str, bytes]) -> str:
    kind = block[0]
    if kind in ("h1", "h2", "h3", "p"):
        return f"<{kind}>{html.escape(block[1])}</{kind}>"
    if kind == "ul":
        return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in block[1]) + "</ul>"
    if kind == "table":
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block[1])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block[2])
        return f"<table><tr>{head}</tr>{body}</table>"
    if kind == "img":
        return f'<img alt="{html.escape(block[2])}" src="{data_uri(plots[block[1]])}">' if block[1] in plots else ""
    return '<div class="glance">' + "".join(_html(inner, plots) for inner in block[1:]) + "</div>"


STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    ".glance{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}"
)


def render_html(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    """A standalone HTML page: the same blocks as the Markdown, plots embedded as base64 PNGs."""
    body = "".join(_html(block, plots) for block in report_blocks(report))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Self-Lengthen report</title><style>{STYLE}</style></head><body>{body}</body></html>\n"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_report(storage: Storage, prefix: str, report: dict[str, Any], samples: Samples) -> dict[str, bytes]:
    """Write report.json, report.md (its plots beside it, in ``plots/``) and report.html below
    ``prefix``; returns the plots (name -> PNG)."""
    plots = draw_plots(report, samples)
    for name, png in plots.items():
        storage.write_bytes(join_uri(prefix, "plots", f"{name}.png"), png)
    storage.write_text(join_uri(prefix, "report.md"), render_markdown(report, {name: f"plots/{name}.png" for name in plots}))
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
