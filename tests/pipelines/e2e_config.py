"""The tests' run config: the local default (selflengthen/configs/tiny-local.yaml) made small enough for CI.

Counts and token budgets are cut so that a 2-iteration run on the tiny model takes a few minutes
on 2 CPU cores, and the Generator trains half the default's steps per iteration (see below); the
rest (sampling, checks, training settings, held-out set) stays the default's.
The evaluation answers ``longen-sample.jsonl``: four English LonGen prompts, one per constraint type
(from QwenLM/Self-Lengthen, eval/LonGen.jsonl, Apache-2.0).
"""

from pathlib import Path
from typing import Any

from selflengthen.config import RunConfig, default_config_path, load_config

E2E_OVERRIDES: dict[str, Any] = {
    "self_instruct.num_instructions": 4,
    "self_instruct.max_attempts_per_slot": 3,
    "generate.max_retries": 2,
    "generate.sampling.max_tokens": 768,
    "extend.rounds": 1,
    # Two chains per response (the reference's number): a 4-query iteration then trains on up to 16
    # extended answers, not 8; with 4 or fewer, 20 steps over-fit and the held-out answers shrank.
    "extend.chains": 2,
    "extend.sampling.max_tokens": 768,
    # With a handful of extended responses, rank-based dropping (keep 1 - 2 rank^3) can drop them
    # all and leave nothing to train on; the selection stage's own tests cover it.
    "select.length_biased": False,
    "select.length_biased_initial": False,
    "length_control.extra_queries": 2,
    "length_control.rewrite_sampling.max_tokens": 96,
    "eval.max_prompts": 2,
    "eval.sampling.max_tokens": 256,
    "report.heldout_samples": 1,
    "pipeline.retries": 0,
    # Half the default's steps per iteration, so the Generator ends the two iterations at 20 full
    # steps at 1e-4, the budget measured to lengthen the tiny model's answers. With 20 + 20, two runs
    # gave held-out means of 245 -> 326 -> 198 and 238 -> 370 -> 256 words: iteration 2 shortened them.
    # With 10 + 10 (one run): 269 -> 414 -> 292; iteration 2 still gives back part of iteration 1's gain.
    "training.max_steps": 10,
}


def e2e_config(model_dir: Path, workdir: str, **overrides: Any) -> RunConfig:
    """The tests' config: the tiny model at ``model_dir``, artefacts at ``workdir``, the bundled LonGen
    prompts for the evaluation; ``overrides`` are dotted keys as in ``--set``."""
    longen = Path(__file__).resolve().parent / "longen-sample.jsonl"
    return load_config(
        default_config_path(),
        {
            **E2E_OVERRIDES,
            "model.base": str(model_dir),
            "model.build_tiny": False,
            "workdir": workdir,
            "eval.benchmark_files": {"longen": str(longen)},
            **overrides,
        },
    )
