"""GPU-hours each serving layout holds for one iteration at the reference scale, and the fraction of
them spent generating.

Run:  .venv/bin/python bench/serving_layout.py        (a simulation: seconds on one CPU core)

The model (a discrete-event simulation of one iteration's generation phase):

* Work, from the default config (selflengthen/config.py) at the reference scale: 5,000 queries;
  self-instruct slots of up to ``self_instruct.max_attempts_per_slot`` proposals, each followed by a
  judge call, until one is accepted; ``generate.samples_per_query`` initial responses per query;
  per initial response ``extend.chains`` chains in parallel, each up to ``extend.attempts`` attempts
  of ``extend.rounds`` rounds, a round being two requests (stage 1 and the stage-2 continuation), the
  attempts of a chain one after another until one succeeds; the held-out answers beside.
* Token counts per request: the lengths of the default local run (bench/results/local_run_breakdown.json,
  iteration 1: initial and extended response words; the share of initial responses whose extension
  succeeded and of slots whose proposal was accepted), scaled by ``--length-scale`` to the reference's
  response lengths (words x 1.3 tokens); prompts: the query or the text being extended plus a fixed
  instruction.
* Per-request cost on a server: a request holds one of ``--slots`` batch slots (vLLM's continuous
  batching, max_num_seqs) for prompt / ``--prefill-tps`` + output / (``--decode-tps`` / slots)
  seconds, i.e. the server's aggregate decode rate shared by a full batch. The client keeps
  ``max_concurrency`` requests in flight per server, so a stage fills the batch until its queue drains.
  These rates are parameters (defaults: a 7B model in bf16 on one H100-class GPU); they set the
  absolute hours, while the layouts' busy fractions depend mostly on their ratio to ``--startup-s``.
* Servers: a server is held (its GPUs counted) from the start of its serve step to its teardown;
  it takes ``--startup-s`` to load the model before it answers. Busy: time with at least one request
  in flight; batch fill: the share of its batch slots in use over the time it is held. Layouts as the pipeline builds them (pipelines/servers.py): shared (one server: base,
  generator and extender by name), sequential (base, then generator, then extender, each started
  after the previous teardown), per_role (the three servers up from the phase's start, each torn
  down after its last stage).

Goal: ``shared`` keeps its GPUs busy at least 90% of the time it holds them. Figures go to
bench/results/serving_layout.json; the last line printed is ``serving_busy_fraction=<value>`` for
the default layout of a LoRA run (shared).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from selflengthen.config import RunConfig, parse_config

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "serving_layout.json"
BREAKDOWN = ROOT / "results" / "local_run_breakdown.json"
GOAL = 0.90
TOKENS_PER_WORD = 1.3
INSTRUCTION_TOKENS = 300  # the extension / proposal prompt around the text it carries


@dataclass
class Request:
    prompt: int
    output: int
    done: list = field(default_factory=list)  # callbacks when it finishes


@dataclass
class Server:
    name: str
    slots: int
    started: float
    ready: float
    stopped: float | None = None
    busy: float = 0.0
    slot_seconds: float = 0.0
    in_flight: int = 0
    last_change: float = 0.0

    def account(self, now: float) -> None:
        if self.in_flight:
            self.busy += now - self.last_change
            self.slot_seconds += self.in_flight * (now - self.last_change)
        self.last_change = now


class Simulation:
    """Requests flow from stages to servers; each server runs up to ``slots`` at once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.now = 0.0
        self.events: list = []
        self.counter = 0
        self.queues: dict[str, deque[Request]] = {}
        self.servers: dict[str, Server] = {}

    def at(self, time: float, action) -> None:
        self.counter += 1
        heapq.heappush(self.events, (time, self.counter, action))

    def start_server(self, name: str, then=None) -> None:
        server = Server(name, self.args.slots, self.now, self.now + self.args.startup_s, last_change=self.now)
        self.servers[name] = server
        self.queues.setdefault(name, deque())
        self.at(server.ready, lambda: (self.dispatch(name), then and then()))

    def stop_server(self, name: str) -> None:
        server = self.servers[name]
        server.account(self.now)
        server.stopped = self.now

    def submit(self, server: str, request: Request) -> None:
        self.queues.setdefault(server, deque()).append(request)
        self.dispatch(server)

    def dispatch(self, name: str) -> None:
        server = self.servers.get(name)
        if server is None or self.now < server.ready or server.stopped is not None:
            return
        queue = self.queues[name]
        while queue and server.in_flight < server.slots:
            request = queue.popleft()
            server.account(self.now)
            server.in_flight += 1
            cost = request.prompt / self.args.prefill_tps + request.output / (self.args.decode_tps / server.slots)
            self.at(self.now + cost, lambda request=request, server=server: self.finish(server, request))

    def finish(self, server: Server, request: Request) -> None:
        server.account(self.now)
        server.in_flight -= 1
        for callback in request.done:
            callback()
        self.dispatch(server.name)

    def run(self) -> float:
        while self.events:
            self.now, _, action = heapq.heappop(self.events)
            action()
        return self.now


