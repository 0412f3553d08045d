"""The report step over a finished run's layout."""

import json
from pathlib import Path

from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import write_records
from selflengthen.orchestration.layout import RunLayout
from selflengthen.orchestration.reporting import build_report, publish_report
from selflengthen.records import Failure, Query, stable_id
from selflengthen.storage import get_storage, join_uri
from tests.orchestration.helpers import run_config
from tests.stages.helpers import essay, response


def write(config, uri: str, records, *, failures=(), metrics=None) -> None:
    write_records(get_storage(), uri, records, stage="test", fingerprint=Fingerprint.of({}), shard_size=8, failures=failures, metrics=metrics)


def answers(words: list[int], kind: str = "initial") -> list:
    return [response(essay(n, seed=i), query=f"q{i}", index=i, kind=kind) for i, n in enumerate(words)]


def finished_run(config) -> None:
    """Every artefact the report reads, for a run of ``config.iterations`` iterations."""
    layout = RunLayout(config)
    storage = get_storage()
    for generation in range(config.iterations + 1):
        write(config, layout.heldout(generation), answers([50 + 20 * generation, 60 + 20 * generation], "heldout"))
    for k in range(1, config.iterations + 1):
        queries = [Query(id=stable_id(k, i), text=f"Write about {i}.", language="en") for i in range(3)]
        write(config, layout.iteration(k, "queries"), queries, failures=[Failure(id="f", stage="self-instruct", reason="duplicate")])
        given_up = [Failure(id=f"g{i}", stage="generate", reason="no_ending") for i in range(2)]
        write(config, layout.iteration(k, "initial"), answers([40, 50, 60]), failures=given_up)
        write(config, layout.iteration(k, "extended"), answers([90, 100], "extended"), failures=[Failure(id="e", stage="extend", reason="below_min_ratio")])
        write(config, layout.iteration(k, "selected"), answers([100], "extended"), metrics={"rejected": {"length_biased_sampling": 1}})
        for role in ("generator", "extender"):
            storage.write_text(join_uri(layout.iteration(k, "train", role), "metrics.json"), json.dumps({"steps": 4, "train_loss": 2.5}))
    write(config, layout.heldout_final(), answers([130, 150], "heldout"))
    write(config, layout.phase("final", "collected"), answers([70, 80], "collected"))
    write(config, layout.phase("final", "length-control"), [], metrics={"examples": 0})
    storage.write_text(join_uri(layout.phase("final", "train", "generator"), "metrics.json"), json.dumps({"steps": 2}))
    storage.write_text(join_uri(layout.evaluation("final"), "summary.json"), json.dumps({"iteration": None, "benchmarks": {"longen": {"overall": 0.4}}}))


def test_report_has_counts_and_lengths_per_iteration(tmp_path: Path) -> None:
    config = run_config(str(tmp_path))
    finished_run(config)
    built = build_report(config)
    first, second = built.data["iterations"]
    assert first["iteration"] == 1 and second["iteration"] == 2
    assert first["counts"] == {
        "queries": 3,
        "responses": 3,
        "extended": 2,
        "accepted": 1,
        "rejected": {"generation": {"no_ending": 2}, "extension": {"below_min_ratio": 1}, "selection": {"length_biased_sampling": 1}},
    }
    assert first["lengths"]["initial"]["mean"] == 50.0
    assert first["lengths"]["generator_before"]["max"] == 60 and first["lengths"]["generator_after"]["max"] == 80
    assert second["lengths"]["generator_before"] == first["lengths"]["generator_after"]
    assert set(first["lengths"]["extended"]) == {"count", "mean", "median", "p90", "max"}
    assert first["training"]["generator"] == {"steps": 4, "train_loss": 2.5, "tokens_seen": None, "tokens_per_s": None}
    assert built.data["final"]["evaluation"] == {"final": {"longen": {"overall": 0.4}}}
    assert built.data["final"]["collected"]["count"] == 2
    assert built.metrics()["iteration2"]["lengths"]["generator_after"]["mean"] == 95.0
    assert sorted(built.samples[1]) == ["extended", "generator_after", "generator_before", "initial"]


def test_publish_writes_the_files_and_the_kfp_markdown(tmp_path: Path) -> None:
    config = run_config(str(tmp_path / "runs"))
    finished_run(config)
    markdown = tmp_path / "kfp" / "markdown"
    uri = publish_report(config, build_report(config), markdown_path=str(markdown))
    assert uri == RunLayout(config).report("report.json")
    assert json.loads(Path(uri).read_text())["iterations"][1]["iteration"] == 2
    # the lengthening summary's plot, then one per iteration
    assert (Path(uri).parent / "report.html").read_text().count("data:image/png;base64,") == 3
    assert markdown.read_text().count("](data:image/png;base64,") == 3
    assert (Path(uri).parent / "plots" / "lengthening.png").is_file()


