"""Bad input at every entry point: exit 2, a first line of stderr that names the field, line, URI or
record, and nothing left at the output (no partial dataset, manifest or file).

One table, run in-process through the CLI. No case needs a model server: each fails before its
first request, or against an endpoint on a closed local port.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from selflengthen.cli import app
from tests.fixtures.s3 import READ_ONLY_KEYS, free_ports

RUNNER = CliRunner()
QUERY = {"id": "q1", "text": "Write about rivers.", "language": "en"}
INITIAL = {"id": "r1", "query_id": "q1", "query": "Write about rivers.", "language": "en", "text": "Rivers run to the sea.", "words": 5}
EXTENDED = {**INITIAL, "id": "e1", "kind": "extended", "initial_id": "r1", "initial_text": "Rivers run."}
SFT = {"id": "s1", "role": "generator", "language": "en",
       "messages": [{"role": "user", "content": "Write about rivers."}, {"role": "assistant", "content": "Rivers run."}]}  # fmt: skip
PREDICTION = {"prompt": "Write 300 words about rivers.", "length": 300, "response": "Rivers run."}
TINY_QWEN2 = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
}  # fmt: skip


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def model_folder(path: Path, weights: bool) -> None:
    """A causal-LM folder whose model.safetensors is readable, or zero bytes."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY_QWEN2))
    if weights:
        save_file({"w": torch.zeros(1)}, str(path / "model.safetensors"))
    else:
        (path / "model.safetensors").write_bytes(b"")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The inputs of every case; a case's output goes below its own folder."""
    root = tmp_path_factory.mktemp("bad-input")
    (port,) = free_ports(1)
    closed = f"http://127.0.0.1:{port}/v1"
    fast_failing = {"base_url": closed, "max_retries": 1, "backoff_initial_s": 0.05}
    config = {"model": {"base": str(root / "model")}, "serving": {"generator": fast_failing}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "closed-url").write_text(closed)
    files = {
        "queries.jsonl": jsonl(QUERY),
        "duplicates.jsonl": jsonl(QUERY, {**QUERY, "id": "q2"}, QUERY),
        "malformed.jsonl": jsonl(QUERY) + "{not json\n",
        "missing-field.jsonl": jsonl(QUERY, {"id": "q2", "text": "x"}),
        "empty.jsonl": "",
        "initial.jsonl": jsonl(INITIAL),
        "extended.jsonl": jsonl(EXTENDED),
        "extended-duplicates.jsonl": jsonl(EXTENDED, {**EXTENDED, "id": "e2"}, {**EXTENDED, "text": "Again."}),
        "sft.jsonl": jsonl(SFT),
        "sft-duplicates.jsonl": jsonl(SFT, SFT),
        "predictions.jsonl": jsonl(PREDICTION),
        "unknown-key.yaml": yaml.safe_dump({"model": {"base": "m"}, "generate": {"sample_per_query": 2}}),
        "broken.yaml": "model: [base\n",
        "afile": "a file where a folder must be\n",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "non-utf8.jsonl").write_bytes(json.dumps(QUERY).encode()[:-2] + b"\xff\xfe}\n")
    model_folder(root / "model-ok", weights=True)
    model_folder(root / "model-zero", weights=False)
    return root


@dataclass
class Case:
    """A command line and the start of its first stderr line; ``{w}``: the workspace, ``{o}``: the
    case's output (which must hold no file afterwards), ``{url}``: an endpoint on a closed port."""

    id: str
    args: str
    first_line: str


