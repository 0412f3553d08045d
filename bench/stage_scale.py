"""Do the stages hold at 100,000 records: peak memory and time per record of `generate`, `select`,
`length-control` and `sft-data` at 2k / 20k / 100k records, and how steadily `extend` checkpoints
its units.

Run:  .venv/bin/python bench/stage_scale.py      (about 25 minutes on 2 CPU cores)

Scale (each stage in a process of its own, so its peak RSS is its own): ``generate`` answers N
queries (a queries dataset, 64 per part) with one sample each, the HTTP call replaced by a ready
answer (a ~3.5 KB English essay that passes every check, chosen by the query); everything else is
production: the stage, its checks, checkpoint shards and their writer, finalize, manifest and
metrics. ``select`` then selects from those N responses. ``length-control`` and ``sft-data`` make
their examples from N extended responses (~3.5 KB each, distinct, with a ~1 KB initial text);
length-control's query rewrite is answered the same way (the answer loses the constraint, so it is
appended). Figures: peak RSS (MB) of the stage's
process and its CPU time per record (µs; the wall time too), with the growth from the smallest to
the largest size.

Steadiness: ``extend`` (production settings: 2 chains, 3 rounds, so 6 sequential requests per
chain; every initial response extended) of ``--extend-units`` responses against a fake
OpenAI-compatible server in its own process answering each request after a fixed latency, at
concurrency 64, once with every unit in flight at once and once with the default bound (2 x
concurrency); both serve the requests of older units first. A thread polls the checkpoint's unit
indexes (what a kill would leave); ``extend_finished_at_half`` is the fraction of units
checkpointed at half the stage's time with the default bound. (Before this scheduler, with every
unit in flight and requests served first come first served, it was 0: no unit finished before
about 80% of the stage's time.)

Figures go to bench/results/stage_scale.json; the last line printed is ``extend_finished_at_half=<value>``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "stage_scale.json"
CONCURRENCY = 64
ESSAYS = 64  # distinct ready answers
STAGES = ("generate", "select", "length-control", "sft-data")


def essay(seed: int) -> str:
    """A ~3.5 KB English essay of pseudo-words (no repeated 10-gram, no meta words), 450-700 words."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(450, 700))]
    paragraphs = [" ".join(words[i : i + 60]) + "." for i in range(0, len(words), 60)]
    return "\n\n".join(paragraphs)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds of this process, all its threads (user + system): unlike wall time, hardly
    changed by other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- children


def child_scale(stage: str, work: Path, records: int) -> dict:
    """Run ``stage`` on ``records`` records in this process; its figures."""
    from selflengthen.client import Completion, GenerationClient
    from selflengthen.config import parse_config
    from selflengthen.datasets import read_manifest
    from selflengthen.stages import common
    from selflengthen.storage import get_storage
    from selflengthen.stages.generate import run_generate
    from selflengthen.stages.length_control import run_length_control
    from selflengthen.stages.select import run_select
    from selflengthen.stages.sft_data import run_sft_data

    answers = [essay(i) for i in range(ESSAYS)]

    class ReadyAnswers(GenerationClient):
        """The generation client with the HTTP call replaced by a ready answer."""

        async def check_health(self) -> None:
            return None

        async def chat(self, messages, sampling, n=1):
            await asyncio.sleep(0)
            return [Completion(text=answers[zlib.crc32(messages[-1]["content"].encode()) % ESSAYS], finish_reason="stop")] * n

    common.GenerationClient = ReadyAnswers
    config = parse_config(
        {
            "run_id": "scale", "workdir": str(work), "languages": ["en"], "model": {"base": "unused"},
            "generate": {"samples_per_query": 1, "max_retries": 0},
            "serving": {"generator": {"base_url": "http://ready.invalid/v1", "max_concurrency": CONCURRENCY}},
        }
    )  # fmt: skip
    baseline = rss_mb()
    cpu_started = cpu_s()
    started = time.perf_counter()
    if stage == "generate":
        count = run_generate(config, queries=str(work / "queries"), output=str(work / "initial")).manifest.count
    elif stage == "select":
        count = run_select(config, input=str(work / "initial"), output=str(work / "selected")).count
    elif stage == "length-control":
        count = run_length_control(config, responses=[str(work / "extended")], output=str(work / "length")).manifest.count
    else:
        run_sft_data(config, extended=str(work / "extended"), output=str(work / "sft"))
        count = read_manifest(get_storage(), str(work / "sft" / "generator")).count
    seconds = time.perf_counter() - started
    cpu = cpu_s() - cpu_started
    return {
        "stage": stage, "records": records, "output_records": count, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
        "us_per_record": round(cpu / records * 1e6, 1), "wall_us_per_record": round(seconds / records * 1e6, 1),
        "peak_rss_mb": round(rss_mb(), 1), "rss_before_stage_mb": round(baseline, 1),
    }  # fmt: skip