def test_per_iteration_scores_before_and_after(tmp_path: Path) -> None:
    config = run_config(str(tmp_path))
    finished_run(config)
    layout, storage = RunLayout(config), get_storage()
    for generation, score in enumerate((20.0, 35.5, 50.25)):
        summary = {"iteration": generation, "benchmarks": {"longen": {"overall": score, "count": 2}}}
        storage.write_text(join_uri(layout.evaluation(f"generator-{generation}"), "summary.json"), json.dumps(summary))
    built = build_report(config)
    first, second = built.data["iterations"]
    assert first["evaluation"]["before"]["longen"]["overall"] == 20.0 and first["evaluation"]["after"]["longen"]["overall"] == 35.5
    assert second["evaluation"]["before"] == first["evaluation"]["after"]
    assert built.data["final"]["evaluation"]["before"]["longen"]["overall"] == 50.25
    assert built.metrics()["iteration2"]["evaluation"]["after"]["longen"]["overall"] == 50.25
    uri = publish_report(config, built)
    assert "- longen overall: before 35.5, after 50.2" in (Path(uri).parent / "report.md").read_text()
    assert "longen overall: before 20.0, after 35.5" in (Path(uri).parent / "report.html").read_text()


def test_no_scores_when_no_iteration_was_evaluated(tmp_path: Path) -> None:
    config = run_config(str(tmp_path))
    finished_run(config)
    built = build_report(config)
    assert all("evaluation" not in entry for entry in built.data["iterations"])
    assert "evaluation" not in built.metrics()["iteration1"]


def test_training_lines_say_when_a_model_was_carried_forward(tmp_path: Path) -> None:
    config = run_config(str(tmp_path))
    finished_run(config)
    carried = {"steps": 0, "examples": 0, "carried_forward": "/models/base", "reason": "the generator SFT data holds no examples"}
    get_storage().write_text(join_uri(RunLayout(config).iteration(1, "train", "generator"), "metrics.json"), json.dumps(carried))
    built = build_report(config)
    assert built.data["iterations"][0]["training"]["generator"]["carried_forward"] == "/models/base"
    markdown = (Path(publish_report(config, built)).parent / "report.md").read_text()
    assert "- generator training: not trained, /models/base carried forward: the generator SFT data holds no examples" in markdown
    assert "- extender training: 4 steps, loss 2.500" in markdown


def test_the_report_opens_with_the_lengthening_and_its_figures_are_report_json_s(tmp_path: Path) -> None:
    config = run_config(str(tmp_path / "runs"))
    finished_run(config)
    layout, storage = RunLayout(config), get_storage()
    for generation, score in enumerate((20.0, 35.5, 50.25)):
        summary = {"iteration": generation, "benchmarks": {"longen": {"overall": score, "count": 2}}}
        storage.write_text(join_uri(layout.evaluation(f"generator-{generation}"), "summary.json"), json.dumps(summary))
    markdown = tmp_path / "kfp" / "markdown"
    built = build_report(config)
    uri = publish_report(config, built, markdown_path=str(markdown))
    saved = json.loads(Path(uri).read_text())
    rows = saved["lengthening"]
    # held-out answers: 50/60 before, +20 words per iteration, 130/150 after the final SFT
    assert [(row["stage"], row["mean"], row["median"]) for row in rows] == [
        ("before iteration 1", 55.0, 55.0), ("after iteration 1", 75.0, 75.0), ("after iteration 2", 95.0, 95.0), ("after final SFT", 140.0, 140.0),
    ]
    assert [row["scores"].get("longen") for row in rows] == [20.0, 35.5, 50.25, 0.4]
    assert rows[1]["mean"] == saved["iterations"][0]["lengths"]["generator_after"]["mean"]
    assert rows[-1]["median"] == saved["final"]["heldout"]["median"]
    table = [f"| {row['stage']} | {row['count']} | {row['mean']:.1f} | {row['median']:.1f} | {row['scores']['longen']:.1f} |" for row in rows]
    text = markdown.read_text()
    assert text.index("## Answer length across iterations") < text.index("## Iteration 1")
    assert all(line in text for line in table), text
    page = (Path(uri).parent / "report.html").read_text()
    assert page.index("after final SFT") < page.index("<h2>Iteration 1</h2>")
    assert "<td>after iteration 2</td><td>2</td><td>95.0</td><td>95.0</td><td>50.2</td>" in page
    # the final phase as tables, no JSON dump
    assert "<h3>Evaluation</h3>" in page and "<td>final</td><td>longen</td><td>0.4</td>" in page and "<pre>" not in page
    metrics = built.metrics()
    assert metrics["lengthening"]["after_final_SFT"] == {"count": 2, "mean": 140.0, "median": 140.0, "longen": 0.4}
    assert list(metrics)[0] == "lengthening"
