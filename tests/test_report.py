"""The run report: JSON/Markdown/HTML files, embedded plots, the CLI's length table."""

import base64
import json

from rich.console import Console

from selflengthen.report import DISTRIBUTIONS, length_table, plot_lengths, render_html, render_markdown, write_report
from selflengthen.stats import length_stats
from selflengthen.storage import get_storage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_report() -> tuple[dict, dict]:
    samples = {
        1: {"initial": [100, 120, 140], "extended": [200, 260], "generator_before": [90, 110], "generator_after": [130, 150]},
        2: {"initial": [150, 160], "extended": [300, 320, 340], "generator_before": [130, 150], "generator_after": [180, 200]},
    }
    report = {
        "run_id": "unit",
        "iterations": [
            {
                "iteration": iteration,
                "counts": {
                    "queries": 4,
                    "responses": len(values["initial"]),
                    "extended": len(values["extended"]),
                    "accepted": 1,
                    "rejected": {"generation": {"no_ending": 2}, "extension": {}, "selection": {"length_biased_sampling": 1}},
                },
                "lengths": {name: length_stats(words) for name, words in values.items()},
            }
            for iteration, values in samples.items()
        ],
        "final": {"evaluation": {"final": {"longen": {"overall": 0.5}}}},
    }
    return report, samples


def test_plot_is_a_png() -> None:
    png = plot_lengths({"initial": [1, 2, 3], "extended": [4, 5]}, "title")
    assert png.startswith(PNG_SIGNATURE)


def test_markdown_has_counts_lengths_images_and_further_keys() -> None:
    report, _ = sample_report()
    text = render_markdown(report, {"iteration-1": "plots/iteration-1.png"})
    assert "## Iteration 1" in text and "## Iteration 2" in text
    assert "rejected in generation: no_ending 2" in text
    assert "| extended responses | 2 | 230.0 |" in text
    assert "![lengths, iteration 1](plots/iteration-1.png)" in text
    assert "iteration-2.png" not in text
    assert "## Final phase" in text and "| final | longen | 0.5 | - |" in text
    assert text.index("## Answer length across iterations") < text.index("## Iteration 1")
    assert "| after iteration 2 | 2 | 190.0 | 190.0 |" in text


def test_html_embeds_plots_as_base64() -> None:
    report, samples = sample_report()
    png = plot_lengths(samples[1], "one")
    page = render_html(report, {"iteration-1": png})
    encoded = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(encoded) == png
    assert page.startswith("<!doctype html>") and "<h2>Iteration 2</h2>" in page


def test_write_report_writes_every_file(tmp_path) -> None:
    report, samples = sample_report()
    plots = write_report(get_storage(), str(tmp_path), report, samples)
    assert sorted(plots) == ["iteration-1", "iteration-2", "lengthening"]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (tmp_path / "plots" / "iteration-2.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "plots/iteration-2.png" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 3


def test_length_table_lists_every_distribution_per_iteration() -> None:
    report, _ = sample_report()
    console = Console(width=160, record=True)
    console.print(length_table(report))
    text = console.export_text()
    for label in DISTRIBUTIONS.values():
        assert text.count(label) == 2
    assert "155.0" in text  # mean of iteration 2's initial responses