def child_extend(work: Path, base_url: str, units: int, limit: int | None, shard_size: int) -> dict:
    """Extend ``units`` responses against the fake server; the fraction checkpointed over time."""
    from selflengthen.config import parse_config
    from selflengthen.stages.extend import run_extend

    endpoint = {"base_url": base_url, "model": "fake", "max_concurrency": CONCURRENCY, "units_in_flight": limit}
    config = parse_config(
        {
            "run_id": "steady", "workdir": str(work), "languages": ["en"], "model": {"base": "unused"},
            "select": {"length_biased_initial": False}, "serving": {"extender": endpoint}, "storage": {"shard_size": shard_size},
        }
    )  # fmt: skip
    output = work / f"extended-{limit}"
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def monitor() -> None:
        best = 0
        while not stop.is_set():
            count = 0
            for path in glob.glob(str(output / "_checkpoint" / "units-*.json")):
                try:
                    count += len(json.loads(Path(path).read_text()))
                except (OSError, ValueError):
                    pass
            best = max(best, count)
            samples.append((time.monotonic(), best))
            time.sleep(0.05)

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    started = time.monotonic()
    manifest = run_extend(config, responses=str(work / "to-extend.jsonl"), output=str(output)).manifest
    ended = time.monotonic()
    stop.set()
    thread.join()

    def at(fraction: float) -> float:
        moment = started + fraction * (ended - started)
        return round(max((count for when, count in samples if when <= moment), default=0) / units, 3)

    return {
        "units": units, "units_in_flight": limit or 2 * CONCURRENCY, "seconds": round(ended - started, 1), "extended": manifest.count,
        "checkpointed_at": {"50%": at(0.5), "75%": at(0.75), "90%": at(0.9)},
    }  # fmt: skip


def serve(latency: float) -> None:
    """A fake OpenAI-compatible chat server answering after ``latency`` seconds; prints its port."""
    import socket

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    stage1 = "\n\n".join(" ".join(f"new{i}x{j}" for j in range(15)) + "." for i in range(3))
    stage2 = "\n\n".join(" ".join(f"more{i}x{j}" for j in range(30)) + "." for i in range(2))

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        await asyncio.sleep(latency)
        text = stage1 if body["messages"][-1]["role"] == "user" else stage2
        return {
            "id": "fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }  # fmt: skip

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=1024)).run(sockets=[sock])


# --------------------------------------------------------------------------- the parent


