"""Export of a finished run: the dataset of long answers and the final model, with their cards.

Below the export folder (``export.output``, local or s3://)::

    dataset/README.md                        the dataset card (Hub YAML header, the run's provenance)
    dataset/data/extended-00000-of-00001.parquet        the selected extended responses of every iteration
    dataset/data/length_control-00000-of-00001.parquet  the length-constrained examples of the final phase
    model/                                   the final Generator as one Hugging Face model folder:
                                             safetensors, config.json, generation_config.json, the
                                             tokenizer and its chat template, README.md (the model card)

The dataset folder is what ``datasets.load_dataset(folder)`` reads as it is: the card's YAML
``configs`` block names the Parquet files of each split ("Define your splits and subsets in YAML",
https://huggingface.co/docs/datasets/repository_structure). Both splits share one schema (chat
``messages`` plus lengths), fixed in the Parquet files. The model folder holds no adapter: a LoRA
run's adapter is merged into its base, so ``AutoModelForCausalLM.from_pretrained`` and vLLM load it
as any model.

Both go to the Hugging Face Hub too when ``export.hub_repo`` (or ``push_to_hub``) names a repo: the
dataset to the dataset repo and the model to the model repo of that name, created when missing
(``HfApi.create_repo``, then one ``HfApi.create_commit`` adding every file of the folder).
The token comes from the env var ``export.token_env`` and is passed to the client only.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from selflengthen.config import RunConfig
from selflengthen.datasets import iter_records
from selflengthen.errors import DataError, StorageError
from selflengthen.orchestration.layout import FINAL_PHASE, RunLayout
from selflengthen.records import Response, SftExample
from selflengthen.report import lengthening_rows
from selflengthen.stats import length_stats
from selflengthen.storage import Storage, get_storage, join_uri

DATASET_DIR = "dataset"
MODEL_DIR = "model"
CARD_NAME = "README.md"
SPLITS = {
    "extended": "the selected extended responses of every iteration (what the Generator and the Extender were trained on)",
    "length_control": "the length-constrained examples of the final phase (the final SFT's data)",
}
# Files a model folder must not carry: a LoRA adapter would make loaders treat it as one.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
# The Hub's size_categories values (https://huggingface.co/docs/hub/datasets-cards), by upper bound.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


@dataclass
class ExportResult:
    """Where the export went: the dataset and model URIs, rows per split, Hub URLs per repo type."""

    dataset: str
    model: str
    rows: dict[str, int]
    hub: dict[str, str] = field(default_factory=dict)


def export_output(config: RunConfig) -> str:
    return config.export.output or RunLayout(config).export()


# --------------------------------------------------------------------------- the dataset


def _parquet_schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("id", pa.string()),
            ("iteration", pa.int32()),
            ("language", pa.string()),
            ("messages", pa.list_(message)),
            ("words", pa.int64()),
            ("initial_words", pa.int64()),
            ("constraint", pa.string()),
        ]
    )


def dataset_rows(storage: Storage, config: RunConfig) -> dict[str, Iterator[dict[str, Any]]]:
    """The rows of each split, read from the run's selected and length-control datasets a part at a time."""
    layout = RunLayout(config)
    extended = (
        {
            "id": record.id,
            "iteration": iteration,
            "language": record.language,
            "messages": [{"role": "user", "content": record.query}, {"role": "assistant", "content": record.text}],
            "words": record.words,
            "initial_words": record.initial_words,
            "constraint": None,
        }
        for iteration in range(1, config.iterations + 1)
        for record in iter_records(storage, layout.iteration(iteration, "selected"), Response)
    )
    length_control = (
        {
            "id": example.id,
            "iteration": example.iteration,
            "language": example.language,
            "messages": [message.model_dump() for message in example.messages],
            "words": example.meta.get("words"),
            "initial_words": None,
            "constraint": example.meta.get("constraint", {}).get("text"),
        }
        for example in iter_records(storage, layout.phase(FINAL_PHASE, "length-control"), SftExample)
    )
    return {"extended": extended, "length_control": length_control}


