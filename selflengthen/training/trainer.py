"""``train_role``: supervised fine-tuning of one role on one iteration's SFT examples.

The same function runs in one process (inline in a pipeline step or the CLI), under torchrun on
several processes or nodes, and inside a Kubeflow Trainer job (launched through ``launch.py``).
It is the Hugging Face ``Trainer`` over DeepSpeed (or plain PyTorch when ``training.deepspeed`` is
empty) with this project's data path (``data.py``), batching (``batching.py``) and outputs
(``output.py``). Order of work:

1. Checks that need no weights and no process group (dataset, base model, adapter, LoRA targets).
2. Training arguments: they join the process group and, for ZeRO-3, register the DeepSpeed config
   so that the model is loaded already partitioned.
3. Model folders fetched (once per node), tokenisation, batch plan, model, then training; a
   committed checkpoint of an earlier attempt is resumed (optimizer, scheduler, data position).
4. Final save (every rank: ZeRO-3 gathers), then on the main process the optional merge,
   metrics.json and the COMPLETE marker, last.
"""

from __future__ import annotations

import os
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from selflengthen.config import Role, RunConfig, TrainingConfig
from selflengthen.datasets import load_records
from selflengthen.errors import SelfLengthenError, TrainingError
from selflengthen.logs import stage_logger
from selflengthen.modelio import localize
from selflengthen.records import SftExample
from selflengthen.storage import Storage, get_storage, join_uri
from selflengthen.training.batching import MicroBatchCollator, MicroBatchDataset, plan_batches, plan_stats
from selflengthen.training.data import tokenize_examples, validate_examples
from selflengthen.training.model import (
    check_adapter,
    check_base_model,
    check_lora_targets,
    check_weights,
    load_for_training,
    merge_adapter,
)
from selflengthen.training.output import (
    ADAPTER_DIR,
    KEEP_CHECKPOINTS,
    MODEL_DIR,
    CheckpointStore,
    TrainedModel,
    barrier,
    clean_up,
    existing_result,
    local_root,
    publish,
    read_metrics,
    read_trained_model,
    training_fingerprint,
    uses_adapter_from,
    writes_model,
)
from selflengthen.training.runtime import Runtime, ensure_process_group_env, resolve_runtime


def training_arguments(training: TrainingConfig, runtime: Runtime, output_dir: Path) -> TrainingArguments:
    """Trainer arguments, with the process group joined (ZeRO-3: before the model is loaded)."""
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,  # one item is one planned micro-batch
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_ratio,  # below 1: a fraction of the total steps
        weight_decay=training.weight_decay,
        bf16=runtime.precision == "bf16",
        fp16=runtime.precision == "fp16",
        activation_checkpointing=runtime.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        deepspeed=runtime.deepspeed,
        save_strategy="steps",
        save_steps=training.checkpoint_every_steps,
        save_total_limit=KEEP_CHECKPOINTS,
        logging_strategy="steps",
        logging_steps=training.logging_steps,
        seed=training.seed,
        data_seed=training.seed,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=runtime.device == "cuda",
        use_cpu=runtime.device == "cpu" and runtime.deepspeed is None,  # plain DDP on CPU needs gloo named
        report_to=[],
    )
    if runtime.deepspeed is not None:
        _count_every_process(args)
    return args


def _count_every_process(args: TrainingArguments) -> None:
    """Make accelerate and the DeepSpeed config see every process of the group.

    Without a GPU, accelerate joins DeepSpeed's process group but records a world of one (its CPU
    path has no backend name), so every rank would read all the data and save alone; transformers
    then fills the DeepSpeed batch size for that one process, and ZeRO-3's partitioned loading
    rejects it. Both are corrected from the process group itself (a no-op where they agree).
    """
    state = args.distributed_state
    world = dist.get_world_size()
    if state.num_processes != world:
        state.num_processes, state.process_index = world, dist.get_rank()
        state.local_process_index = int(os.environ.get("LOCAL_RANK", "0"))
    args.hf_deepspeed_config.config["train_batch_size"] = world * args.gradient_accumulation_steps


def _localize(uri: str, config: RunConfig, what: str) -> Path:
    try:
        return localize(uri, config.storage)
    except SelfLengthenError as error:
        raise TrainingError(f"{what} {uri}: {error}") from None


