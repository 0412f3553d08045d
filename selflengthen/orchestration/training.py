"""The train step: where a role's fine-tuning starts from, and where it runs.

Each iteration trains from the previous iteration's result of the same role (the base model in
iteration 1): a LoRA adapter continued on the fixed base (the reference's way), a fresh adapter on
the fixed base, or a new adapter or full fine-tuning on the previous model (full fine-tuning,
``merge_each_iteration``). ``execution.training`` picks where: ``inline`` trains in the step (local
runs: in its process; Kubeflow: the step's pod runs the trainer image, and the step starts torchrun
with one process per GPU it was given), ``trainjob`` creates a Kubeflow Trainer TrainJob and waits
for it. Every way gets the same :class:`~selflengthen.training.launch.TrainingRequest`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from selflengthen.config import Role, RunConfig, TrainingConfig
from selflengthen.datasets import read_manifest
from selflengthen.errors import TrainingError
from selflengthen.logs import stage_logger
from selflengthen.storage import Storage, get_storage
from selflengthen.training.launch import TrainingRequest


def starting_point(storage: Storage, training: TrainingConfig, previous: str) -> tuple[str, str | None]:
    """(base model URI, adapter to continue or None) for a run after the model at ``previous``:
    a plain model folder or a training output."""
    from selflengthen.training import read_trained_model, uses_adapter_from

    trained = read_trained_model(storage, previous)
    if trained is None:
        return previous, None
    if uses_adapter_from(training):
        return trained.base_model, trained.adapter
    if training.method == "full" or training.merge_each_iteration:
        if trained.model is None:
            raise TrainingError(f"{previous} holds no full model to continue from (method {trained.method})")
        return trained.model, None
    return trained.base_model, None


def train(config: RunConfig, *, role: Role, iteration: int, data: str, previous: str, output: str) -> dict[str, Any]:
    """Fine-tune ``role`` on dataset ``data`` after ``previous`` into ``output``; the run's metrics.

    Data without examples (every response of the iteration rejected) fails the step, or with
    ``training.on_no_examples: carry_forward`` makes ``output`` the previous model, unchanged.
    """
    from selflengthen.training.output import carry_forward, existing_result, read_metrics, training_fingerprint

    storage = get_storage(config.storage)
    empty = read_manifest(storage, data).count == 0
    base, adapter_from = (previous, None) if empty else starting_point(storage, config.training, previous)
    fingerprint = training_fingerprint(storage, config, role, data, base, adapter_from)
    if existing_result(storage, output, fingerprint, config.on_change) is not None:
        stage_logger(config.run_id, f"train-{role}", iteration).info("output %s is already complete; not training again", output)
        return read_metrics(storage, output)
    if empty:
        reason = f"the {role} SFT data of iteration {iteration} ({data}) holds no examples: every response was rejected"
        if config.training.on_no_examples == "fail":
            raise TrainingError(
                f"{reason} (the extend and select steps' metrics count why); "
                "set training.on_no_examples: carry_forward to go on with the previous model"
            )
        stage_logger(config.run_id, f"train-{role}", iteration).warning("%s; the previous model %s is carried forward", reason, previous)
        return carry_forward(storage, config.training, role, previous, output, reason, fingerprint)
    request = TrainingRequest(role=role, data_uri=data, base_model_uri=base, output_uri=output, adapter_from_uri=adapter_from)
    if config.execution.training == "trainjob":
        from selflengthen.cluster.trainjob import run_trainjob

        run_trainjob(config, iteration, request)
        return read_metrics(storage, output)
    if config.execution.target == "kubeflow":
        train_under_torchrun(config, request, nproc_per_node=max(config.trainjob.gpus_per_node, 1))
        return read_metrics(storage, output)
    from selflengthen.training import train_role

    return train_role(config, **request.keywords())


def train_under_torchrun(config: RunConfig, request: TrainingRequest, *, nproc_per_node: int) -> None:
    """Run ``request`` in ``nproc_per_node`` processes of this machine (torchrun, private rendezvous)."""
    from selflengthen.training.launch import local_torchrun_command

    with tempfile.TemporaryDirectory(prefix="selflengthen-train-") as folder:
        config_path = Path(folder) / "config.json"
        config_path.write_text(config.to_json(), encoding="utf-8")
        command = local_torchrun_command(request.arguments(config_path=str(config_path)), nproc_per_node)
        returncode = subprocess.run(command, check=False).returncode
    if returncode != 0:
        raise TrainingError(f"training {request.role} into {request.output_uri} failed: torchrun exited with {returncode} (its output is above)")