@dataclass
class SplitFigures:
    """What the cards say of a split: its rows and their lengths (words) per iteration."""

    rows: int = 0
    words: dict[int, list[int]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if row["words"] is not None:
            self.words.setdefault(row["iteration"], []).append(row["words"])

    def all_words(self) -> list[int]:
        return [words for by_iteration in self.words.values() for words in by_iteration]


def _split_file(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


def size_category(rows: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if rows < bound), "n>1T")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else ("-" if value is None else str(value))

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def _front_matter(header: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n"


def _checks_lines(config: RunConfig, report: dict[str, Any]) -> list[str]:
    """The checks that filtered the data, as configured, and what each rejected per iteration."""
    lines = []
    for language in config.languages:
        checks = getattr(config.checks, language)
        enabled = [name for name, on in (("ending punctuation", checks.check_ending), ("repeated n-grams", checks.check_repetition), ("meta words", checks.check_meta)) if on]
        lines.append(f"- {language}: {', '.join(enabled) or 'no text checks'} (n-gram n = {checks.ngram_n})")
    lines.append(f"- extension kept when the text grew more than {config.extend.min_ratio}x")
    lines.append(
        "- length-biased sampling of the extended responses" if config.select.length_biased else "- every extended response passing the checks kept"
    )
    lines.append(f"- length-constrained examples from responses of {config.length_control.min_words} to {config.length_control.max_words} words")
    for entry in report["iterations"]:
        rejected = "; ".join(
            f"{stage}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
            for stage, reasons in entry["counts"]["rejected"].items()
            if reasons
        )
        lines.append(f"- iteration {entry['iteration']} rejected: {rejected or 'none'}")
    return lines


def dataset_card(config: RunConfig, report: dict[str, Any], figures: dict[str, SplitFigures], hub_repo: str | None) -> str:
    """README.md of the dataset: the Hub's YAML header and the run's provenance and figures."""
    total = sum(split.rows for split in figures.values())
    header = {
        "pretty_name": f"Self-Lengthen long answers ({config.run_id})",
        "language": list(config.languages),
        "license": config.export.license,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(total)],
        "tags": ["self-lengthen", "long-form-generation", "synthetic"],
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": _split_file(split)} for split in SPLITS]}],
    }
    per_iteration = []
    for iteration in range(1, config.iterations + 1):
        stats = length_stats(figures["extended"].words.get(iteration, []))
        per_iteration.append([iteration, stats["count"], stats["mean"], stats["median"], stats["p90"], stats["max"]])
    control = length_stats(figures["length_control"].all_words())
    source = hub_repo or "path/to/this/folder"
    parts = [
        _front_matter(header),
        f"# {header['pretty_name']}",
        "",
        "Long answers written by a model that taught itself to write longer with Self-Lengthen: a Generator "
        "answers, an Extender lengthens the answers, both are fine-tuned on the longer texts, and the loop repeats. "
        "Lengths are in words (CJK characters for Chinese).",
        "",
        "## Splits",
        "",
        *_table(["split", "rows", "what"], [[split, figures[split].rows, what] for split, what in SPLITS.items()]),
        "",
        "Columns: `id`, `iteration`, `language`, `messages` (user query, assistant answer), `words` (answer length), "
        "`initial_words` (length before extension; extended split), `constraint` (the length constraint in the query; length_control split).",
        "",
        "```python",
        "from datasets import load_dataset",
        f'data = load_dataset("{source}")',
        "```",
        "",
        "## Provenance",
        "",
        f"- run: `{config.run_id}`",
        f"- base model: `{config.model.base}`",
        f"- iterations: {config.iterations}",
        f"- config fingerprint: `{config.config_hash()}`",
        f"- training: {config.training.method}",
        "",
        "## Lengths per iteration (extended split)",
        "",
        *_table(["iteration", "rows", "mean", "median", "p90", "max"], per_iteration),
        "",
        f"Length-constrained examples: {control['count']} rows, mean {control['mean']}, median {control['median']}, p90 {control['p90']}, max {control['max']} words.",
        "",
        "## Checks that filtered it",
        "",
        *_checks_lines(config, report),
        "",
    ]
    return "\n".join(parts)


def write_dataset(
    folder: Path, config: RunConfig, report: dict[str, Any], rows: dict[str, Iterator[dict[str, Any]]], hub_repo: str | None
) -> dict[str, SplitFigures]:
    """Each split's Parquet file, written ``storage.shard_size`` rows at a time (a row group each,
    so memory holds one), then the card; returns the splits' figures."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    figures = {split: SplitFigures() for split in SPLITS}
    for split in SPLITS:
        path = folder / _split_file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, schema) as writer:
            while batch := list(itertools.islice(rows[split], config.storage.shard_size)):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                for row in batch:
                    figures[split].add(row)
    (folder / CARD_NAME).write_text(dataset_card(config, report, figures, hub_repo), encoding="utf-8")
    return figures


# --------------------------------------------------------------------------- the model


def final_model_folder(config: RunConfig, folder: Path) -> None:
    """Write the final Generator (the final SFT's result) as a full model folder at ``folder``:
    its merged or full model as it is, else its LoRA adapter merged into the base."""
    from transformers import AutoTokenizer, GenerationConfig

    from selflengthen.modelio import localize
    from selflengthen.training.model import merge_adapter
    from selflengthen.training.output import read_trained_model

    storage = get_storage(config.storage)
    output = RunLayout(config).phase(FINAL_PHASE, "train", "generator")
    trained = read_trained_model(storage, output)
    if trained is None:
        raise DataError(f"no finished final training at {output}: the run is not finished (or not this config's run)")
    if trained.model:
        shutil.copytree(localize(trained.model, config.storage), folder, ignore=shutil.ignore_patterns(*ADAPTER_FILES, ".complete"))
    elif trained.adapter:
        adapter = localize(trained.adapter, config.storage)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=config.training.trust_remote_code)
        merge_adapter(localize(trained.base_model, config.storage), adapter, folder, trust_remote_code=config.training.trust_remote_code, tokenizer=tokenizer)
    else:
        raise DataError(f"the final training at {output} names neither a model nor an adapter")
    model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not model_config.get("architectures"):
        raise DataError(f"the final model of {output} has no architectures in its config.json")
    if not (folder / "generation_config.json").exists():
        from transformers import AutoConfig

        GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(folder))).save_pretrained(str(folder))


def model_card(config: RunConfig, report: dict[str, Any], rows: dict[str, int], hub_repo: str | None) -> str:
    """README.md of the model: the Hub's YAML header, method, data, scores and length growth."""
    from selflengthen.modelio import hub_model_id

    header: dict[str, Any] = {"library_name": "transformers", "license": config.export.license, "pipeline_tag": "text-generation"}
    base_id = hub_model_id(config.model.base)
    if base_id:
        header["base_model"] = base_id
    header["tags"] = ["self-lengthen", "long-form-generation"]
    if hub_repo:
        header["datasets"] = [hub_repo]
    growth = lengthening_rows(report)
    benchmarks = sorted({name for row in growth for name in row["scores"]})
    final_scores = report.get("final", {}).get("evaluation", {})
    parts = [
        _front_matter(header),
        f"# Self-Lengthen model ({config.run_id})",
        "",
        f"`{config.model.base}` after {config.iterations} Self-Lengthen iteration(s) and a final length-following SFT "
        f"({config.training.method} fine-tuning{', the adapter merged into the base' if config.training.method == 'lora' else ''}). "
        "A Generator answers, an Extender lengthens its answers, both are fine-tuned on the longer texts, the loop repeats; "
        "the final Generator is then trained on length-constrained queries.",
        "",
        f"- base model: `{config.model.base}`",
        f"- data: {rows['extended']} selected extended responses, {rows['length_control']} length-constrained examples"
        + (f" (dataset `{hub_repo}`)" if hub_repo else ""),
        f"- config fingerprint: `{config.config_hash()}`",
        "",
        "## Answer length per iteration",
        "",
        "The Generator's answers to the run's fixed held-out queries (words):",
        "",
        *_table(["model", "answers", "mean", "median", *benchmarks], [[row["stage"], row["count"], row["mean"], row["median"], *(row["scores"].get(b) for b in benchmarks)] for row in growth]),
        "",
        "## Evaluation",
        "",
        *(
            _table(["evaluation", "benchmark", "overall"], [[side, name, scores.get("overall")] for side, by in final_scores.items() for name, scores in by.items()])
            if final_scores
            else ["No evaluation ran (eval.enabled is false)."]
        ),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{hub_repo or "path/to/this/folder"}")',
        "```",
        "",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- the Hub


def push_folder(folder: Path, repo: str, repo_type: str, config: RunConfig, message: str) -> str:
    """Upload ``folder`` to the Hub repo ``repo`` (created when missing); returns the repo URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = os.environ.get(config.export.token_env)
    if not token:
        raise StorageError(f"pushing to the Hugging Face Hub needs a token in the env var {config.export.token_env} (export.token_env); it is not set")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, repo_type=repo_type, private=config.export.private, exist_ok=True)
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path)) for path in files]
        api.create_commit(repo, operations=operations, commit_message=message, repo_type=repo_type)
    except OfflineModeIsEnabled:
        raise StorageError(f"cannot push {repo_type} {repo} to the Hugging Face Hub: HF_HUB_OFFLINE is set") from None
    except (HfHubHTTPError, OSError) as error:
        raise StorageError(f"cannot push {repo_type} {repo} to the Hugging Face Hub at {constants.ENDPOINT}: {type(error).__name__}: {error}") from None
    return str(url)


# --------------------------------------------------------------------------- the whole export


def export_run(config: RunConfig, *, output: str | None = None, push_to_hub: str | None = None) -> ExportResult:
    """Export the finished run of ``config`` to ``output`` (default :func:`export_output`) and to the
    Hub repo ``push_to_hub`` (default ``export.hub_repo``; none: no push). Everything is made in a
    local work folder first, so a failure leaves no partial export behind."""
    from selflengthen.orchestration.reporting import build_report

    storage = get_storage(config.storage)
    target = output or export_output(config)
    hub_repo = push_to_hub or config.export.hub_repo
    report = build_report(config).data
    with tempfile.TemporaryDirectory(prefix="selflengthen-export-") as work:
        dataset, model = Path(work) / DATASET_DIR, Path(work) / MODEL_DIR
        figures = write_dataset(dataset, config, report, dataset_rows(storage, config), hub_repo)
        final_model_folder(config, model)
        counts = {split: split_figures.rows for split, split_figures in figures.items()}
        (model / CARD_NAME).write_text(model_card(config, report, counts, hub_repo), encoding="utf-8")
        hub = {}
        if hub_repo:
            message = f"Self-Lengthen run {config.run_id} (config {config.config_hash()})"
            hub = {kind: push_folder(folder, hub_repo, kind, config, message) for kind, folder in (("dataset", dataset), ("model", model))}
        for name, folder in ((DATASET_DIR, dataset), (MODEL_DIR, model)):
            storage.delete_prefix(join_uri(target, name))
            storage.upload_dir(folder, join_uri(target, name))
    return ExportResult(dataset=join_uri(target, DATASET_DIR), model=join_uri(target, MODEL_DIR), rows=counts, hub=hub)
