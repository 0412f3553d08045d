"""Benchmark prompt sets and prediction files: where they come from and what each row must hold.

Benchmarks (README of the shared benchmark copies): LonGen rows have ``query`` and ``constraint``
(plus ``type``, ``language``, ``range``); LongBench-Write and LongWrite-Ruler rows have ``prompt`` and
the required ``length``. A prediction file holds the same rows with a ``response`` added; it is a
JSONL file or a dataset folder written by ``eval generate`` (part files and a manifest).

Sources: a local path, an ``s3://`` URI, or ``hf://datasets/<owner>/<repo>/<path in repo>``, which is
downloaded with huggingface_hub (a clear error when the hub cannot be reached).
"""

from __future__ import annotations

from importlib import resources

from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from selflengthen.config import Language
from selflengthen.datasets import load_records, parse_jsonl
from selflengthen.errors import DataError, StorageError
from selflengthen.evaluation.constraints import ConstraintType, LengthConstraint, parse_constraint
from selflengthen.records import Record
from selflengthen.storage import Storage
from selflengthen.text import detect_language

BenchmarkName = Literal["longen", "longbench-write", "longwrite-ruler"]
BENCHMARKS: tuple[BenchmarkName, ...] = ("longen", "longbench-write", "longwrite-ruler")
HF_DATASETS_SCHEME = "hf://datasets/"
# The judge's rubrics (selflengthen.evaluation.judge.RUBRICS), named here beside the benchmarks so that
# the command line can offer them without loading the judge's HTTP client.
RubricName = Literal["longbench-write", "self-lengthen"]


class LonGenRow(BaseModel):
    """A LonGen prompt. The constraint comes from ``constraint`` (else from the query text) and
    must read as the row's ``type`` when it has one; ``language`` is detected when absent."""

    model_config = ConfigDict(extra="allow")

    query: str = Field(min_length=1)
    constraint: str | None = None
    type: ConstraintType | None = None
    language: Language | None = None
    range: str | None = None
    _length_constraint: LengthConstraint = PrivateAttr()

    @model_validator(mode="after")
    def _read_constraint(self) -> LonGenRow:
        constraint = parse_constraint(self.constraint or self.query)
        if self.type is not None and constraint.type != self.type:
            raise ValueError(f"constraint {self.constraint!r} reads as {constraint.type!r}, but type is {self.type!r}")
        self._length_constraint = constraint
        if self.language is None:
            self.language = detect_language(self.query)
        return self

    @property
    def prompt(self) -> str:
        return self.query

    @property
    def length_constraint(self) -> LengthConstraint:
        return self._length_constraint


class LongBenchRow(BaseModel):
    """A LongBench-Write or LongWrite-Ruler prompt with its required length (words or characters)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    length: int = Field(gt=0)


class LonGenPrediction(LonGenRow):
    response: str


class LongBenchPrediction(LongBenchRow):
    response: str


BenchmarkRow = LonGenRow | LongBenchRow
ROW_MODELS: dict[str, type[BenchmarkRow]] = {
    "longen": LonGenRow,
    "longbench-write": LongBenchRow,
    "longwrite-ruler": LongBenchRow,
}
PREDICTION_MODELS: dict[str, type[LonGenPrediction | LongBenchPrediction]] = {
    "longen": LonGenPrediction,
    "longbench-write": LongBenchPrediction,
    "longwrite-ruler": LongBenchPrediction,
}


class JudgeInput(BaseModel):
    """A prediction of any benchmark as the judge needs it: the prompt (``prompt`` or ``query``), the
    response, and the required ``length`` when the benchmark has one (for S_l)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = None
    query: str | None = None
    response: str
    length: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _has_prompt(self) -> JudgeInput:
        if not (self.prompt or self.query):
            raise ValueError("a prediction needs a non-empty 'prompt' or 'query'")
        return self

    @property
    def request(self) -> str:
        return self.prompt or self.query or ""


class Prediction(Record):
    """What ``eval generate`` writes per prompt: the benchmark row (its fields kept as they were),
    the model's ``response`` and its ``finish_reason`` ("length" means cut at max_tokens)."""

    model_config = ConfigDict(extra="allow")

    response: str
    finish_reason: str | None = None


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")


def _download_hf(uri: str) -> str:
    """A local copy of ``hf://datasets/<owner>/<repo>/<path>`` from the Hugging Face Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    owner, _, rest = uri[len(HF_DATASETS_SCHEME) :].partition("/")
    repo, _, filename = rest.partition("/")
    if not (owner and repo and filename):
        raise DataError(f"{uri}: expected hf://datasets/<owner>/<repo>/<path of the file in the repo>")
    try:
        return hf_hub_download(f"{owner}/{repo}", filename, repo_type="dataset")
    except (OSError, HFValidationError) as error:
        raise StorageError(
            f"cannot download {uri} from the Hugging Face Hub ({type(error).__name__}: {error}); "
            "when offline, pass a local copy of the file instead"
        ) from None


# Real copies of the benchmark prompt files ship with the package (selflengthen/data/benchmarks, Apache-2.0).
PACKAGED_FILES = {
    "longen": "longen.jsonl",
    "longbench-write": "longbench_write.jsonl",
    "longwrite-ruler": "longwrite_ruler.jsonl",
}


def packaged_benchmark(benchmark: str) -> str:
    """The path of the packaged copy of ``benchmark``'s prompts."""
    return str(resources.files("selflengthen") / "data" / "benchmarks" / PACKAGED_FILES[benchmark])


def row_language(row: BenchmarkRow) -> str:
    """The language of a benchmark prompt: LonGen's own field, else detected from the prompt."""
    return row.language if isinstance(row, LonGenRow) else detect_language(row.prompt)


def load_benchmark(
    storage: Storage,
    benchmark: str,
    source: str | None,
    *,
    max_prompts: int | None = None,
    languages: Sequence[str] | None = None,
) -> list[BenchmarkRow]:
    """The prompts of ``benchmark`` from ``source``: those in ``languages`` when given, the first
    ``max_prompts`` of them when given."""
    _check_benchmark(benchmark)
    source = source or packaged_benchmark(benchmark)
    path = _download_hf(source) if source.startswith(HF_DATASETS_SCHEME) else source
    rows = parse_jsonl(storage.read_text(path), ROW_MODELS[benchmark], source)
    if languages is not None:
        rows = [row for row in rows if row_language(row) in languages]
    return rows[:max_prompts] if max_prompts else rows


def load_predictions(storage: Storage, benchmark: str, source: str) -> list[LonGenPrediction | LongBenchPrediction]:
    """The predictions of ``benchmark`` in ``source``: a JSONL file or an ``eval generate`` dataset."""
    _check_benchmark(benchmark)
    return load_records(storage, source, PREDICTION_MODELS[benchmark])


def load_judge_inputs(storage: Storage, source: str) -> list[JudgeInput]:
    """Predictions of any benchmark, for the quality judge."""
    return load_records(storage, source, JudgeInput)
