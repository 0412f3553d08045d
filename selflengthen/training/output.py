"""What a training run writes below its output URI, its checkpoints, and how readers find the result.

Layout of ``<output>/`` (a local path or ``s3://``)::

    adapter/      method lora: the LoRA adapter (peft format) and the tokenizer
    model/        a full model and the tokenizer: the fine-tuned model (method full), or the adapter
                  merged into its base (method lora with merge_each_iteration or save_merged)
    metrics.json  steps, tokens, loss curve, tokens/s, peak memory, padding and data accounting
    checkpoints/  only while the run is unfinished: checkpoint-<step>/ (Trainer + DeepSpeed state,
                  optimizer and scheduler included) and checkpoint-<step>/COMPLETE once it is whole;
                  fingerprint.json, written with the first checkpoint
    COMPLETE      written last: a JSON :class:`TrainedModel` with the run's fingerprint; nothing
                  above counts without it

The fingerprint (:func:`training_fingerprint`) holds the training settings, the role, the data's
checksum and the starting model and adapter; a rerun keeps a complete output or resumes a
checkpoint only under the same fingerprint (:func:`selflengthen.fingerprint.reconcile`).

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

from selflengthen.config import RunConfig, TrainingConfig
from selflengthen.datasets import input_checksum
from selflengthen.fingerprint import FINGERPRINT_NAME, Fingerprint, config_settings, parse_fingerprint, reconcile
from selflengthen.modelio import model_cache_dir
from selflengthen.storage import Storage, is_s3_uri, join_uri

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
METRICS_NAME = "metrics.json"
COMPLETE_NAME = "COMPLETE"
CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"/checkpoint-(\d+)/" + COMPLETE_NAME + "$")
KEEP_CHECKPOINTS = 2
# Training settings that do not change the trained model (how often it logs or checkpoints, what
# happens without data, whether model code may run).
NOT_RESULT_SETTINGS = (
    "training.logging_steps", "training.checkpoint_every_steps", "training.on_no_examples", "training.trust_remote_code",
)  # fmt: skip


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
    fingerprint: Fingerprint | None = None

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


def model_identity(storage: Storage, uri: str | None) -> str | None:
    """A model as a fingerprint records it: its URI, plus the fingerprint digest of the training
    output it is (or whose adapter/ or model/ folder it is), so a retrained model counts as changed."""
    if uri is None:
        return None
    parent, _, name = uri.rstrip("/").rpartition("/")
    for candidate in (uri, parent) if name in (ADAPTER_DIR, MODEL_DIR) else (uri,):
        trained = read_trained_model(storage, candidate)
        if trained is not None and trained.fingerprint is not None:
            return f"{uri} (trained, fingerprint {trained.fingerprint.digest})"
    return uri


def training_fingerprint(
    storage: Storage, config: RunConfig, role: str, data_uri: str, base_model_uri: str, adapter_from_uri: str | None
) -> Fingerprint:
    """What a training output is made from: the training settings, the role, the data, the start."""
    settings = {key: value for key, value in config_settings(config, ["training"]).items() if key not in NOT_RESULT_SETTINGS}
    settings.update(
        role=role, base_model=model_identity(storage, base_model_uri), adapter_from=model_identity(storage, adapter_from_uri)
    )
    return Fingerprint.of(settings, {data_uri: input_checksum(storage, data_uri)})


def discard_output(storage: Storage, output_uri: str) -> None:
    """Delete a training output (its COMPLETE marker first) and its local work folder."""
    storage.delete(join_uri(output_uri, COMPLETE_NAME))
    storage.delete_prefix(output_uri)
    shutil.rmtree(local_root(output_uri), ignore_errors=True)


def existing_result(storage: Storage, output_uri: str, fingerprint: Fingerprint, on_change: str) -> TrainedModel | None:
    """The finished run at ``output_uri`` when it was made with ``fingerprint`` (a rerun keeps it);
    None when there is none or (``on_change`` redo) it was stale and is now deleted."""
    trained = read_trained_model(storage, output_uri)
    if trained is None:
        return None
    keep = reconcile(
        output_uri, trained.fingerprint, fingerprint, on_change, discard=lambda: discard_output(storage, output_uri),
        what="training output",
    )  # fmt: skip
    return trained if keep else None


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


def carry_forward(
    storage: Storage, training: TrainingConfig, role: str, previous: str, output_uri: str, reason: str, fingerprint: Fingerprint
) -> dict:
    """Finish the run at ``output_uri`` without training: its result is the model at ``previous``
    (a plain model folder or an earlier run's output), after 0 steps. Returns its metrics."""
    earlier = read_trained_model(storage, previous)
    now = datetime.now(timezone.utc)
    if earlier is not None:
        trained = earlier.model_copy(update={"role": role, "steps": 0, "completed_at": now, "fingerprint": fingerprint})
    else:
        model = previous if writes_model(training) else None
        trained = TrainedModel(
            role=role, method=training.method, base_model=previous, adapter=None, model=model, steps=0, completed_at=now,
            fingerprint=fingerprint,
        )  # fmt: skip
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
        self.fingerprint: Fingerprint | None = None  # set by open()

    def open(self, fingerprint: Fingerprint, on_change: str, *, world_main: bool) -> None:
        """Apply the rerun rule to checkpoints of an earlier attempt (continued only under the same
        fingerprint; refused, or with ``on_change`` redo deleted, otherwise). ``fingerprint`` is
        recorded with the first checkpoint (:meth:`commit`), so a run that fails before its first
        step leaves nothing at the output. Every process calls it."""
        self.fingerprint = fingerprint
        started = self.storage.exists(self._marker)
        if started or self.complete_steps():
            recorded = parse_fingerprint(self.storage.read_text(self._marker)) if started else None
            reconcile(self.uri, recorded, fingerprint, on_change, discard=lambda: self._discard(world_main), what="training checkpoint")
        barrier()

    @property
    def _marker(self) -> str:
        return join_uri(self.uri, FINGERPRINT_NAME)

    def _discard(self, world_main: bool) -> None:
        if world_main:
            self.storage.delete_prefix(self.uri)
        shutil.rmtree(self.local_dir, ignore_errors=True)

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
            if not self.storage.exists(self._marker):
                self.storage.write_text(self._marker, self.fingerprint.model_dump_json(indent=2))
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
