"""Helpers of the training tests: small SFT datasets, run configs, child training processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from selflengthen.config import RunConfig, parse_config
from selflengthen.records import ChatMessage, SftExample

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 420

# Short question/answer pairs the tiny model can learn by heart in a few dozen steps.
FACTS = [
    ("Name the colour of the sky.", "The sky is blue on a clear day, and grey when clouds cover it."),
    ("What do bees make?", "Bees make honey from the nectar of flowers and store it in their hive."),
    ("Where do fish live?", "Fish live in water: rivers, lakes and the open sea."),
    ("What is ice?", "Ice is frozen water; it melts back into water when it gets warm."),
    ("Why do we sleep?", "We sleep so that the body and the mind can rest and recover."),
    ("What does a baker do?", "A baker makes bread and cakes, usually early in the morning."),
]


def sft_example(index: int, question: str, answer: str, role: str = "generator") -> SftExample:
    return SftExample(
        id=f"ex-{index}",
        role=role,
        messages=[ChatMessage(role="user", content=question), ChatMessage(role="assistant", content=answer)],
        language="en",
    )


def write_jsonl(path: Path, examples: list[SftExample]) -> str:
    path.write_text("".join(example.model_dump_json() + "\n" for example in examples), encoding="utf-8")
    return str(path)


def make_config(base: Path | str, storage: dict[str, Any] | None = None, **training: Any) -> RunConfig:
    """A run config for the tiny model: no DeepSpeed, packed batches (recipe packed), a step budget."""
    settings = {
        "method": "lora",
        "recipe": "packed",
        "max_steps": 4,
        "learning_rate": 1e-3,
        "max_length": 256,
        "per_device_batch_tokens": 128,
        "deepspeed": None,
        "checkpoint_every_steps": 100,
        "logging_steps": 1,
    }
    settings.update(training)
    return parse_config(
        {"run_id": "train-test", "model": {"base": str(base)}, "training": settings, "storage": storage or {}}
    )


def losses(metrics: dict) -> list[float]:
    return [entry["loss"] for entry in metrics["loss_curve"]]


def read_metrics(output: Path) -> dict:
    return json.loads((output / "metrics.json").read_text())


def generates(model_dir: Path | str, model: Any) -> None:
    """The model answers a chat prompt with new tokens."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is ice?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh training process: no launcher variables, one thread."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cli(*arguments: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m selflengthen <arguments>`` in a fresh process, as a user or a TrainJob starts it."""
    return subprocess.run(
        [sys.executable, "-m", "selflengthen", *arguments],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=child_env(**env),
    )  # fmt: skip


def train_arguments(config: RunConfig, folder: Path, data: str, base: str, output: str) -> list[str]:
    """``train`` arguments for ``config`` (written to ``folder/config.yaml``)."""
    config_path = folder / "config.yaml"
    config_path.write_text(config.to_yaml())
    return ["train", "--config", str(config_path), "--role", "generator", "--data", data, "--base-model", base, "--output", output]


_KILLED_RUN = """
import os, signal, sys
from transformers import TrainerCallback
from selflengthen.config import load_config
from selflengthen.training import train_role

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[5]):
            os.kill(os.getpid(), signal.SIGKILL)

train_role(load_config(sys.argv[1]), role="generator", data_uri=sys.argv[2], base_model_uri=sys.argv[3],
           output_uri=sys.argv[4], callbacks=[KillAtStep()])
"""


def run_killed(config: RunConfig, folder: Path, data: str, base: str, output: str, step: int, **env: str) -> None:
    """train_role in a child process that SIGKILLs itself at the end of training step ``step``."""
    config_path = folder / "killed-config.yaml"
    config_path.write_text(config.to_yaml())
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(config_path), data, base, output, str(step)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=child_env(**env),
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr[-4000:]
