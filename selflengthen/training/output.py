"""What a training run writes below its output URI, its checkpoints, and how readers find the result.

Layout of ``<output>/`` (a local path or ``s3://``)::

    adapter/      method lora: the LoRA adapter (peft format) and the tokenizer
    model/        a full model and the tokenizer: the fine-tuned model (method full), or the adapter
                  merged into its base (method lora with merge_each_iteration or save_merged)
    metrics.json  steps, tokens, loss curve, tokens/s, peak memory, padding and data accounting
    checkpoints/  only while the run is unfinished: checkpoint-<step>/ (Trainer + DeepSpeed state,
                  optimizer and scheduler included) and checkpoint-<step>/COMPLETE once it is whole
    COMPLETE      written last: a JSON :class:`TrainedModel`; nothing above counts without it

Local outputs are trained in place; for s3:// outputs the files are made in a local work folder
(below ``SELFLENGTHEN_CACHE``) and uploaded, checkpoints as soon as each is saved.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from selflengthen.config import TrainingConfig
from selflengthen.modelio import model_cache_dir
from selflengthen.storage import Storage, is_s3_uri, join_uri

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
METRICS_NAME = "metrics.json"
COMPLETE_NAME = "COMPLETE"
CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"/checkpoint-(\d+)/" + COMPLETE_NAME + "$")
KEEP_CHECKPOINTS = 2


class TrainedModel(BaseModel):
    """The ``COMPLETE`` marker: what the run produced, as URIs."""

    model_config = ConfigDict(extra="forbid")

    role: str
    method: Literal["lora", "full"]
    base_model: str
    adapter: str | None
    model: str | None
    steps: int
    completed_at: datetime

    @property
    def serving_model(self) -> str:
        """The folder a server loads: the full (or merged) model, else the base (plus ``adapter``)."""
        return self.model or self.base_model


def uses_adapter_from(training: TrainingConfig) -> bool:
    """Whether a run continues the previous iteration's adapter (LoRA on a fixed base)."""
    return training.method == "lora" and training.continue_adapter and not training.merge_each_iteration


def writes_model(training: TrainingConfig) -> bool:
    """Whether a run writes ``model/`` (a full model, or the adapter merged into its base)."""
    return training.method == "full" or training.merge_each_iteration or training.save_merged


def read_trained_model(storage: Storage, output_uri: str) -> TrainedModel | None:
    """The result of a finished run at ``output_uri``; None while it is missing or unfinished."""
    marker = join_uri(output_uri, COMPLETE_NAME)
    if not storage.exists(marker):
        return None
    return TrainedModel.model_validate_json(storage.read_text(marker))


def read_metrics(storage: Storage, output_uri: str) -> dict:
    return json.loads(storage.read_text(join_uri(output_uri, METRICS_NAME)))


def local_root(output_uri: str) -> Path:
    """Where the run's files are made: the output itself when local, else a work folder."""
    if is_s3_uri(output_uri):
        return model_cache_dir() / "train" / hashlib.sha256(output_uri.encode()).hexdigest()[:16]
    return Path(output_uri.removeprefix("file://"))


def barrier() -> None:
    """Wait for every process of the group (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def publish(storage: Storage, output_uri: str, root: Path, trained: TrainedModel, metrics: dict) -> None:
    """Upload (for s3://) the result folders, then metrics.json, then the COMPLETE marker last."""
    if is_s3_uri(output_uri):
        for name in (ADAPTER_DIR, MODEL_DIR):
            if (root / name).is_dir():
                storage.upload_dir(root / name, join_uri(output_uri, name))
    storage.write_text(join_uri(output_uri, METRICS_NAME), json.dumps(metrics, indent=2))
    storage.write_text(join_uri(output_uri, COMPLETE_NAME), trained.model_dump_json(indent=2))


def carry_forward(storage: Storage, training: TrainingConfig, role: str, previous: str, output_uri: str, reason: str) -> dict:
    """Finish the run at ``output_uri`` without training: its result is the model at ``previous``
    (a plain model folder or an earlier run's output), after 0 steps. Returns its metrics."""
    earlier = read_trained_model(storage, previous)
    now = datetime.now(timezone.utc)
    if earlier is not None:
        trained = earlier.model_copy(update={"role": role, "steps": 0, "completed_at": now})
    else:
        model = previous if writes_model(training) else None
        trained = TrainedModel(
            role=role, method=training.method, base_model=previous, adapter=None, model=model, steps=0, completed_at=now
        )
    metrics = {"steps": 0, "examples": 0, "carried_forward": previous, "reason": reason}
    publish(storage, output_uri, local_root(output_uri), trained, metrics)
    return metrics


class CheckpointStore:
    """The run's checkpoints under ``<output>/checkpoints``; one counts once its marker is written."""

    def __init__(self, storage: Storage, output_uri: str, root: Path):
        self.storage = storage
        self.uri = join_uri(output_uri, CHECKPOINTS_DIR)
        self.local_dir = root / CHECKPOINTS_DIR  # the Trainer's output_dir
        self.remote = is_s3_uri(output_uri)

    def complete_steps(self) -> list[int]:
        return sorted(int(match.group(1)) for uri in self.storage.list(self.uri) if (match := _CHECKPOINT.search(uri)))

    def fetch(self, step: int) -> Path:
        """The local folder of checkpoint ``step``, downloaded first when the output is remote."""
        local = self.local_dir / f"checkpoint-{step}"
        if self.remote:
            shutil.rmtree(local, ignore_errors=True)
            self.storage.download_dir(join_uri(self.uri, f"checkpoint-{step}"), local)
        return local

    def commit(self, step: int, *, local_main: bool, world_main: bool) -> None:
        """After every process saved checkpoint ``step``: upload it (remote), then mark it complete.

        Every node's first process uploads what its node wrote, so the remote copy of a multi-node
        checkpoint holds every rank's shards.
        """
        name = f"checkpoint-{step}"
        if self.remote and local_main:
            self.storage.upload_dir(self.local_dir / name, join_uri(self.uri, name))
        barrier()
        if world_main:
            self.storage.write_text(join_uri(self.uri, name, COMPLETE_NAME), json.dumps({"step": step}))
            if self.remote:
                for old in self.complete_steps()[:-KEEP_CHECKPOINTS]:
                    self.storage.delete_prefix(join_uri(self.uri, f"checkpoint-{old}"))
        barrier()


def clean_up(store: CheckpointStore, root: Path, *, world_main: bool, local_main: bool) -> None:
    """After COMPLETE: drop the checkpoints, and for a remote output each node's work folder."""
    if world_main:
        store.storage.delete_prefix(store.uri)
    if local_main and store.remote:
        shutil.rmtree(root, ignore_errors=True)
