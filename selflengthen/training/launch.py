"""Command lines that run the train command in one or many processes.

Every process runs ``python -m selflengthen.training`` with the arguments of ``selflengthen
train``; torchrun starts the processes:

* on one machine: :func:`local_torchrun_command` (``selflengthen train --nproc-per-node N``);
* in a Kubeflow Trainer TrainJob: :func:`trainjob_command`. The torch runtime sets
  ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
  ``PET_MASTER_PORT``, which torchrun reads as its defaults, so the command names none of them.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Sequence

MODULE = "selflengthen.training"


@dataclass(frozen=True)
class TrainingRequest:
    """One training run's arguments, the same wherever it runs: in the step's process, under local
    torchrun (``selflengthen train``, the inline train step on Kubeflow) or in a TrainJob."""

    role: str
    data_uri: str
    base_model_uri: str
    output_uri: str
    adapter_from_uri: str | None = None

    def arguments(self, *, config_path: str | None, overrides: Sequence[str] = ()) -> list[str]:
        """The arguments of ``selflengthen train`` (and of ``python -m selflengthen.training``)."""
        arguments = ["--role", self.role, "--data", self.data_uri, "--base-model", self.base_model_uri, "--output", self.output_uri]
        if config_path:
            arguments += ["--config", config_path]
        if self.adapter_from_uri:
            arguments += ["--adapter-from", self.adapter_from_uri]
        for override in overrides:
            arguments += ["--set", override]
        return arguments

    def keywords(self) -> dict[str, str | None]:
        """The keyword arguments of :func:`selflengthen.training.train_role` (besides the config)."""
        return asdict(self)


def local_torchrun_command(arguments: Sequence[str], nproc_per_node: int) -> list[str]:
    """torchrun on this machine only (a private rendezvous), ``nproc_per_node`` processes."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
        "-m", MODULE, *arguments,
    ]  # fmt: skip


def trainjob_command(arguments: Sequence[str]) -> list[str]:
    """The container command of a TrainJob's trainer (nodes and processes from PET_* variables)."""
    return ["torchrun", "-m", MODULE, *arguments]