def measured_lengths() -> dict[str, float]:
    """Iteration 1 of the default local run: mean words of initial and extended responses, and the
    share of initial responses extended and of self-instruct slots filled."""
    iteration = json.loads(BREAKDOWN.read_text(encoding="utf-8"))["report"][0]
    counts, lengths = iteration["counts"], iteration["lengths"]
    return {
        "initial_words": lengths["initial"]["mean"],
        "extended_words": lengths["extended"]["mean"],
        "extended_share": counts["extended"] / counts["responses"],
        "queries": counts["queries"],
    }


class Iteration:
    """The generation phase of one iteration as stages submitting requests to their role's server."""

    def __init__(self, sim: Simulation, config: RunConfig, lengths: dict[str, float], args: argparse.Namespace, server_of):
        self.sim, self.config, self.args, self.server_of = sim, config, args, server_of
        self.rng = random.Random(args.seed)
        scale = args.length_scale * TOKENS_PER_WORD
        self.initial_tokens = lengths["initial_words"] * scale
        self.extended_tokens = lengths["extended_words"] * scale
        # per attempt: the chance that a chain's attempt reaches min_ratio, from the local run's share
        # of responses extended within its attempts (local: 1 chain x 2 attempts)
        self.attempt_success = 1 - (1 - lengths["extended_share"]) ** (1 / 2)
        self.pending: dict[str, int] = {}
        self.finished: dict[str, float] = {}

    def jitter(self, tokens: float) -> int:
        return max(16, int(self.rng.expovariate(1 / tokens)))

    def stage(self, name: str, count: int, then):
        """The callback each of the stage's ``count`` units calls when done; ``then`` after the last."""
        self.pending[name] = count

        def one_done() -> None:
            self.pending[name] -= 1
            if not self.pending[name]:
                self.finished[name] = self.sim.now
                then()

        return one_done

    def self_instruct(self, then) -> None:
        slots = self.config.self_instruct.num_instructions
        done = self.stage("self-instruct", slots, then)
        server = self.server_of("base")
        for _ in range(slots):
            self._propose(server, self.config.self_instruct.max_attempts_per_slot, done)

    def _propose(self, server: str, attempts_left: int, done) -> None:
        def judged() -> None:
            if self.rng.random() < self.args.accept_rate or attempts_left == 1:
                done()
            else:
                self._propose(server, attempts_left - 1, done)

        judge = Request(INSTRUCTION_TOKENS + 60, 4, [judged])
        proposal = Request(INSTRUCTION_TOKENS, 60, [lambda: self.sim.submit(server, judge)])
        self.sim.submit(server, proposal)

    def heldout(self, then) -> None:
        count = self.config.report.heldout_queries * self.config.report.heldout_samples
        done = self.stage("heldout", count, then)
        for _ in range(count):
            self.sim.submit(self.server_of("generator"), Request(60, self.jitter(self.initial_tokens), [done]))

    def generate(self, then) -> None:
        count = self.config.self_instruct.num_instructions * self.config.generate.samples_per_query
        done = self.stage("generate", count, then)
        for _ in range(count):
            self.sim.submit(self.server_of("generator"), Request(60, self.jitter(self.initial_tokens), [done]))

    def extend(self, then) -> None:
        extend = self.config.extend
        responses = self.config.self_instruct.num_instructions * self.config.generate.samples_per_query
        done = self.stage("extend", responses * extend.chains, then)
        for _ in range(responses * extend.chains):
            self._attempt(extend.attempts, done)

    def _attempt(self, attempts_left: int, done) -> None:
        rounds = self.config.extend.rounds
        server = self.server_of("extender")
        text = self.initial_tokens
        growth = (self.extended_tokens / self.initial_tokens) ** (1 / rounds)

        def round_(index: int, text: float) -> None:
            if index == rounds:
                if self.rng.random() < self.attempt_success or attempts_left == 1:
                    done()
                else:
                    self._attempt(attempts_left - 1, done)
                return
            longer = text * growth
            stage2 = Request(int(INSTRUCTION_TOKENS + text + longer * 2 / 3), self.jitter(longer / 3), [lambda: round_(index + 1, longer)])
            stage1 = Request(int(INSTRUCTION_TOKENS + text), self.jitter(longer), [lambda: self.sim.submit(server, stage2)])
            self.sim.submit(server, stage1)

        round_(0, text)


