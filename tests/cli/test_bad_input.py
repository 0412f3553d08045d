"""Bad input at the command line: a clear message naming the field or line, exit 2, no partial output."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from selflengthen.cli import app
from tests.fixtures.s3 import free_ports

RUNNER = CliRunner()
GOOD = json.dumps({"id": "q1", "text": "Write about rivers.", "language": "en"})


def config_file(tmp_path, **patch):
    data = {"model": {"base": str(tmp_path / "model")}, "workdir": str(tmp_path / "run"), **patch}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def invoke(*args, env=None):
    return RUNNER.invoke(app, [str(a) for a in args], env=env)


def assert_failed(result, *fragments):
    assert result.exit_code == 2, result.output
    message = result.stderr if hasattr(result, "stderr") else result.output
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (f"{GOOD}\n{{not json\n".encode(), ["line 2"]),
        (f'{GOOD}\n{{"id": "q2", "text": "x"}}\n'.encode(), ["line 2", "language"]),
        (b"", ["is empty"]),
        (GOOD.encode()[:-2] + b"\xff\xfe}\n", ["UTF-8"]),
    ],
    ids=["malformed-json", "missing-field", "empty", "non-utf8"],
)
def test_malformed_input_file(tmp_path, content, fragments):
    source = tmp_path / "queries.jsonl"
    source.write_bytes(content)
    output = tmp_path / "out"
    result = invoke("generate", "--config", config_file(tmp_path), "--input", source, "--output", output)
    assert_failed(result, str(source), *fragments)
    assert not output.exists()


def test_unknown_config_key(tmp_path):
    path = config_file(tmp_path, generate={"sample_per_query": 2})
    result = invoke("config", "validate", path)
    assert_failed(result, "generate.sample_per_query: unknown key")


def test_negative_count(tmp_path):
    path = config_file(tmp_path, self_instruct={"num_instructions": -5})
    result = invoke("self-instruct", "--config", path, "--output", tmp_path / "out")
    assert_failed(result, "self_instruct.num_instructions")
    assert not (tmp_path / "out").exists()


def test_bad_override(tmp_path):
    result = invoke("config", "show", "--config", config_file(tmp_path), "--set", "extend.rounds=0")
    assert_failed(result, "extend.rounds")


def test_unreachable_endpoint(tmp_path):
    source = tmp_path / "queries.jsonl"
    source.write_text(GOOD + "\n", encoding="utf-8")
    (port,) = free_ports(1)
    output = tmp_path / "out"
    url = f"http://127.0.0.1:{port}/v1"
    result = invoke(
        "generate", "--config", config_file(tmp_path, serving={"generator": {"base_url": url, "max_retries": 1, "backoff_initial_s": 0.05}}),
        "--input", source, "--output", output,
    )
    assert_failed(result, url)
    assert not any(path.is_file() for path in output.rglob("*")) if output.exists() else True


@pytest.mark.integration
def test_wrong_s3_credentials(tmp_path, s3_server, s3_bucket):
    path = config_file(tmp_path, storage={"s3_endpoint": s3_server.endpoint, "s3_secure": False, "max_retries": 1})
    env = {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    result = invoke("select", "--config", path, "--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/out", env=env)
    assert_failed(result, "AWS_ACCESS_KEY_ID")
    assert "wrong-secret" not in result.output
    assert list(s3_server.client().list_objects(s3_bucket, recursive=True)) == []


@pytest.mark.integration
def test_missing_bucket(tmp_path, s3_server, s3_credentials_env):
    path = config_file(tmp_path, storage={"s3_endpoint": s3_server.endpoint, "s3_secure": False, "max_retries": 1})
    result = invoke("select", "--config", path, "--input", "s3://no-such-bucket/in", "--output", "s3://no-such-bucket/out")
    assert_failed(result, "no-such-bucket", "does not exist")
