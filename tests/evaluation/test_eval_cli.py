"""`selflengthen eval generate|length|quality` through the CLI: scores, resume, and bad input."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from fastapi import HTTPException
from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.evaluation.benchmarks import load_benchmark, packaged_benchmark, row_language
from selflengthen.storage import get_storage
from tests.evaluation.test_judge import SCORES_A, SCORES_B, scripted_judge

# the benchmark copies that ship with the package, found the way the evaluation finds its defaults
BENCHMARKS = Path(packaged_benchmark("longen")).parent
runner = CliRunner()


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (BENCHMARKS / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def run(*args: str):
    return runner.invoke(app, list(args))


# ----------------------------------------------------------------------------- eval length


def test_length_longen_on_the_real_prompts(tmp_path):
    predictions = []
    for row in rows("longen.jsonl"):
        target = int(re.search(r"\d+", row["constraint"]).group())  # T, or the lower bound of a range
        unit = "字" if row["language"] == "zh" else "word "
        predictions.append({**row, "response": unit * target})  # exactly T (or the lower bound): inside
    predictions[0]["response"] = ""  # about 2000, empty: 0
    path = write_jsonl(tmp_path / "pred.jsonl", predictions)
    per_prompt = tmp_path / "scores.jsonl"

    result = run("eval", "length", "--benchmark", "longen", "--predictions", path, "--json", "--output", str(per_prompt))

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["overall"] == pytest.approx(100 * 239 / 240)
    assert summary["count"] == 240
    assert summary["by_type"] == pytest.approx({"about": 100 * 59 / 60, "range": 100.0, "above": 100.0, "below": 100.0})
    assert summary["by_language"] == pytest.approx({"en": 100.0, "zh": 100 * 119 / 120})
    assert summary["by_range"] == pytest.approx({"2-4k": 100 * 79 / 80, "4-6k": 100.0, "6-8k": 100.0})
    scores = [json.loads(line) for line in per_prompt.read_text().splitlines()]
    assert len(scores) == 240 and scores[0]["score"] == 0 and scores[1]["score"] == 100


def test_length_longbench_write_per_bucket_and_readable_output(tmp_path):
    predictions = [{**row, "response": "word " * row["length"]} for row in rows("longbench_write_en.jsonl")]
    predictions[0]["response"] = "word " * (predictions[0]["length"] * 2)  # twice as long: 100 * (1 - 1/3)
    path = write_jsonl(tmp_path / "pred.jsonl", predictions)

    result = run("eval", "length", "-b", "longbench-write", "-p", path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["overall"] == pytest.approx((59 * 100 + 200 / 3) / 60)
    assert set(summary["by_bucket"]) == {"[0,500)", "[500,2k)", "[2k,4k)", "[4k,20k]"}
    assert min(summary["by_bucket"].values()) < 100

    readable = run("eval", "length", "-b", "longbench-write", "-p", path)
    assert readable.exit_code == 0
    assert "overall: 99.44" in readable.stdout and "by_bucket:" in readable.stdout


def test_length_longwrite_ruler_puts_30k_in_its_own_bucket(tmp_path):
    predictions = [{**row, "response": "word " * row["length"]} for row in rows("longwrite_ruler.jsonl")]
    result = run("eval", "length", "-b", "longwrite-ruler", "-p", write_jsonl(tmp_path / "p.jsonl", predictions), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_bucket"] == {"[500,2k)": 100.0, "[2k,4k)": 100.0, "[4k,20k]": 100.0, "(20k,inf)": 100.0}


LONGEN_ROW = {"language": "en", "range": "2-4k", "type": "about", "constraint": "around 2000 words", "query": "Write."}
LONGBENCH_ROW = {"prompt": "Write 100 words.", "type": "x", "length": 100}


@pytest.mark.parametrize(
    ("benchmark", "content", "message"),
    [
        ("longen", json.dumps({**LONGEN_ROW, "response": "a"}) + "\n{not json\n", "line 2: invalid JSON"),
        ("longen", json.dumps(LONGEN_ROW) + "\n", "line 1: response: Field required"),
        ("longen", json.dumps({**LONGEN_ROW, "response": None}) + "\n", "line 1: response: Input should be a valid string"),
        ("longen", "\n" + json.dumps([1, 2]) + "\n", "line 2: expected a JSON object, got list"),
        (
            "longen",
            json.dumps({**LONGEN_ROW, "constraint": "as long as you like", "response": "a"}) + "\n",
            "line 1: (record): Value error, no length constraint",
        ),
        (
            "longen",
            json.dumps({**LONGEN_ROW, "type": "below", "response": "a"}) + "\n",
            "line 1: (record): Value error, constraint 'around 2000 words' reads as 'about', but type is 'below'",
        ),
        (
            "longen",
            json.dumps({"query": "Write something nice.", "response": "a"}) + "\n",
            "line 1: (record): Value error, no length constraint",
        ),
        ("longbench-write", json.dumps({**LONGBENCH_ROW, "length": 0, "response": "a"}) + "\n", "line 1: length: Input should be greater than 0"),
        ("longbench-write", json.dumps({"length": 5, "response": "a"}) + "\n", "line 1: prompt: Field required"),
        ("longbench-write", "\n\n", "is empty"),
    ],
)
def test_malformed_prediction_files_name_the_file_and_line(tmp_path, benchmark, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = run("eval", "length", "-b", benchmark, "-p", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {path}")
    assert message in result.stderr


def test_prediction_files_that_are_not_utf8_or_missing(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"prompt": "caf\xe9", "length": 5, "response": ""}\n'.encode("latin-1"))
    result = run("eval", "length", "-b", "longbench-write", "-p", str(latin1))
    assert result.exit_code == 2 and "is not valid UTF-8" in result.stderr
    result = run("eval", "length", "-b", "longbench-write", "-p", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2 and "missing.jsonl is neither a dataset" in result.stderr


def test_user_prompts_without_a_constraint_field_take_it_from_the_query(tmp_path):
    predictions = [
        {"query": "写一篇不少于三千字的游记", "response": "字" * 3000},  # above 3000, language detected
        {"query": "Write an essay of between 10 and 20 words.", "response": "word " * 5},  # 2*5/10 - 1 = 0
    ]
    result = run("eval", "length", "-b", "longen", "-p", write_jsonl(tmp_path / "p.jsonl", predictions), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["by_type"] == {"range": 0.0, "above": 100.0}
    assert summary["by_language"] == {"en": 0.0, "zh": 100.0}
    assert summary["by_range"] == {}


# ----------------------------------------------------------------------------- eval generate


def test_generate_defaults_to_the_packaged_benchmark_copy(tmp_path):
    result = run("eval", "generate", "-b", "longen", "-e", "http://127.0.0.1:9/v1", "-m", "m", "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "no file for benchmark" not in result.stderr
    assert "http://127.0.0.1:9/v1" in result.stderr  # got as far as the endpoint


@pytest.mark.parametrize(("benchmark", "rows"), [("longen", 240), ("longbench-write", 120), ("longwrite-ruler", 48)])
def test_packaged_benchmark_copies(benchmark, rows):
    assert len(load_benchmark(get_storage(), benchmark, None)) == rows


@pytest.mark.parametrize("benchmark", ["longen", "longbench-write"])
def test_a_run_evaluates_the_prompts_in_its_languages(benchmark):
    every = load_benchmark(get_storage(), benchmark, None)
    english = load_benchmark(get_storage(), benchmark, None, languages=["en"])
    assert 0 < len(english) < len(every)
    assert all(row_language(row) == "en" for row in english)
    assert load_benchmark(get_storage(), benchmark, None, languages=["en"], max_prompts=3) == english[:3]
    both = load_benchmark(get_storage(), benchmark, None, languages=["en", "zh"])
    assert len(both) == len(every)


def test_generate_against_an_unreachable_endpoint_fails_clearly(tmp_path):
    result = run(
        "eval", "generate", "-b", "longen", "-f", str(BENCHMARKS / "longen.jsonl"),
        "-e", "http://127.0.0.1:9/v1", "-m", "m", "-o", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot reach model server at http://127.0.0.1:9/v1" in result.stderr


def test_hf_benchmark_files_fail_clearly_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    uri = "hf://datasets/example/longbench-write/longbench_write.jsonl"
    result = run("eval", "generate", "-b", "longbench-write", "-f", uri, "-e", "http://127.0.0.1:9/v1", "-m", "m", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert f"error: cannot download {uri} from the Hugging Face Hub" in result.stderr
    assert "when offline, pass a local copy of the file instead" in result.stderr
    result = run("eval", "generate", "-b", "longen", "-f", "hf://datasets/only-owner", "-e", "http://x/v1", "-m", "m", "-o", str(tmp_path))
    assert "expected hf://datasets/<owner>/<repo>/<path of the file in the repo>" in result.stderr


def test_generate_resumes_after_a_failure_and_skips_when_done(tmp_path, scripted_server):
    failing = {"write a 100-word short thank you": True}

    def writer(messages: list[dict]) -> str:
        prompt = messages[0]["content"]
        if any(prompt.startswith(start) and fail for start, fail in failing.items()):
            # The server down for this prompt (a refused prompt would be its record's failure instead).
            raise HTTPException(status_code=503, detail="the engine is down for now")
        return "word " * 50 + "end."

    server = scripted_server(writer)
    output = tmp_path / "predictions"
    args = (
        "eval", "generate", "-b", "longbench-write", "-f", str(BENCHMARKS / "longbench_write.jsonl"),
        "-e", server.base_url, "-m", "scripted", "-o", str(output), "--max-prompts", "5",
        "--set", "serving.generator.max_concurrency=1", "--set", "storage.shard_size=1",
        "--set", "serving.generator.max_retries=0",
    )  # fmt: skip

    first = run(*args)
    assert first.exit_code == 2
    assert "failed after 1 attempts" in first.stderr and "the engine is down for now" in first.stderr
    checkpointed = [
        prediction["prompt"] for shard in (output / "_checkpoint").glob("shard-*.jsonl")
        for line in shard.read_text().splitlines() for prediction in json.loads(line)["outputs"]
    ]  # fmt: skip
    assert checkpointed  # the first prompt was answered before the second was refused

    failing.clear()
    second = run(*args)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout.splitlines()[-1])  # after the progress bar
    assert (summary["predictions"], summary["skipped"]) == (5, False)
    assert summary["metrics"]["truncated"] == 0
    # Only the prompts not yet answered were asked again. (Counting requests would race: a request
    # in flight when the first run stopped may reach the server after that run has returned.)
    asked = Counter(request["messages"][0]["content"] for request in server.requests)
    assert all(asked[prompt] == 1 for prompt in checkpointed), asked
    assert {request["max_tokens"] for request in server.requests} == {768}  # eval.sampling of the config

    requests_before = len(server.requests)
    third = run(*args)
    assert json.loads(third.stdout.splitlines()[-1])["skipped"] is True and len(server.requests) == requests_before

    written = [json.loads(line) for part in sorted(output.glob("part-*.jsonl")) for line in part.read_text().splitlines()]
    originals = rows("longbench_write.jsonl")[:5]
    assert [{k: w[k] for k in ("prompt", "type", "length")} for w in written] == originals
    assert {w["response"] for w in written} == {"word " * 50 + "end."}
    scores = run("eval", "length", "-b", "longbench-write", "-p", str(output), "--json")
    assert scores.exit_code == 0, scores.output
    assert json.loads(scores.stdout)["count"] == 5


# ----------------------------------------------------------------------------- eval quality


def test_quality_with_a_scripted_judge(tmp_path, scripted_server):
    server = scripted_server(scripted_judge)
    predictions = [{"prompt": f"Write {i}.", "length": 2, "response": r} for i, r in enumerate(["GOOD-A", "GOOD-B", "NEVER"])]
    path = write_jsonl(tmp_path / "pred.jsonl", predictions)
    verdicts = tmp_path / "verdicts.jsonl"

    result = run(
        "eval", "quality", "-p", path, "--judge-endpoint", server.base_url, "--judge-model", "scripted",
        "--rubric", "longbench-write", "--json", "--output", str(verdicts), "--set", "eval.judge_retries=1",
        "--set", "eval.min_scored_fraction=0.6",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    means = {d: (SCORES_A[d] + SCORES_B[d]) / 2 for d in SCORES_A}
    s_q = sum((m - 1) * 25 for m in means.values()) / 6
    s_l = (100 + 100 + 50) / 3
    assert summary["S_q"] == pytest.approx(s_q)
    assert summary["S_l"] == pytest.approx(s_l)
    assert summary["overall"] == pytest.approx((s_q + s_l) / 2)
    assert (summary["scored"], summary["unscored"], summary["unscored_reasons"]) == (2, 1, {"unreadable": 1})
    assert "warning: the judge scored 2 of 3 prompts (1 unscored: unreadable: 1)" in result.stderr
    lines = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert [line["attempts"] for line in lines] == [1, 1, 2]
    assert lines[2] == {"index": 2, "attempts": 2, "reason": "unreadable", "detail": "no JSON object in the answer", "answer": "no idea"}
    assert {request["model"] for request in server.requests} == {"scripted"}


def test_quality_fails_when_fewer_prompts_are_scored_than_required(tmp_path, scripted_server):
    server = scripted_server(scripted_judge)
    predictions = [{"prompt": f"Write {i}.", "response": r} for i, r in enumerate(["GOOD-A", "NEVER"])]
    path = write_jsonl(tmp_path / "pred.jsonl", predictions)
    args = ["eval", "quality", "-p", path, "--judge-endpoint", server.base_url, "--judge-model", "scripted",
            "--rubric", "longbench-write", "--json", "--set", "eval.judge_retries=0"]  # fmt: skip

    result = run(*args)  # the default: every prompt must be scored

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "error: the judge scored 1 of 2 prompts (1 unscored: unreadable: 1); "
        "eval.min_scored_fraction=1.0 requires at least 2"
    )
    assert json.loads(result.stdout)["scored"] == 1  # the scores are still reported
    assert run(*args, "--set", "eval.min_scored_fraction=0.5").exit_code == 0


def test_quality_rejects_an_unknown_rubric_and_predictions_without_a_prompt(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"response": "x"}])
    result = run("eval", "quality", "-p", path, "--judge-endpoint", "http://127.0.0.1:9/v1", "--judge-model", "m", "--rubric", "nope")
    assert result.exit_code == 2 and "nope" in result.output
    result = run("eval", "quality", "-p", path, "--judge-endpoint", "http://127.0.0.1:9/v1", "--judge-model", "m", "--rubric", "self-lengthen")
    assert result.exit_code == 2
    assert f"error: {path} line 1: (record): Value error, a prediction needs a non-empty 'prompt' or 'query'" in result.stderr