def simulate(layout: str, config: RunConfig, lengths: dict[str, float], args: argparse.Namespace) -> dict:
    sim = Simulation(args)
    server_of = (lambda role: "shared") if layout == "shared" else (lambda role: role)
    iteration = Iteration(sim, config, lengths, args, server_of)
    gpus = config.serving.cluster.gpus * config.serving.cluster.replicas

    def after_all(*stages: str, then):
        def check() -> None:
            if all(stage in iteration.finished for stage in stages):
                then()

        return check

    if layout == "shared":
        sim.start_server("shared")
        stop = after_all("heldout", "extend", then=lambda: sim.stop_server("shared"))
        iteration.heldout(stop)
        iteration.self_instruct(lambda: iteration.generate(lambda: iteration.extend(stop)))
    elif layout == "per_role":
        for name in ("base", "generator", "extender"):
            sim.start_server(name)
        stop_generator = after_all("heldout", "generate", then=lambda: sim.stop_server("generator"))

        def generated() -> None:
            stop_generator()
            iteration.extend(lambda: sim.stop_server("extender"))

        def proposed() -> None:
            sim.stop_server("base")
            iteration.generate(generated)

        iteration.heldout(stop_generator)
        iteration.self_instruct(proposed)
    else:  # sequential: base -> generator -> extender, each after the previous teardown

        def extender_phase() -> None:
            sim.stop_server("generator")
            sim.start_server("extender")
            iteration.extend(lambda: sim.stop_server("extender"))

        def generator_phase() -> None:
            sim.stop_server("base")
            sim.start_server("generator")
            stop = after_all("heldout", "generate", then=extender_phase)
            iteration.heldout(stop)
            iteration.generate(stop)

        sim.start_server("base")
        iteration.self_instruct(generator_phase)
    wall = sim.run()
    held = sum(server.stopped - server.started for server in sim.servers.values())
    busy = sum(server.busy for server in sim.servers.values())
    return {
        "wall_hours": round(wall / 3600, 3),
        "gpu_hours_held": round(held * gpus / 3600, 2),
        "gpu_hours_generating": round(busy * gpus / 3600, 2),
        "busy_fraction": round(busy / held, 4),
        "batch_fill": round(sum(s.slot_seconds for s in sim.servers.values()) / (held * args.slots), 4),
        "servers": {name: round((s.stopped - s.started) / 3600, 3) for name, s in sim.servers.items()},
        "stage_end_hours": {name: round(t / 3600, 3) for name, t in iteration.finished.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000, help="self-instruct queries of the iteration (reference: 5,000)")
    parser.add_argument("--length-scale", type=float, default=6.0, help="reference response length / the local run's")
    parser.add_argument("--slots", type=int, default=256, help="sequences a server batches (vLLM max_num_seqs)")
    parser.add_argument("--decode-tps", type=float, default=3000.0, help="a server's output tokens per second at a full batch")
    parser.add_argument("--prefill-tps", type=float, default=20000.0, help="a server's prompt tokens per second")
    parser.add_argument("--startup-s", type=float, default=180.0, help="seconds from serve step to a server that answers")
    parser.add_argument("--accept-rate", type=float, default=0.5, help="share of judged proposals accepted")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # the reference defaults of a LoRA run on Kubeflow, whose default layout is shared
    reference = {
        "model": {"base": "s3://models/base"}, "workdir": "s3://runs", "storage": {"s3_endpoint": "minio:9000"},
        "execution": {"target": "kubeflow"}, "self_instruct": {"num_instructions": args.queries},
    }  # fmt: skip
    config = parse_config(reference, "the reference defaults")
    lengths = measured_lengths()
    layouts = {layout: simulate(layout, config, lengths, args) for layout in ("shared", "sequential", "per_role")}
    default = config.serving.layout
    results = {
        "command": "python bench/serving_layout.py " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
        ),
        "model": "discrete-event simulation of one iteration's generation phase (bench/serving_layout.py docstring)",
        "measured": "response lengths and the share of responses extended: the default local run "
        "(bench/results/local_run_breakdown.json); the server rates and start-up time are parameters, not GPU "
        "measurements (the simulation ran in seconds on the shared 2-core machine; its figures do not depend on it)",
        "scale": {
            "queries": args.queries, "samples_per_query": config.generate.samples_per_query,
            "extend": {"chains": config.extend.chains, "attempts": config.extend.attempts, "rounds": config.extend.rounds},
        },
        "measured_lengths": lengths,
        "layouts": layouts,
        "default_layout": default,
        "goal": f"busy_fraction of {default} >= {GOAL}",
        "meets_goal": layouts[default]["busy_fraction"] >= GOAL,
        "per_role_gpu_hours_over_shared": round(layouts["per_role"]["gpu_hours_held"] / layouts["shared"]["gpu_hours_held"], 3),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for layout, figures in layouts.items():
        print(
            f"{layout:<10} held {figures['gpu_hours_held']:>7.2f} GPU-h, generating {figures['gpu_hours_generating']:>7.2f} GPU-h, "
            f"busy {figures['busy_fraction']:.3f}, batch fill {figures['batch_fill']:.3f}, wall {figures['wall_hours']:.2f} h, "
            f"stages end (h) {figures['stage_end_hours']}"
        )
    print(f"per_role holds {results['per_role_gpu_hours_over_shared']:.2f}x the GPU-hours of shared")
    print(f"serving_busy_fraction={layouts[default]['busy_fraction']:.4f}")


if __name__ == "__main__":
    main()
