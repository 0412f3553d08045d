"""Wall-time breakdown of the default local run: orchestration against model work.

Run:  .venv/bin/python bench/local_run_breakdown.py      (the whole default run: many minutes on 2 CPU cores)

Runs ``selflengthen run`` (the packaged selflengthen/configs/tiny-local.yaml unless ``--config``) as a
user would, in a fresh folder, and measures its wall time. Every step records when its process started,
when its library call started and when it ended (``timings.jsonl`` of the run's folder), so the wall
time splits into

* model work: the steps' library calls, by kind: generation (self-instruct, answers, extension,
  length control, evaluation), training, serving (model servers up and down), preparation (the
  base model; building the tiny model when it is missing), data (selection, SFT data, report);
* orchestration: everything else: the CLI, compiling the graph, kfp.local, and each step's
  process start-up (interpreter and imports, measured apart as ``task_startup_s``).

Goal: orchestration under a quarter of the wall time. Figures go to
bench/results/local_run_breakdown.json; the last line printed is ``orchestration_fraction=<value>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from selflengthen.orchestration.steps import TIMINGS_NAME

RESULTS = Path(__file__).resolve().parent / "results" / "local_run_breakdown.json"
GOAL = 0.25
KINDS = {
    "generation": ("self-instruct", "generate", "heldout", "extend", "length-control", "evaluate"),
    "training": ("train",),
    "serving": ("serve", "teardown", "teardown-run"),
    "preparation": ("prepare",),
    "data": ("select", "sft-data", "report"),
}


def breakdown(wall_s: float, timings: list[dict]) -> dict:
    """Seconds per kind of model work, task start-up, orchestration, and the orchestration fraction."""
    kind_of = {step: kind for kind, steps in KINDS.items() for step in steps}
    work: dict[str, float] = defaultdict(float)
    for entry in timings:
        work[kind_of[entry["step"]]] += entry["end"] - entry["start"]
    startup = sum(entry["start"] - entry["process_start"] for entry in timings)
    orchestration = wall_s - sum(work.values())
    return {
        "wall_s": round(wall_s, 1),
        "steps": len(timings),
        "work_s": {kind: round(work[kind], 1) for kind in KINDS},
        "task_startup_s": round(startup, 1),
        "task_startup_per_step_s": round(startup / len(timings), 2) if timings else None,
        "orchestration_s": round(orchestration, 1),
        "orchestration_fraction": round(orchestration / wall_s, 4),
        "model_work_fraction": round((work["generation"] + work["training"]) / wall_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="run config (default: selflengthen/configs/tiny-local.yaml)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="config override dotted.key=value")
    parser.add_argument("--workdir", type=Path, help="the run's folder (default: a fresh temporary one)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="selflengthen-bench-")) / "run"
    command = [sys.executable, "-m", "selflengthen", "run", "--workdir", str(workdir)]
    command += ["--config", args.config] if args.config else []
    command += [item for override in args.overrides for item in ("--set", override)]

    started = time.monotonic()
    subprocess.run(command, check=True)
    wall_s = time.monotonic() - started

    timings = [json.loads(line) for line in (workdir / TIMINGS_NAME).read_text().splitlines()]
    figures = breakdown(wall_s, timings)
    results = {
        "command": " ".join(command[1:]),
        "goal": f"orchestration_fraction < {GOAL}",
        "meets_goal": figures["orchestration_fraction"] < GOAL,
        **figures,
        "report": json.loads((workdir / "report.json").read_text())["iterations"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall {figures['wall_s']} s over {figures['steps']} steps")
    for kind, seconds in figures["work_s"].items():
        print(f"  {kind:<12} {seconds:8.1f} s")
    print(f"  {'orchestration':<12} {figures['orchestration_s']:8.1f} s (of which step start-up {figures['task_startup_s']} s)")
    print(f"results: {RESULTS}")
    print(f"orchestration_fraction={figures['orchestration_fraction']:.4f}")


if __name__ == "__main__":
    main()