def _peak_memory(runtime: Runtime) -> dict[str, int | None]:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    gpu = torch.cuda.max_memory_allocated() if runtime.device == "cuda" else None
    return {"rss_bytes": rss_kib * 1024, "gpu_allocated_bytes": gpu}


def _loss_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    return [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in log_history
        if "loss" in entry
    ]


class _CommitCheckpoints(TrainerCallback):
    """Commits each checkpoint right after the Trainer has saved it (uploads it, then marks it)."""

    def __init__(self, store: CheckpointStore):
        self.store = store

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        self.store.commit(state.global_step, local_main=args.local_process_index == 0, world_main=args.process_index == 0)
        return control


class _Throughput(TrainerCallback):
    """Tokens and seconds of this session's training loop (a resumed run counts only its own part)."""

    tokens = 0
    seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        self._tokens, self._started = state.num_input_tokens_seen, time.monotonic()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.tokens = state.num_input_tokens_seen - self._tokens
        self.seconds = time.monotonic() - self._started


def _check_inputs(
    storage: Storage, training: TrainingConfig, role: str, data_uri: str, base_model_uri: str, adapter_from_uri: str | None
) -> list[SftExample]:
    """Everything that can be refused without weights or a process group; returns the examples."""
    examples = load_records(storage, data_uri, SftExample)
    validate_examples(examples, role, data_uri)
    model_config = check_base_model(storage, base_model_uri, trust_remote_code=training.trust_remote_code)
    if not _fetched(base_model_uri):  # a fetched base is checked once it is here (train_role)
        check_weights(Path(base_model_uri.removeprefix("file://")), f"base model {base_model_uri}")
    if adapter_from_uri is not None:
        if not uses_adapter_from(training):
            raise TrainingError(
                "--adapter-from is used only by LoRA runs with training.continue_adapter and without "
                "training.merge_each_iteration"
            )
        check_adapter(storage, adapter_from_uri)
    elif training.method == "lora":
        check_lora_targets(model_config, training.lora)
    return examples


def _fetched(uri: str) -> bool:
    """Whether the model at ``uri`` is fetched into a local folder (s3://, hf://) rather than read in place."""
    return "://" in uri and not uri.startswith("file://")


def _previous_adapter(storage: Storage, uri: str | None) -> str | None:
    """``uri`` as given, or the adapter of the finished training output at ``uri``."""
    trained = read_trained_model(storage, uri) if uri else None
    return trained.adapter if trained is not None and trained.adapter else uri


