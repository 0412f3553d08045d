"""The tiny CPU model: a ~5M-parameter Qwen2 and a byte-level BPE tokenizer, built offline.

``build_tiny_model`` trains the tokenizer on the project's own corpus (:mod:`selflengthen.tiny_corpus`),
initialises a Qwen2 model from a seed and pre-trains it for a fixed number of steps on the same
corpus, so that with the default checks every stage of the method yields usable text. The folder it
writes is a standard Qwen2 model folder (config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json with the chat template) that transformers, ``transformers
serve`` and vLLM load offline. Same seed and step count: identical weights.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from selflengthen import tiny_corpus
from selflengthen.config import ModelConfig
from selflengthen.errors import SelfLengthenError
from selflengthen.tiny_corpus import Example

# Qwen2's pre-tokenizer split: letters with one leading non-letter, single digits, punctuation runs
# with their trailing newlines, newline runs. A stage-2 prefill ending in ".\n\n" therefore splits
# as the same text does inside a training answer.
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
# Qwen-style ChatML. Content may be a string or a list of OpenAI-style parts (text parts are joined).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MODEL_MAX_LENGTH = 4096
VOCAB_SIZE = 4096
# Longest token, in byte-level characters (5 CJK characters): the template corpus would otherwise
# merge whole Chinese clauses into single tokens.
MAX_TOKEN_CHARS = 15
TOKENIZER_TRAINING_EXAMPLES = 3000

MODEL_SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# The method's default sampling (docs/method.md, "Sampling defaults"), written to generation_config.json.
DEFAULT_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}

# Pre-training: token-budget batches of length-grouped examples, AdamW, warmup then cosine decay.
DEFAULT_PRETRAIN_STEPS: int = ModelConfig.model_fields["tiny_pretrain_steps"].default
BATCH_TOKENS = 1024
MAX_SEQUENCE_TOKENS = 1536
GROUP_EXAMPLES = 256
PEAK_LR = 3e-3
FINAL_LR_FRACTION = 0.1
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
THREADS = 2


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` with Qwen2's normaliser, pre-tokenizer and
    special tokens, eos ``<|im_end|>``, pad ``<|endoftext|>`` and the ChatML chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=MAX_TOKEN_CHARS,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        bos_token=None,
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def encode_example(tokenizer: PreTrainedTokenizerFast, example: Example) -> list[int]:
    """Token ids of one training sequence, tokenised exactly as a stage's request is.

    The prompt (a rendered chat ending in the assistant header, or the raw few-shot text) is
    encoded on its own, as the server encodes it, and the completion after it; a chat answer ends
    with ``<|im_end|>``, a raw completion with ``<|endoftext|>``.
    """
    if example.chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], add_generation_prompt=True, tokenize=False)
        end = IM_END
    else:
        prompt, end = example.prompt, END_OF_TEXT
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return encode(prompt) + encode(example.completion) + [tokenizer.convert_tokens_to_ids(end)]


# --------------------------------------------------------------------------- model


def model_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=MODEL_MAX_LENGTH,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **MODEL_SHAPE,
    )


def _batches(tokenizer: PreTrainedTokenizerFast, stream: Iterator[Example], rng: random.Random) -> Iterator[list[list[int]]]:
    """Endless batches of at most BATCH_TOKENS (padded) tokens: examples are encoded a group at a
    time, sorted by length, cut into batches, and the batches shuffled."""
    while True:
        encoded = [encode_example(tokenizer, example) for example in itertools.islice(stream, GROUP_EXAMPLES)]
        encoded = sorted((ids for ids in encoded if len(ids) <= MAX_SEQUENCE_TOKENS), key=len)
        group: list[list[list[int]]] = []
        batch: list[list[int]] = []
        for ids in encoded:
            if batch and (len(batch) + 1) * len(ids) > BATCH_TOKENS:
                group.append(batch)
                batch = []
            batch.append(ids)
        group.append(batch)
        rng.shuffle(group)
        yield from group


def _collate(batch: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _learning_rate(step: int, steps: int) -> float:
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return PEAK_LR * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return PEAK_LR * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int, seed: int, log_every: int = 0) -> dict:
    """Pre-train ``model`` for ``steps`` batches of the corpus; returns loss and token figures."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=PEAK_LR,
        betas=(0.9, 0.95),
    )
    batches = _batches(tokenizer, tiny_corpus.examples(seed + 1), random.Random(seed + 2))
    model.train()
    tokens = 0
    losses: list[float] = []
    for step in range(steps):
        batch = _collate(next(batches), tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.3f} tokens {tokens}", flush=True)
    model.eval()
    tail = losses[-max(1, steps // 10) :]
    return {"tokens_seen": tokens, "final_loss": round(sum(tail) / len(tail), 4) if tail else None}


# --------------------------------------------------------------------------- the folder


def build_tiny_model(output_dir: str, *, seed: int = 0, pretrain_steps: int | None = None, log_every: int = 0) -> dict:
    """Build the tiny model folder at ``output_dir`` (which must not exist or be empty).

    ``pretrain_steps`` defaults to DEFAULT_PRETRAIN_STEPS; 0 gives an untrained model in seconds
    (for tests that need only shapes). The folder appears complete or not at all (it is built
    beside ``output_dir`` and renamed). Returns the build figures, also written to
    ``tiny_build.json``.
    """
    steps = DEFAULT_PRETRAIN_STEPS if pretrain_steps is None else pretrain_steps
    if steps < 0:
        raise SelfLengthenError(f"pretrain_steps must be >= 0, got {steps}")
    target = Path(output_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SelfLengthenError(f"tiny model output {target} already exists and is not an empty directory")
    started = time.monotonic()
    # Once the model is confident, activations and gradients fill with denormal floats, which slow
    # CPU matrix products down by orders of magnitude. Flushing them to zero is a per-thread CPU
    # flag that torch's worker threads inherit when they start, so it is set before any torch work
    # (in a process whose worker threads already run, only the calling thread is covered).
    torch.set_flush_denormal(True)
    try:
        torch.set_num_threads(THREADS)
        torch.manual_seed(seed)
        corpus = itertools.islice(tiny_corpus.examples(seed), TOKENIZER_TRAINING_EXAMPLES)
        tokenizer = build_tokenizer(text for example in corpus for text in (example.prompt, example.completion))
        model = Qwen2ForCausalLM(model_config(tokenizer))
        training = pretrain(model, tokenizer, steps, seed, log_every) if steps else {"tokens_seen": 0, "final_loss": None}
    finally:
        torch.set_flush_denormal(False)

    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(END_OF_TEXT)],
        pad_token_id=tokenizer.pad_token_id,
        **DEFAULT_SAMPLING,
    )
    stats = {
        "seed": seed,
        "pretrain_steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        **training,
        "seconds": round(time.monotonic() - started, 1),
    }
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _save(model, tokenizer, staging)
        _write_json(staging / "tiny_build.json", stats)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _save(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Save a standard Qwen2 folder, readable by transformers 5 and by the transformers 4.x that
    vLLM images ship: the chat template inside tokenizer_config.json, the tokenizer class named
    Qwen2Tokenizer, and the 4.x spellings of dtype and RoPE base beside the 5.x ones."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    _update_json(folder / "tokenizer_config.json", tokenizer_class="Qwen2Tokenizer")
    config = model.config
    _update_json(folder / "config.json", torch_dtype="float32", rope_theta=config.rope_parameters["rope_theta"])


def _update_json(path: Path, **fields: object) -> None:
    _write_json(path, {**json.loads(path.read_text(encoding="utf-8")), **fields})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
