"""docs/method.md, step 7: supervised fine-tuning of one role (LoRA or full, DeepSpeed, resumable).

Entry points: :func:`train_role` (library; the pipeline calls it inline), ``selflengthen train``
(CLI) and ``python -m selflengthen.training`` (the same command, for torchrun and TrainJobs; see
``launch.py``). The output layout is documented in ``output.py``; reading an output
(:func:`read_trained_model`) does not import torch or transformers.
"""

from typing import Any

from selflengthen.training.output import TrainedModel, read_trained_model, uses_adapter_from, writes_model

__all__ = ["TrainedModel", "read_trained_model", "train_role", "uses_adapter_from", "writes_model"]


def __getattr__(name: str) -> Any:
    if name == "train_role":  # imported on first use: it pulls in torch, transformers and DeepSpeed
        from selflengthen.training.trainer import train_role

        return train_role
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