def train_role(
    config: RunConfig,
    *,
    role: Role,
    data_uri: str,
    base_model_uri: str,
    output_uri: str,
    adapter_from_uri: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Fine-tune ``role`` on the SFT examples at ``data_uri``; returns the run's metrics.

    ``adapter_from_uri`` is the previous iteration's adapter (or its whole training output), continued on the fixed base when
    :func:`uses_adapter_from` holds (and refused otherwise). A run whose output is already complete
    with the same fingerprint is not repeated: its metrics are returned (other settings: refused,
    or redone with ``on_change`` redo). ``callbacks`` are extra ``TrainerCallback`` objects.
    """
    training = config.training
    storage = get_storage(config.storage)
    log = stage_logger(config.run_id, f"train-{role}")
    adapter_from_uri = _previous_adapter(storage, adapter_from_uri)
    fingerprint = training_fingerprint(storage, config, role, data_uri, base_model_uri, adapter_from_uri)
    if (done := existing_result(storage, output_uri, fingerprint, config.on_change)) is not None:
        log.info("output %s is already complete (%d steps); not training again", output_uri, done.steps)
        return read_metrics(storage, output_uri)
    examples = _check_inputs(storage, training, role, data_uri, base_model_uri, adapter_from_uri)
    storage.check_writable(output_uri)
    runtime = resolve_runtime(training)
    if runtime.deepspeed is not None:
        ensure_process_group_env()

    root = local_root(output_uri)
    checkpoints = CheckpointStore(storage, output_uri, root)
    args = training_arguments(training, runtime, checkpoints.local_dir)
    main = args.process_index == 0
    checkpoints.open(fingerprint, config.on_change, world_main=main)
    with args.main_process_first(local=True, desc="fetch models and checkpoint"):
        base_dir = _localize(base_model_uri, config, "base model")
        adapter_dir = _localize(adapter_from_uri, config, "adapter") if adapter_from_uri else None
        committed = checkpoints.complete_steps()
        resume_dir = checkpoints.fetch(committed[-1]) if committed else None
    if _fetched(base_model_uri):
        check_weights(base_dir, f"base model {base_model_uri}")

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=training.trust_remote_code)
    tokenized, report = tokenize_examples(
        tokenizer, examples, max_length=training.max_length, truncate_overlong=training.truncate_overlong
    )
    if main and (report.dropped_overlong or report.truncated):
        log.warning(
            "of %d examples longer than max_length=%d tokens, %d were dropped and %d cut (longest: %d tokens)",
            report.dropped_overlong + report.truncated, report.max_length, report.dropped_overlong, report.truncated,
            report.longest_tokens,
        )  # fmt: skip
    lengths = [len(example) for example in tokenized]
    plan = plan_batches(
        lengths,
        strategy=training.batching,
        token_budget=training.per_device_batch_tokens,
        batch_size=training.batch_size,
        seed=training.seed,
    )
    stats = plan_stats(plan, lengths, training.batching)
    # DeepSpeed keeps fp32 master weights itself; without it, bf16 is autocast over fp32 weights.
    load_dtype = torch.bfloat16 if runtime.precision == "bf16" and runtime.deepspeed is not None else torch.float32
    model = load_for_training(base_dir, training, dtype=load_dtype, attention=runtime.attention, adapter_dir=adapter_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    throughput = _Throughput()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=MicroBatchDataset(tokenized, plan),
        data_collator=MicroBatchCollator(training.batching, pad_id),
        processing_class=tokenizer,
        callbacks=[_CommitCheckpoints(checkpoints), throughput, *callbacks],
    )
    if main:
        log.info(
            "training %s (%s) on %d examples in %d micro-batches (non-padding fraction %.3f) on %d process(es), %s%s",
            role, training.method, report.kept, stats.batches, stats.non_padding_fraction, args.world_size,
            runtime.describe(), f", resuming from {resume_dir.name}" if resume_dir else "",
        )  # fmt: skip
    result = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    final_dir = root / (ADAPTER_DIR if training.method == "lora" else MODEL_DIR)
    trainer.save_model(str(final_dir))  # every rank: ZeRO-3 gathers the weights
    state = trainer.state
    del trainer, model

    metrics: dict[str, Any] = {
        "role": role,
        "method": training.method,
        "base_model": base_model_uri,
        "adapter_from": adapter_from_uri,
        "data": data_uri,
        "output": output_uri,
        "world_size": args.world_size,
        **runtime.describe(),
        "steps": state.global_step,
        "epochs": state.epoch,
        "resumed_from_step": committed[-1] if committed else None,
        "examples": report.as_dict(),
        "batching": stats.as_dict(),
        "non_padding_fraction": stats.non_padding_fraction,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_this_session": throughput.tokens,
        "train_seconds_this_session": throughput.seconds,
        "tokens_per_s": throughput.tokens / throughput.seconds if throughput.seconds > 0 else None,
        "train_loss": result.training_loss,
        "loss_curve": _loss_curve(state.log_history),
        "peak_memory": _peak_memory(runtime),
    }
    if main:
        if training.method == "lora" and writes_model(training):
            unset_hf_deepspeed_config()  # the merge loads the base whole, not ZeRO-3-partitioned
            merge_adapter(base_dir, final_dir, root / MODEL_DIR, trust_remote_code=training.trust_remote_code, tokenizer=tokenizer)
        trained = TrainedModel(
            role=role,
            method=training.method,
            base_model=base_model_uri,
            adapter=join_uri(output_uri, ADAPTER_DIR) if training.method == "lora" else None,
            model=join_uri(output_uri, MODEL_DIR) if writes_model(training) else None,
            steps=state.global_step,
            completed_at=datetime.now(timezone.utc),
            fingerprint=fingerprint,
        )
        publish(storage, output_uri, root, trained, metrics)
        log.info("wrote %s: %d steps, train loss %.4f", output_uri, state.global_step, result.training_loss)
    barrier()
    clean_up(checkpoints, root, world_main=main, local_main=args.local_process_index == 0)
    return metrics
