"""The train step: where a role's fine-tuning starts from, and where it runs.

Each iteration trains from the previous iteration's result of the same role (the base model in
iteration 1): a LoRA adapter continued on the fixed base (the reference's way), a fresh adapter on
the fixed base, or a new adapter or full fine-tuning on the previous model (full fine-tuning,
``merge_each_iteration``). ``trainjob.mode`` picks where: ``inline`` trains inside the step (local
runs, single-node clusters), ``trainjob`` creates a Kubeflow Trainer TrainJob and waits for it.
"""

from __future__ import annotations

from typing import Any

from selflengthen.config import Role, RunConfig, TrainingConfig
from selflengthen.errors import TrainingError
from selflengthen.storage import Storage, get_storage


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
    """Fine-tune ``role`` on dataset ``data`` after ``previous`` into ``output``; the run's metrics."""
    storage = get_storage(config.storage)
    base, adapter_from = starting_point(storage, config.training, previous)
    arguments = dict(data_uri=data, base_model_uri=base, output_uri=output, adapter_from_uri=adapter_from)
    if config.trainjob.mode == "trainjob":
        from selflengthen.cluster.trainjob import run_trainjob
        from selflengthen.training.output import read_metrics

        run_trainjob(config, role, iteration, **arguments)
        return read_metrics(storage, output)
    from selflengthen.training import train_role

    return train_role(config, role=role, **arguments)