def run_child(*args: str) -> dict:
    """Run a child mode of this script; its last stdout line (JSON)."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_inputs(work: Path, records: int) -> None:
    """The queries of ``generate`` and the extended responses of ``sft-data``, 64 per part."""
    from selflengthen.datasets import write_records
    from selflengthen.fingerprint import Fingerprint
    from selflengthen.records import Query, Response
    from selflengthen.storage import get_storage

    queries = (Query(id=f"q{i:06d}", text=f"Write a long essay about subject number {i}.", language="en") for i in range(records))
    write_records(get_storage(), str(work / "queries"), queries, stage="bench", fingerprint=Fingerprint.of({}), shard_size=64)
    answers = [essay(i) for i in range(ESSAYS)]
    extended = (
        Response(
            id=f"x{i:06d}", query_id=f"q{i:06d}", query=f"Write a long essay about subject number {i}.", language="en", kind="extended",
            text=f"{answers[i % ESSAYS]}\n\nThis was subject {i}.", words=len(answers[i % ESSAYS].split()) + 4,
            initial_text=answers[i % ESSAYS][:1000], initial_words=150,
        )
        for i in range(records)
    )  # fmt: skip
    write_records(get_storage(), str(work / "extended"), extended, stage="bench", fingerprint=Fingerprint.of({}), shard_size=64)


def write_initial(work: Path, units: int) -> None:
    from selflengthen.records import Response

    draft = "\n\n".join(" ".join(f"draft{i}x{j}" for j in range(12)) + "." for i in range(4))
    rows = (
        Response(id=f"r{i:05d}", query_id=f"q{i:05d}", query=f"Write about subject {i}.", language="en", text=draft, words=48, finish_reason="stop")
        for i in range(units)
    )
    (work / "to-extend.jsonl").write_text("".join(row.model_dump_json() + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000], help="records of the scale runs")
    parser.add_argument("--extend-units", type=int, default=512, help="initial responses extended in the steadiness runs")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake server takes per request")
    parser.add_argument("--shard-size", type=int, default=16, help="storage.shard_size of the steadiness runs")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "serve":
            serve(float(rest[0]))
            return
        if mode == "extend":
            work, base_url, units, limit = rest
            result = child_extend(Path(work), base_url, int(units), int(limit) or None, args.shard_size)
        else:
            result = child_scale(mode, Path(rest[0]), int(rest[1]))
        print(json.dumps(result), flush=True)
        return

    scale: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="stage-scale-") as tmp:
        for records in args.sizes:
            work = Path(tmp) / str(records)
            work.mkdir()
            write_inputs(work, records)
            for stage in STAGES:
                scale.append(run_child("--child", stage, str(work), str(records)))
                print(json.dumps(scale[-1]), flush=True)

        work = Path(tmp) / "extend"
        work.mkdir()
        write_initial(work, args.extend_units)
        server = subprocess.Popen([sys.executable, __file__, "--child", "serve", str(args.latency)], stdout=subprocess.PIPE, text=True)
        try:
            base_url = f"http://127.0.0.1:{server.stdout.readline().strip()}/v1"
            steady = {}
            for name, limit in (("all_units_in_flight", args.extend_units), ("bounded", 0)):
                steady[name] = run_child("--shard-size", str(args.shard_size), "--child", "extend", str(work), base_url, str(args.extend_units), str(limit))
                print(name, json.dumps(steady[name]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)

    def growth(stage: str) -> float:
        rows = [row for row in scale if row["stage"] == stage]
        return round(rows[-1]["us_per_record"] / rows[0]["us_per_record"] - 1, 3)

    largest = max(args.sizes)
    summary = {
        stage: {
            "peak_rss_mb": {row["records"]: row["peak_rss_mb"] for row in scale if row["stage"] == stage},
            "us_per_record": {row["records"]: row["us_per_record"] for row in scale if row["stage"] == stage},
            "us_per_record_growth": growth(stage),
        }
        for stage in STAGES
    }
    finished_at_half = steady["bounded"]["checkpointed_at"]["50%"]
    result = {
        "command": "python bench/stage_scale.py " + " ".join(
            f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in vars(args).items() if value is not None and key != "child"
        ),
        "machine": {
            "cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "note": "shared machine: 2 cores, other work (tests, other sessions) running at the same time",
        },
        "goals": {
            "peak_rss_mb_at_largest": "< 1024, flat", "us_per_record_growth": "<= 0.10", "extend_finished_at_half": ">= 0.4",
        },
        "scale_runs": scale,
        "summary": summary,
        "extend_steadiness": {
            "latency_s": args.latency, "concurrency": CONCURRENCY, "shard_size": args.shard_size, "runs": steady,
        },
        "meets_goals": {
            "peak_rss": all(summary[s]["peak_rss_mb"][largest] < 1024 for s in summary),
            "us_per_record_growth": all(summary[s]["us_per_record_growth"] <= 0.10 for s in summary),
            "extend_finished_at_half": finished_at_half >= 0.4,
        },
        "extend_finished_at_half": finished_at_half,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for stage, figures in summary.items():
        print(f"{stage}: peak_rss_mb={figures['peak_rss_mb']} us_per_record={figures['us_per_record']} growth={figures['us_per_record_growth']}")
    print(f"extend_finished_at_half_all_units_in_flight={steady['all_units_in_flight']['checkpointed_at']['50%']}")
    print(f"extend_finished_at_half={finished_at_half}")


if __name__ == "__main__":
    main()
