"""How long `selflengthen --help` takes and what it loads, in this tree and in an earlier commit.

Run:  .venv/bin/python bench/cli_startup.py [--baseline REV] [--runs N]

Each run is a fresh interpreter (`python -m selflengthen --help`, as a user or a KFP task starts it),
this tree and the baseline commit (extracted with `git archive` into a temporary folder) taking
turns, so both see the same machine load. Figures (median wall seconds of each, whether torch or
transformers were loaded) go to bench/results/cli_startup.json, with each run's CPU seconds (user
plus system: what the run costs, whatever else the machine runs); the last line printed is
``help_seconds=<median wall seconds of this tree>`` (goal: under 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cli_startup.json"
GOAL_S = 1.0
# `python -m selflengthen --help`, then the heavy libraries it loaded as a JSON list on stderr.
PROBE = """
import json, runpy, sys
sys.argv = ["selflengthen", "--help"]
try:
    runpy.run_module("selflengthen", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules} & {"torch", "transformers", "openai"})), file=sys.stderr)
"""


def help_run(tree: Path) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds of one `--help` with ``tree`` first on the path, and the heavy libraries it loaded."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tree, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, json.loads(result.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=5, help="runs of each tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        trees = {"this_tree": ROOT, "baseline": Path(folder)}
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        cpu_seconds: dict[str, list[float]] = {name: [] for name in trees}
        loaded: dict[str, list[str]] = {}
        for _ in range(args.runs):
            for name, tree in trees.items():
                wall, cpu, modules = help_run(tree)
                seconds[name].append(round(wall, 3))
                cpu_seconds[name].append(round(cpu, 3))
                loaded[name] = modules
    figures = {
        "command": f"{Path(sys.executable).name} bench/cli_startup.py --baseline {args.baseline} --runs {args.runs}",
        "baseline_commit": subprocess.run(["git", "rev-parse", args.baseline], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work (load average {os.getloadavg()[0]:.1f} at the end)",
        "goal": f"help_seconds < {GOAL_S}",
        **{f"{name}_median_s": round(statistics.median(values), 3) for name, values in seconds.items()},
        **{f"{name}_median_cpu_s": round(statistics.median(values), 3) for name, values in cpu_seconds.items()},
        "runs_s": seconds,
        "runs_cpu_s": cpu_seconds,
        "loaded": loaded,
    }
    figures["meets_goal"] = figures["this_tree_median_s"] < GOAL_S
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"help_seconds={figures['this_tree_median_s']}")


if __name__ == "__main__":
    main()
