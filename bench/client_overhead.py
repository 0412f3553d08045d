"""Requests per second of `selflengthen generate` against a minimal raw driver, on one fast fake server.

Run:  .venv/bin/python bench/client_overhead.py [--queries 2000 20000] [--concurrency 64 256] [--pairs 3]

A fake OpenAI-compatible server (asyncio, HTTP/1.1 keep-alive, a fixed 3.5 KB English answer that
passes every check, no max_model_len on its model card, like ``transformers serve``) runs in its own
process on 127.0.0.1 (a free port) and is stopped by its PID, so only the clients' own costs show.
For each number of queries and concurrency, pairs of runs take turns (raw first in one pair,
generate first in the next), each a fresh process on the same queries:

- raw: ``openai.AsyncOpenAI`` (no retries) + an ``asyncio.Semaphore`` of the concurrency + one JSON
  line per result, the same sampling fields as the stage sends;
- generate: ``python -m selflengthen generate`` (one sample per query, no check retries, the
  endpoint's ``max_concurrency`` the concurrency), writing its checkpointed dataset.

Each run's requests/s is counted by the server, from its first request to its last answer (start-up
and the stage's finalizing are reported apart, as whole-process seconds, and so is each process's
CPU time: ``cpu_ratio`` is raw's over generate's, start-up included). A pair's ratio is
generate's requests/s over raw's; figures go to bench/results/client_overhead.json and the last
line printed is ``client_throughput_ratio=<median of the pairs' ratios>`` (goal: at least 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "client_overhead.json"
GOAL = 0.95
MODEL = "fake"
SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1, "max_tokens": 1024}


# ----------------------------------------------------------------------------- the fake server


def answer_text(words: int = 550) -> str:
    """About 3.5 KB of English that passes every check (distinct made-up words, a final full stop)."""
    letters = "bcdfghjklmnpqrstvwxz"
    tokens = [f"{letters[i % 20]}{letters[i // 20 % 20]}{letters[i // 400 % 20]}o{i % 7}" for i in range(words)]
    sentences = [" ".join(tokens[i : i + 11]) + "." for i in range(0, words, 11)]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


async def serve(port: int) -> None:
    """Answer /v1/models, /v1/chat/completions (always the same answer) and /stats (requests
    counted since the last /stats, first arrival and last answer times; the count restarts)."""
    text = answer_text()
    completion = json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 700, "total_tokens": 710},
    }).encode()  # fmt: skip
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
    stats = {"requests": 0, "first": None, "last": None}

    def reply(body: bytes, status: bytes = b"200 OK") -> bytes:
        return b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    chat_reply = reply(completion)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1]
                if path.endswith(b"/chat/completions"):
                    stats["requests"] += 1
                    stats["first"] = stats["first"] or time.time()
                    writer.write(chat_reply)
                    stats["last"] = time.time()
                elif path.endswith(b"/models"):
                    writer.write(reply(models))
                elif path == b"/stats":
                    writer.write(reply(json.dumps(stats).encode()))
                    stats.update(requests=0, first=None, last=None)
                else:
                    writer.write(reply(b'{"detail": "Not Found"}', b"404 Not Found"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# ----------------------------------------------------------------------------- the raw driver


async def raw_driver(base_url: str, queries: Path, output: Path, concurrency: int) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    rows = [json.loads(line) for line in queries.read_text().splitlines()]
    extra = {"top_k": SAMPLING["top_k"], "repetition_penalty": SAMPLING["repetition_penalty"]}

    async def one(row: dict) -> str:
        async with semaphore:
            response = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": row["text"]}], temperature=SAMPLING["temperature"],
                top_p=SAMPLING["top_p"], max_tokens=SAMPLING["max_tokens"], extra_body=extra,
            )  # fmt: skip
        return json.dumps({"id": row["id"], "text": response.choices[0].message.content}) + "\n"

    with output.open("w") as sink:
        for finished in asyncio.as_completed([one(row) for row in rows]):
            sink.write(await finished)
    await client.close()


# ----------------------------------------------------------------------------- the comparison


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def run(kind: str, command: list[str], root: str, queries: int) -> dict:
    """One run as a fresh process: its whole-process seconds, its CPU seconds (start-up included)
    and the server's view of its requests."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed ({result.returncode}): {result.stderr[-2000:]}")
    stats = get_json(f"{root}/stats")
    if stats["requests"] != queries:
        raise SystemExit(f"{kind}: the server saw {stats['requests']} requests, expected {queries}")
    window = stats["last"] - stats["first"]
    return {
        "process_s": round(seconds, 2), "process_cpu_s": round(cpu, 2), "requests_window_s": round(window, 3),
        "requests_per_s": round(queries / window, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the figures go")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--raw", nargs=4, help=argparse.SUPPRESS)  # the raw driver process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.raw:
        base_url, queries, output, concurrency = args.raw
        asyncio.run(raw_driver(base_url, Path(queries), Path(output), int(concurrency)))
        return

    port = free_port()
    root, base_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    cases, ratios = [], []
    try:
        for _ in range(100):
            try:
                get_json(f"{root}/v1/models")
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            for count in args.queries:
                queries = work / f"queries-{count}.jsonl"
                queries.write_text("".join(
                    json.dumps({"id": f"q{i}", "text": f"Write a long essay about subject number {i}.", "language": "en"}) + "\n"
                    for i in range(count)
                ))  # fmt: skip
                for concurrency in args.concurrency:
                    config = work / f"config-{concurrency}.yaml"
                    config.write_text(json.dumps({
                        "run_id": "bench", "workdir": str(work / "runs"), "model": {"base": "unused"},
                        "serving": {"generator": {"base_url": base_url, "model": MODEL, "max_concurrency": concurrency,
                                                  "chat_template_continuation": True}},
                        "generate": {"samples_per_query": 1, "max_retries": 0, "sampling": SAMPLING},
                    }))  # fmt: skip
                    pairs = []
                    for index in range(args.pairs):
                        output = work / f"out-{count}-{concurrency}-{index}"
                        commands = {
                            "raw": [sys.executable, __file__, "--raw", base_url, str(queries), str(output) + ".jsonl", str(concurrency)],
                            "generate": [sys.executable, "-m", "selflengthen", "generate", "-i", str(queries), "-o", str(output), "-c", str(config)],
                        }
                        order = ["raw", "generate"] if index % 2 == 0 else ["generate", "raw"]
                        pair = {kind: run(kind, commands[kind], root, count) for kind in order}
                        pair["ratio"] = round(pair["generate"]["requests_per_s"] / pair["raw"]["requests_per_s"], 3)
                        pair["cpu_ratio"] = round(pair["raw"]["process_cpu_s"] / pair["generate"]["process_cpu_s"], 3)
                        pairs.append(pair)
                        ratios.append(pair["ratio"])
                        print(json.dumps({"queries": count, "concurrency": concurrency, **pair}), flush=True)
                    cases.append({"queries": count, "concurrency": concurrency, "pairs": pairs,
                                  "median_ratio": statistics.median(pair["ratio"] for pair in pairs)})  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    ratio = round(statistics.median(ratios), 3)
    report = {
        "command": "python bench/client_overhead.py --queries " + " ".join(map(str, args.queries))
        + " --concurrency " + " ".join(map(str, args.concurrency)) + f" --pairs {args.pairs}"
        + ("" if args.results == RESULTS else f" --results {args.results}"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work (load average {os.getloadavg()[0]:.1f} at the end)",
        "goal": f"client_throughput_ratio >= {GOAL}",
        "cases": cases,
        "client_throughput_ratio": ratio,
        "meets_goal": ratio >= GOAL,
    }
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"client_throughput_ratio={ratio}")


if __name__ == "__main__":
    main()