C = "-c {w}/config.yaml"
TRAIN = "train " + C + " --role generator --data {w}/sft.jsonl --output {o}"
RUN = "run " + C + " --workdir {o}"
QUALITY = "eval quality -p {w}/predictions.jsonl --judge-model m --rubric longbench-write " + C
CASES = [
    # config
    Case("config-unknown-key", "config validate {w}/unknown-key.yaml", "error: invalid configuration in {w}/unknown-key.yaml: generate.sample_per_query: unknown key"),
    Case("config-missing-file", "config validate {w}/nowhere.yaml", "error: config file not found: {w}/nowhere.yaml"),
    Case("config-broken-yaml", "config validate {w}/broken.yaml", "error: config file {w}/broken.yaml line 2 is not valid YAML"),
    Case("config-bad-override", "config show " + C + " --set extend.rounds=0", "error: invalid configuration in {w}/config.yaml: extend.rounds: "),
    Case("config-override-without-value", "config show " + C + " --set extend.rounds", "error: --set 'extend.rounds'"),
    Case("config-override-unknown-key", "config show " + C + " --set generate.samples=2", "error: invalid configuration in {w}/config.yaml: generate.samples: unknown key"),
    # self-instruct
    Case("self-instruct-negative-count", "self-instruct " + C + " --set self_instruct.num_instructions=-5 -o {o}", "error: invalid configuration in {w}/config.yaml: self_instruct.num_instructions: "),
    Case("self-instruct-missing-seeds", "self-instruct " + C + " -i {w}/nowhere.jsonl -o {o}", "error: {w}/nowhere.jsonl is neither a dataset"),
    Case("self-instruct-duplicate-seeds", "self-instruct " + C + " -i {w}/duplicates.jsonl -o {o}", "error: {w}/duplicates.jsonl line 3: duplicate id 'q1' (first at line 1)"),
    Case("self-instruct-unwritable-output", "self-instruct " + C + " -o {w}/afile/out", "error: output {w}/afile/out is not writable: {w}/afile is a file, not a folder"),
    Case("self-instruct-unreachable-endpoint", "self-instruct " + C + " -o {o}", "error: cannot reach model server at {url}"),
    # generate
    Case("generate-malformed-json", "generate " + C + " -i {w}/malformed.jsonl -o {o}", "error: {w}/malformed.jsonl line 2: invalid JSON"),
    Case("generate-missing-field", "generate " + C + " -i {w}/missing-field.jsonl -o {o}", "error: {w}/missing-field.jsonl line 2: language"),
    Case("generate-empty-input", "generate " + C + " -i {w}/empty.jsonl -o {o}", "error: {w}/empty.jsonl is empty"),
    Case("generate-non-utf8", "generate " + C + " -i {w}/non-utf8.jsonl -o {o}", "error: {w}/non-utf8.jsonl is not valid UTF-8"),
    Case("generate-duplicate-ids", "generate " + C + " -i {w}/duplicates.jsonl -o {o}", "error: {w}/duplicates.jsonl line 3: duplicate id 'q1' (first at line 1)"),
    Case("generate-missing-input", "generate " + C + " -i {w}/nowhere.jsonl -o {o}", "error: {w}/nowhere.jsonl is neither a dataset"),
    Case("generate-wrong-records", "generate " + C + " -i {w}/initial.jsonl -o {o}", "error: {w}/initial.jsonl line 1: "),
    Case("generate-unwritable-output", "generate " + C + " -i {w}/queries.jsonl -o {w}/afile/out", "error: output {w}/afile/out is not writable"),
    Case("generate-unreachable-endpoint", "generate " + C + " -i {w}/queries.jsonl -o {o}", "error: cannot reach model server at {url}"),
    Case("generate-unknown-scheme", "generate " + C + " -i {w}/queries.jsonl -o ftp://host/out", "error: unsupported URI scheme in 'ftp://host/out/manifest.json'"),
    # extend
    Case("extend-given-queries", "extend " + C + " -i {w}/queries.jsonl -o {o}", "error: {w}/queries.jsonl line 1: "),
    Case("extend-duplicate-ids", "extend " + C + " -i {w}/extended-duplicates.jsonl -o {o}", "error: {w}/extended-duplicates.jsonl line 3: duplicate id 'e1' (first at line 1)"),
    Case("extend-unwritable-output", "extend " + C + " -i {w}/initial.jsonl -o {w}/afile/out", "error: output {w}/afile/out is not writable"),
    # select
    Case("select-missing-input", "select " + C + " -i {w}/nowhere -o {o}", "error: {w}/nowhere is neither a dataset"),
    Case("select-duplicate-ids", "select " + C + " -i {w}/extended-duplicates.jsonl -o {o}", "error: {w}/extended-duplicates.jsonl line 3: duplicate id 'e1'"),
    Case("select-unwritable-output", "select " + C + " -i {w}/extended.jsonl -o {w}/afile/out", "error: output {w}/afile/out is not writable"),
    # sft-data
    Case("sft-data-initial-responses", "sft-data " + C + " -i {w}/initial.jsonl -o {o}", "error: {w}/initial.jsonl: record 'r1' is not an extended response"),
    Case("sft-data-duplicate-ids", "sft-data " + C + " -i {w}/extended-duplicates.jsonl -o {o}", "error: {w}/extended-duplicates.jsonl line 3: duplicate id 'e1'"),
    Case("sft-data-same-input-twice", "sft-data " + C + " -i {w}/extended.jsonl -i {w}/extended.jsonl -o {o}", "error: {w}/extended.jsonl: duplicate id 'e1' (also in {w}/extended.jsonl)"),
    Case("sft-data-unwritable-output", "sft-data " + C + " -i {w}/extended.jsonl -o {w}/afile/out", "error: output {w}/afile/out is not writable"),
    # length-control
    Case("length-control-missing-input", "length-control " + C + " -i {w}/nowhere.jsonl -o {o}", "error: {w}/nowhere.jsonl is neither a dataset"),
    Case("length-control-duplicate-ids", "length-control " + C + " -i {w}/extended-duplicates.jsonl -o {o}", "error: {w}/extended-duplicates.jsonl line 3: duplicate id 'e1'"),
    Case("length-control-unwritable-output", "length-control " + C + " -i {w}/extended.jsonl -o {w}/afile/out", "error: output {w}/afile/out is not writable"),
    # train
    Case("train-zero-byte-weights", TRAIN + " --base-model {w}/model-zero", "error: base model {w}/model-zero: model.safetensors is not a readable safetensors file"),
    Case("train-missing-model", TRAIN + " --base-model {w}/nowhere", "error: base model {w}/nowhere is not a Hugging Face model folder"),
    Case("train-duplicate-ids", "train " + C + " --role generator --data {w}/sft-duplicates.jsonl --base-model {w}/model-ok --output {o}", "error: {w}/sft-duplicates.jsonl line 2: duplicate id 's1' (first at line 1)"),
    Case("train-unwritable-output", "train " + C + " --role generator --data {w}/sft.jsonl --base-model {w}/model-ok --output {w}/afile/out", "error: output {w}/afile/out is not writable"),
    Case("train-data-of-another-role", "train " + C + " --role extender --data {w}/sft.jsonl --base-model {w}/model-ok --output {o}", "error: training data {w}/sft.jsonl"),
    # eval
    Case("eval-generate-malformed-benchmark", "eval generate -b longbench-write -f {w}/malformed.jsonl -e {url} -m m -o {o} " + C, "error: {w}/malformed.jsonl line 1: "),
    Case("eval-generate-unwritable-output", "eval generate -b longbench-write -f {w}/predictions.jsonl -e {url} -m m -o {w}/afile/out " + C, "error: output {w}/afile/out is not writable"),
    Case("eval-generate-unreachable-endpoint", "eval generate -b longbench-write -f {w}/predictions.jsonl -e {url} -m m -o {o} " + C, "error: cannot reach model server at {url}"),
    Case("eval-length-missing-predictions", "eval length -b longbench-write -p {w}/nowhere.jsonl " + C, "error: {w}/nowhere.jsonl is neither a dataset"),
    Case("eval-length-malformed-predictions", "eval length -b longbench-write -p {w}/queries.jsonl " + C, "error: {w}/queries.jsonl line 1: "),
    Case("eval-length-unwritable-output", "eval length -b longbench-write -p {w}/predictions.jsonl -o {w}/afile/scores.jsonl " + C, "error: output {w}/afile is not writable"),
    Case("eval-quality-unreachable-judge", QUALITY + " --judge-endpoint {url} -o {o}/scores.jsonl", "error: cannot reach model server at {url}"),
    Case("eval-quality-unwritable-output", QUALITY + " --judge-endpoint {url} -o {w}/afile/scores.jsonl", "error: output {w}/afile is not writable"),
    Case("eval-quality-no-prompt", "eval quality -p {w}/sft.jsonl --judge-model m --rubric longbench-write --judge-endpoint {url} " + C, "error: {w}/sft.jsonl line 1: "),
    # run
    Case("run-missing-model", RUN, "error: base model {w}/model is not a Hugging Face model folder"),
    Case("run-zero-byte-weights", RUN + " --set model.base={w}/model-zero", "error: base model {w}/model-zero: model.safetensors is not a readable safetensors file"),
    Case("run-missing-seeds", RUN + " --set model.base={w}/model-ok --set self_instruct.seeds_uri={w}/nowhere.jsonl", "error: {w}/nowhere.jsonl is neither a dataset"),
    Case("run-malformed-benchmark", RUN + " --set model.base={w}/model-ok --set eval.benchmark_files.longen={w}/queries.jsonl", "error: {w}/queries.jsonl line 1: "),
    Case("run-unknown-key", RUN + " --set pipeline.imagee=x", "error: invalid configuration in {w}/config.yaml: pipeline.imagee: unknown key"),
    # compile
    Case("compile-into-a-file", "compile " + C + " -o {w}/afile/p.yaml", "error: cannot write {w}/afile/p.yaml: {w}/afile is a file, not a folder"),
    Case("compile-bad-override", "compile " + C + " --set iterations=0 -o {o}/p.yaml", "error: invalid configuration in {w}/config.yaml: iterations: "),
]


