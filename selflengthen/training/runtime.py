"""Where and how training runs: device, precision, attention, checkpointing, DeepSpeed, process group.

``auto`` settings follow the hardware: on a GPU bf16 (fp16 where bf16 is missing) and gradient
checkpointing; on CPU fp32 and no checkpointing (bf16 is an order of magnitude slower there and
checkpointing only trades time for memory the CPU has).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from selflengthen.config import TrainingConfig
from selflengthen.errors import TrainingError

PRESETS = ("zero2", "zero3", "zero3_offload")


@dataclass(frozen=True)
class Runtime:
    device: str
    precision: str
    attention: str
    gradient_checkpointing: bool
    deepspeed_name: str | None
    deepspeed: dict[str, Any] | None

    @property
    def zero_stage(self) -> int | None:
        return None if self.deepspeed is None else int(self.deepspeed.get("zero_optimization", {}).get("stage", 0))

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": self.precision,
            "attention": self.attention,
            "gradient_checkpointing": self.gradient_checkpointing,
            "deepspeed": self.deepspeed_name,
            "zero_stage": self.zero_stage,
        }


def preset_path(name: str) -> Path:
    """The packaged JSON of a DeepSpeed preset (zero2, zero3, zero3_offload)."""
    return Path(str(resources.files("selflengthen.training") / "deepspeed" / f"{name}.json"))


def load_deepspeed_config(value: str | None) -> dict[str, Any] | None:
    """A preset by name, or a DeepSpeed JSON file by path; None, "" or "none" mean no DeepSpeed."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    path = preset_path(value) if value in PRESETS else Path(value)
    if not path.is_file():
        raise TrainingError(
            f"training.deepspeed: {value!r} is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainingError(f"training.deepspeed: {path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise TrainingError(f"training.deepspeed: {path} must hold a JSON object")
    return config


def resolve_runtime(training: TrainingConfig) -> Runtime:
    """Resolve the ``auto`` settings of ``training`` for this machine."""
    on_gpu = torch.cuda.is_available()
    precision = training.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    if precision == "fp16" and not on_gpu:
        raise TrainingError("training.precision fp16 needs a GPU; use fp32 (or auto) on CPU")
    attention = training.attention
    if attention == "auto":
        # flash attention reads packed sequences' boundaries from position_ids (varlen) and skips the
        # masked-out blocks that sdpa computes over a packed row.
        attention = "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    checkpointing = training.gradient_checkpointing
    deepspeed = load_deepspeed_config(training.deepspeed)
    return Runtime(
        device="cuda" if on_gpu else "cpu",
        precision=precision,
        attention=attention,
        gradient_checkpointing=on_gpu if checkpointing == "auto" else checkpointing == "on",
        deepspeed_name=training.deepspeed if deepspeed is not None else None,
        deepspeed=copy.deepcopy(deepspeed),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_process_group_env() -> None:
    """Describe a one-process group when no launcher (torchrun, a TrainJob) has.

    DeepSpeed always joins a process group; a plain ``python`` process has none, so the variables
    torchrun would set are filled in for a world of one.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