@pytest.fixture
def logs_to_this_invocation() -> Iterator[None]:
    """The selflengthen log handler writes to the stderr of the invocation that created it; each
    CliRunner invocation has its own stderr, so each case starts without one."""
    logger = logging.getLogger("selflengthen")
    saved = logger.handlers[:]
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
@pytest.mark.usefixtures("logs_to_this_invocation")
def test_bad_input_is_refused_clearly_and_leaves_nothing(workspace: Path, case: Case) -> None:
    output = workspace / "outputs" / case.id
    names = {"w": str(workspace), "o": str(output), "url": (workspace / "closed-url").read_text()}
    afile = (workspace / "afile").read_text()

    result = RUNNER.invoke(app, case.args.format(**names).split())

    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0] if result.stderr else ""
    assert first.startswith(case.first_line.format(**names)), result.stderr
    assert not output.exists() or not any(path.is_file() for path in output.rglob("*"))
    assert (workspace / "afile").read_text() == afile


@pytest.mark.integration
def test_wrong_s3_credentials(tmp_path, s3_server, s3_bucket):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"base": "m"}, "storage": {"s3_endpoint": s3_server.endpoint, "s3_secure": False, "max_retries": 1}}))
    env = {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    result = RUNNER.invoke(app, ["select", "--config", str(path), "--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/out"], env=env)
    assert result.exit_code == 2 and "AWS_ACCESS_KEY_ID" in result.stderr.splitlines()[0]
    assert "wrong-secret" not in result.output
    assert list(s3_server.client().list_objects(s3_bucket, recursive=True)) == []


@pytest.mark.integration
def test_an_s3_output_that_cannot_be_written_fails_before_any_request(tmp_path, s3_server, s3_bucket):
    path = tmp_path / "config.yaml"
    (port,) = free_ports(1)
    path.write_text(yaml.safe_dump({
        "model": {"base": "m"},
        "storage": {"s3_endpoint": s3_server.endpoint, "s3_secure": False, "max_retries": 1},
        "serving": {"generator": {"base_url": f"http://127.0.0.1:{port}/v1"}},
    }))  # fmt: skip
    queries = tmp_path / "queries.jsonl"
    queries.write_text(jsonl(QUERY))
    env = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), READ_ONLY_KEYS))
    result = RUNNER.invoke(app, ["generate", "-c", str(path), "-i", str(queries), "-o", f"s3://{s3_bucket}/out"], env=env)
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: output s3://{s3_bucket}/out is not writable: "), result.stderr
    assert "cannot reach model server" not in result.stderr  # refused before the endpoint is asked
    assert list(s3_server.client().list_objects(s3_bucket, recursive=True)) == []


@pytest.mark.integration
def test_missing_bucket(tmp_path, s3_server, s3_credentials_env):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"base": "m"}, "storage": {"s3_endpoint": s3_server.endpoint, "s3_secure": False, "max_retries": 1}}))
    result = RUNNER.invoke(app, ["select", "--config", str(path), "--input", "s3://no-such-bucket/in", "--output", "s3://no-such-bucket/out"])
    assert result.exit_code == 2
    assert "no-such-bucket" in result.stderr.splitlines()[0] and "does not exist" in result.stderr
