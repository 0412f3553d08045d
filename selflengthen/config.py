"""The one typed configuration of a Self-Lengthen run.

Every knob of the method (docs/method.md), serving, training, storage and cluster placement lives here, with the
reference's defaults. YAML in (``load_config``), validated; unknown keys and impossible values are
rejected with a message naming the field (``ConfigError``).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selflengthen.errors import SelfLengthenError

Language = Literal["en", "zh"]
Role = Literal["generator", "extender"]


class ConfigError(SelfLengthenError, ValueError):
    """A configuration that cannot be used; the message names the field."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- sampling and serving


class SamplingConfig(Section):
    """Sampling parameters sent with every request of one role or stage."""

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature (reference: 0.7)")
    top_p: float = Field(0.8, gt=0.0, le=1.0, description="nucleus-sampling probability mass (reference: 0.8)")
    top_k: int = Field(20, ge=-1, description="-1 disables top-k")
    repetition_penalty: float = Field(
        1.1, gt=0.0, description="repetition penalty, a vLLM extension (dropped if the server rejects it); reference: 1.1"
    )
    max_tokens: int = Field(
        16384, ge=1, description="most new tokens per text; a text that hits it is truncated, a failure (reference: 16384)"
    )
    # Reference defect fixed: "---" is never a default stop string (it cut markdown tables and rules).
    stop: list[str] = Field(
        default_factory=list, description="stop strings, sent to the server and also enforced client-side; none by default"
    )
    seed: int | None = Field(
        None,
        description="sampling seed: each request's seed is derived from it, the record, the sample and the attempt "
        "(the i-th of n samples of a request gets that seed + i); null: none sent",
    )


# The most requests one client keeps in flight (max_concurrency, also times the replicas).
MAX_CONCURRENCY = 4096


class EndpointConfig(Section):
    """An OpenAI-compatible server (vLLM in production). Credentials come from the environment."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1; set by the serve step when empty")
    model: str = Field("tiny", min_length=1, description="model (or LoRA adapter) name the server knows")
    model_source: str | None = Field(
        None,
        description="what the served model was loaded from (set by the serve step); recorded in the fingerprint of the outputs it makes",
    )
    api_key_env: str = Field("SELFLENGTHEN_API_KEY", description="name of the env var holding the API key (never the key)")
    max_concurrency: int = Field(
        32, ge=1, le=MAX_CONCURRENCY,
        description="most requests in flight at once from one client to one server replica (on Kubeflow the client "
        f"sends up to this times serving.cluster.replicas, at most {MAX_CONCURRENCY})",
    )
    units_in_flight: int | None = Field(
        None, ge=1,
        description="most units (a query, a response to extend, ...) a stage works on at once against this server, another "
        "started as one finishes (their requests served oldest unit first), so finished units reach the checkpoint at a "
        "steady rate; null: 2 x max_concurrency",
    )
    request_timeout_s: float = Field(600.0, gt=0, description="timeout of one HTTP request, in seconds (a timeout is retried)")
    max_retries: int = Field(
        6, ge=0, description="retries of a request after a connection error, timeout, 429 or 5xx; then the step fails"
    )
    backoff_initial_s: float = Field(
        0.5, gt=0, description="retry delay step in seconds, doubled per retry up to backoff_max_s (half fixed, half random)"
    )
    backoff_max_s: float = Field(30.0, gt=0, description="cap of the retry delay step, in seconds")
    server_supports_n: bool = Field(True, description="False: the client asks n times for n samples")
    chat_template_continuation: bool = Field(
        True, description="stage-2 prefill via continue_final_message (vLLM); False: raw completion over the rendered template"
    )
    fit_context: bool = Field(
        True,
        description="cap max_tokens to the context the prompt leaves and refuse a prompt that leaves none before sending "
        "(counts each distinct prompt once, with the tokenizer or the server's /tokenize); false: send as configured, "
        "a too-long prompt is then refused by the server (also a per-record failure)",
    )

    def unit_limit(self) -> int:
        """The units a stage keeps in flight against this server (``units_in_flight``, else twice the concurrency)."""
        return self.units_in_flight or 2 * self.max_concurrency


class LocalServerConfig(Section):
    """How the serve step starts a model server on one machine (the local default)."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="server the local serve step starts: transformers serve, or vLLM (needs vllm_python)"
    )
    host: Literal["127.0.0.1", "localhost"] = Field(
        "127.0.0.1", description="loopback address the local server listens on (a free port is picked)"
    )
    startup_timeout_s: float = Field(
        300.0, gt=0, description="seconds to wait for the server to answer GET /v1/models; then it is stopped and the step fails"
    )
    vllm_python: str | None = Field(None, description="python of the separate vLLM virtual environment")
    extra_args: list[str] = Field(default_factory=list, description="extra command-line arguments appended to the server command")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment variables of the server process (vLLM on CPU: VLLM_CPU_KVCACHE_SPACE, GiB of KV cache)",
    )


# A Kubernetes resource quantity ("8", "500m", "64Gi").
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# A Kubernetes object or namespace name (an RFC 1123 label; the length limit is the field's).
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _check_tolerations(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tolerations as Kubernetes spells them (camelCase keys), checked before any pod is built."""
    for index, toleration in enumerate(value):
        unknown = sorted(set(toleration) - _TOLERATION_KEYS)
        if unknown:
            raise ValueError(f"toleration {index}: unknown key(s) {unknown}; allowed: {sorted(_TOLERATION_KEYS)}")
        if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
            raise ValueError(f"toleration {index}: operator must be Equal or Exists")
        if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"toleration {index}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
    return value


class ClusterServerConfig(Section):
    """vLLM Deployment settings used by the serve step on Kubernetes."""

    image: str = Field(
        "vllm/vllm-openai:v0.32.0",
        description="vLLM container image of the model-server Deployment (the release the vLLM test tier runs; at least v0.8.0, docs/kubeflow.md)",
    )
    replicas: int = Field(
        1, ge=1, description="vLLM pods behind each model server's Service (a stage's requests spread over them; "
        "each holds `gpus` GPUs); the clients' concurrency is scaled by it"
    )
    gpus: int = Field(1, ge=0, description="GPUs (nvidia.com/gpu) requested by the vLLM container; 0: none")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM --tensor-parallel-size (at most gpus)")
    max_model_len: int = Field(32768, ge=256, description="vLLM --max-model-len: context length in tokens (prompt plus output)")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vLLM --gpu-memory-utilization: fraction of GPU memory vLLM may use"
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the vLLM pods require")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations of the vLLM pods (Kubernetes keys: key, operator, value, effect)"
    )
    ready_timeout_s: float = Field(
        1800.0, gt=0, description="seconds the server may take to become ready; then it is deleted and the step fails"
    )
    hf_token_secret: str | None = Field(None, description="Kubernetes Secret with key HF_TOKEN, mounted as env")
    cpu: str = Field("8", pattern=_QUANTITY, description="CPU request and limit of the vLLM container")
    memory: str = Field("64Gi", pattern=_QUANTITY, description="memory request and limit of the vLLM container")
    shm_size: str = Field("16Gi", pattern=_QUANTITY, description="size of /dev/shm (tensor-parallel workers share it)")
    model_storage: str = Field(
        "64Gi", pattern=_QUANTITY,
        description="ephemeral storage requested for the downloaded model (and adapter) and caches; also the size limit of their emptyDirs",
    )
    stream_from_s3: bool = Field(
        False,
        description="kubeflow: vLLM streams a served model folder on s3:// (safetensors weights) straight into GPU memory with "
        "its Run:ai Model Streamer (--model s3://... --load-format runai_streamer) instead of the fetch-model init container "
        "copying it (and execution.model_cache_pvc caching it); LoRA adapters are still fetched",
    )

    _tolerations = field_validator("tolerations")(_check_tolerations)

    @model_validator(mode="after")
    def _parallelism(self) -> "ClusterServerConfig":
        if self.gpus and self.tensor_parallel_size > self.gpus:
            raise ValueError(f"tensor_parallel_size ({self.tensor_parallel_size}) must not exceed gpus ({self.gpus})")
        return self


ServingLayout = Literal["shared", "sequential", "per_role"]


class ServingConfig(Section):
    """One OpenAI-compatible endpoint per role, how the roles share model servers, and how local and
    cluster servers are started."""

    layout: ServingLayout = Field(
        "shared",
        description="model servers of a phase: shared (one server, the base model with both roles as LoRA adapters, "
        "or the base under their names while a role is the base; stages address it by model name), sequential (one "
        "role's server at a time: full fine-tuning on few GPUs), per_role (a server per role, up together); when not "
        "set: shared for LoRA training (with the vllm backend on a local run), else sequential",
    )
    base_model_name: str = Field(
        "base", min_length=1,
        description="name the base model is served under for self_instruct.model base (its own server, or the shared one)",
    )
    # distinct names by default: one shared server tells the roles apart by them
    generator: EndpointConfig = Field(default_factory=lambda: EndpointConfig(model="generator"))
    extender: EndpointConfig = Field(default_factory=lambda: EndpointConfig(model="extender"))
    judge: EndpointConfig = Field(default_factory=EndpointConfig)
    local: LocalServerConfig = Field(default_factory=LocalServerConfig)
    cluster: ClusterServerConfig = Field(default_factory=ClusterServerConfig)

    @model_validator(mode="before")
    @classmethod
    def _role_names(cls, data: Any) -> Any:
        """A role's endpoint without a model name is named after the role (as when it is not set)."""
        if isinstance(data, dict):
            for role in ("generator", "extender"):
                if isinstance(data.get(role), dict) and "model" not in data[role]:
                    data = {**data, role: {**data[role], "model": role}}
        return data


# --------------------------------------------------------------------------- method stages


class SelfInstructConfig(Section):
    """docs/method.md, step 1: new instructions by few-shot completion, filtered by the model as judge."""

    num_instructions: int = Field(5000, ge=1, description="new instructions per iteration")
    max_attempts_per_slot: int = Field(
        10, ge=1, description="proposals per instruction slot before the slot is left empty (reference: 10)"
    )
    examples_per_prompt: int = Field(
        2, ge=1, le=8, description="few-shot example instructions drawn per proposal prompt (reference: 2)"
    )
    model: Literal["base", "generator"] = Field(
        "base",
        description="model that proposes and judges the instructions: base (the base model in every iteration; reference) "
        "or generator (the current Generator)",
    )
    use_accepted_pool: bool = Field(True, description="draw few-shot examples from seeds plus accepted instructions (reference: true)")
    pool_reset_every: int = Field(
        500, ge=0, description="accepted instructions (per language) after which the example pool is reset to the seeds; 0: never (reference: 500)"
    )
    multi_line: bool = Field(
        True, description="keep a multi-line proposal whole (it ends at a newline and the next label); false: its first line only (reference: true)"
    )
    judge_match: Literal["exact", "lenient"] = Field(
        "exact", description="exact: only the bare yes word counts (reference); lenient: an answer starting with a yes-like word"
    )
    min_words: int = Field(3, ge=1, description="shortest accepted instruction, in words (zh: characters); reference: 3")
    max_words: int = Field(500, ge=1, description="longest accepted instruction, in words (zh: characters); reference: 500")
    judge_min_words: int = Field(
        2000, ge=1, description="length the judge is asked about ('more than N words'); the proposal prompt states none (reference: 2000)"
    )
    seeds_uri: str | None = Field(None, description="JSONL of seed instructions; the packaged seeds when empty")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=1.0, top_p=0.95, max_tokens=512))
    judge_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, max_tokens=8))

    @model_validator(mode="after")
    def _words(self) -> "SelfInstructConfig":
        if self.min_words > self.max_words:
            raise ValueError("min_words must not exceed max_words")
        return self


class GenerateConfig(Section):
    """docs/method.md, step 2: initial responses by the Generator."""

    samples_per_query: int = Field(2, ge=1, description="independent initial responses sampled per query (reference: 2)")
    max_retries: int = Field(20, ge=0, description="retries of a sample that fails the checks, then given up")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class ExtendConfig(Section):
    """docs/method.md, step 3: two-stage, multi-round extension."""

    chains: int = Field(
        2, ge=1, description="independent extension chains per initial response, each successful one its own record (reference: 2)"
    )
    attempts: int = Field(
        20, ge=1, description="attempts per chain; the first that reaches min_ratio is the chain's result (reference: 20)"
    )
    rounds: int = Field(3, ge=1, description="compounding rounds per attempt, each extending the best text so far (reference: 3)")
    keep_fraction: float = Field(2 / 3, gt=0, le=1, description="stage-1 paragraphs kept (drops the wrap-up)")
    min_ratio: float = Field(1.2, gt=1.0, description="an attempt succeeds when final > min_ratio x initial length")
    prefill_separator: str = Field("\n\n", description="appended after the stage-1 prefill (stops immediate stops)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class LanguageChecks(Section):
    """docs/method.md, step 4, for one language."""

    enders: str = Field(description="sentence-final punctuation, closing quotes and brackets")
    ngram_n: int = Field(ge=2, description="n of the repeated n-gram check (reference: 10 for en, 13 for zh)")
    ngram_unit: Literal["whitespace", "cjk"] = Field(
        "whitespace", description="n-gram tokens: whitespace tokens, or cjk (each CJK character, each run of non-space ASCII)"
    )
    meta_words: list[str] = Field(
        default_factory=list, description="words (whole words, any case) that mark meta-commentary in the first and last lines"
    )
    meta_head_lines: int = Field(2, ge=0, description="first non-empty lines searched for meta words (reference: 2)")
    meta_tail_lines: int = Field(3, ge=0, description="last non-empty lines searched for meta words (reference: 3)")
    check_ending: bool = Field(True, description="reject a text whose last non-space character is not one of enders")
    check_repetition: bool = Field(True, description="reject a text in which an n-gram occurs twice")
    check_meta: bool = Field(
        True, description="reject a text with meta words in its first or last lines (reference: English only)"
    )


# One language-aware set of enders (reference defect fixed: ASCII '.' is accepted for Chinese too).
_ENDERS = ".!?。！？…；;」』”’\"')）】》]*`~"


class ChecksConfig(Section):
    """The quality checks of docs/method.md, step 4, per language."""

    en: LanguageChecks = Field(
        default_factory=lambda: LanguageChecks(
            enders=_ENDERS,
            ngram_n=10,
            ngram_unit="whitespace",
            meta_words=["revised", "revision", "response", "version", "paragraph"],
        )
    )
    zh: LanguageChecks = Field(
        default_factory=lambda: LanguageChecks(enders=_ENDERS, ngram_n=13, ngram_unit="cjk", check_meta=False)
    )

    def for_language(self, language: Language) -> LanguageChecks:
        return self.en if language == "en" else self.zh


class SelectConfig(Section):
    """docs/method.md, step 5: keep probability 1 - coefficient * rank**exponent (rank 1 = shortest)."""

    length_biased: bool = Field(
        True, description="sample the extended responses by length rank; false: keep every text that passes the checks (reference: true)"
    )
    length_biased_initial: bool = Field(
        True, description="sample the initial responses by length rank before they are extended (reference: true)"
    )
    rank_within_language: bool = Field(
        True, description="rank lengths within each language (false: one pool of English words and Chinese characters)"
    )
    coefficient: float = Field(
        2.0, ge=0, description="the coefficient of the keep probability 1 - coefficient * rank**exponent (reference: 2)"
    )
    exponent: float = Field(
        3.0, gt=0, description="the exponent of the keep probability 1 - coefficient * rank**exponent (reference: 3)"
    )


class SftDataConfig(Section):
    """docs/method.md, step 6."""

    line_dropout: float = Field(
        0.2, ge=0, lt=1,
        description="chance to drop each non-empty line of the initial response in Extender examples (reference: 0.2)",
    )
    accumulate: bool = Field(False, description="train on all iterations' data, not only the current one")


class LengthControlConfig(Section):
    """The length-following data built after the iterations."""

    extra_queries: int = Field(5000, ge=0, description="queries answered by the final Generator alone")
    min_words: int = Field(
        2000, ge=1, description="shortest response kept and lowest constraint bound, in words (zh: characters); reference: 2000"
    )
    max_words: int = Field(
        8000, ge=1, description="longest response kept and highest constraint bound, in words (zh: characters); reference: 8000"
    )
    unit: int = Field(1000, ge=1, description="rounding unit of the constraint's numbers (reference: 1000)")
    coarse_unit: int = Field(2000, ge=1, description="rounding unit used instead with coarse_unit_probability (reference: 2000)")
    coarse_unit_probability: float = Field(
        0.2, ge=0, le=1, description="probability of rounding to coarse_unit instead of unit (reference: 0.2)"
    )
    type_probabilities: dict[Literal["about", "range", "above", "below"], float] = Field(
        default_factory=lambda: {"about": 0.40, "range": 0.25, "above": 0.10, "below": 0.25},
        description="probability of each constraint type, summing to 1 (reference: 0.40, 0.25, 0.10, 0.25)",
    )
    chinese_numeral_probability: float = Field(
        0.5, ge=0, le=1, description="chance that a Chinese constraint writes its numbers in Chinese numerals (reference: 0.5)"
    )
    phrases: dict[Language, dict[Literal["about", "range", "above", "below", "append"], str]] = Field(
        default_factory=lambda: {
            "en": {
                "about": "about {n} words",
                "range": "between {a} and {b} words",
                "above": "more than {a} words",
                "below": "less than {b} words",
                "append": "{query} The answer should be {constraint}.",
            },
            # Reference defect fixed: "above" is 大于/more-than and "below" is 小于/less-than.
            "zh": {
                "about": "大约{n}字",
                "range": "{a}字至{b}字",
                "above": "大于{a}字",
                "below": "小于{b}字",
                "append": "{query}要求字数{constraint}。",
            },
        },
        description="constraint wording per language and type; 'append' is used when the LLM rewrite drops the constraint",
    )
    rewrite_with_llm: bool = Field(
        True, description="rewrite the query around the constraint with an LLM call; false: always the 'append' phrase"
    )
    rewrite_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=1024))

    @field_validator("type_probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if any(p < 0 for p in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError("probabilities must be non-negative and sum to 1")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "LengthControlConfig":
        if self.min_words > self.max_words:
            raise ValueError("min_words must not exceed max_words")
        return self


# --------------------------------------------------------------------------- training


class LoraConfig(Section):
    """LoRA adapter shape (peft)."""

    r: int = Field(8, ge=1, description="LoRA rank of a new adapter (reference: 8)")
    alpha: int = Field(16, ge=1, description="LoRA alpha scaling of a new adapter (reference: 16)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability of the LoRA layers (reference: 0)")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="layers LoRA adapts: all-linear (reference) or names of the model's linear layers"
    )


class TrainingConfig(Section):
    """docs/method.md, step 7: fine-tuning of one role (reference defaults)."""

    method: Literal["lora", "full"] = Field(
        "lora", description="lora: train a LoRA adapter on the base (reference); full: full fine-tuning"
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    learning_rate: float = Field(1e-4, gt=0, description="peak learning rate (reference: 1e-4)")
    epochs: float = Field(4.0, gt=0, description="passes over the training data, fractions allowed (reference: 4)")
    max_steps: int | None = Field(None, ge=1, description="a step budget that overrides epochs")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup (reference: cosine)"
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="warmup as a fraction of the total optimizer steps (reference: 0.1)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay of the optimizer")
    max_length: int = Field(
        16384, ge=16, description="most tokens of one chat-templated example; longer ones are dropped or cut (reference: 16384)"
    )
    truncate_overlong: bool = Field(
        True, description="cut over-long examples at max_length inside the response (reference); false: drop and count them"
    )
    recipe: Literal["reference", "packed"] = Field(
        "reference",
        description="reference: one example per micro-batch and per optimizer step (per process), its loss the mean over "
        "its response tokens, as the reference trains; packed: the throughput option, micro-batches by `batching` "
        "(packed by default: fewer optimizer steps, loss weighted by token across the packed examples)",
    )
    per_device_batch_tokens: int = Field(16384, ge=16, description="token budget of one packed or length-grouped micro-batch")
    batch_size: int = Field(1, ge=1, description="examples per micro-batch when batching is padded (reference: 1)")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="micro-batches per optimizer step (per process); reference: 1"
    )
    batching: Literal["packed", "length-grouped", "padded"] = Field(
        "padded",
        description="micro-batches: packed (no padding), length-grouped or padded (batch_size examples); "
        "when not set: padded for recipe reference, packed for recipe packed",
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention kernel; auto: flash_attention_2 on a GPU with flash-attn installed (varlen packing), else sdpa"
    )
    deepspeed: str | None = Field("zero3_offload", description="preset name (zero2, zero3, zero3_offload) or a JSON path; empty: none")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, else fp16 on GPU and fp32 on CPU (reference: bf16)"
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="activation checkpointing; auto: on with a GPU, off on CPU"
    )
    checkpoint_every_steps: int = Field(
        50, ge=1, description="optimizer steps between checkpoints saved to storage (a retried step resumes from them)"
    )
    continue_adapter: bool = Field(True, description="LoRA of iteration k starts from k-1 on the fixed base")
    merge_each_iteration: bool = Field(False, description="merge the adapter into a new base after each iteration")
    save_merged: bool = Field(False, description="LoRA: also write the adapter merged into its base (for servers without LoRA support)")
    seed: int = Field(42, description="training seed (model initialisation, data order, batch plan)")
    on_no_examples: Literal["fail", "carry_forward"] = Field(
        "fail",
        description="when a role's SFT data holds no examples (every response was rejected): fail the train step, "
        "or carry the previous model forward unchanged (0 steps; the reason goes to the metrics and the report)",
    )
    trust_remote_code: bool = Field(False, description="let transformers run code shipped with the base model or tokenizer")
    logging_steps: int = Field(1, ge=1, description="optimizer steps between training log lines")

    @model_validator(mode="before")
    @classmethod
    def _recipe_batching(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batching" not in data and data.get("recipe") == "packed":
            return {**data, "batching": "packed"}
        return data

    @model_validator(mode="after")
    def _reference_recipe(self) -> "TrainingConfig":
        if self.recipe == "reference" and (self.batching, self.batch_size, self.gradient_accumulation_steps) != ("padded", 1, 1):
            raise ValueError(
                "recipe reference trains one example per optimizer step: batching must be padded, batch_size 1 and "
                "gradient_accumulation_steps 1 (set recipe: packed for other batching)"
            )
        return self


class TrainJobConfig(Section):
    """Kubeflow Trainer placement of the training step on Kubernetes."""

    runtime: str = Field(
        "selflengthen-deepspeed",
        description="name of the training runtime of the TrainJob (the chart installs selflengthen-deepspeed)",
    )
    num_nodes: int = Field(1, ge=1, description="nodes of the TrainJob")
    gpus_per_node: int = Field(
        8, ge=0, description="GPUs per node, one process each (0: no GPU, one process); execution.training inline: the train step's GPUs"
    )
    memory: str = Field(
        "256Gi", pattern=_QUANTITY,
        description="host memory each trainer node requests (ZeRO-3 offload keeps optimizer state and parameters there)",
    )
    scratch_size: str = Field(
        "200Gi", pattern=_QUANTITY,
        description="ephemeral storage each trainer node requests (the base model is downloaded to it)",
    )
    image: str = Field(
        "ghcr.io/selflengthen/trainer:0.1.0",
        description="trainer image (CUDA torch, DeepSpeed): of the TrainJob, and of the train step with execution.training inline",
    )
    timeout_s: float = Field(
        86400.0, gt=0, description="seconds a TrainJob may run (activeDeadlineSeconds); then it is deleted and the step fails"
    )
    runtime_kind: Literal["TrainingRuntime", "ClusterTrainingRuntime"] = Field(
        "TrainingRuntime", description="kind of `runtime`: the chart installs a namespaced TrainingRuntime"
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the trainer pods require")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations of the trainer pods (Kubernetes keys: key, operator, value, effect)"
    )

    _tolerations = field_validator("tolerations")(_check_tolerations)


# --------------------------------------------------------------------------- storage, eval, pipeline


class StorageConfig(Section):
    """Object storage. Credentials come only from the environment variables named here."""

    s3_endpoint: str | None = Field(None, description="host:port of an S3/MinIO endpoint; None: local paths only")
    s3_secure: bool = Field(True, description="use HTTPS (TLS) to the S3 endpoint")
    s3_region: str | None = Field(None, description="S3 region; null: the client asks the endpoint")
    access_key_env: str = Field("AWS_ACCESS_KEY_ID", description="name of the env var holding the S3 access key (never the key)")
    secret_key_env: str = Field(
        "AWS_SECRET_ACCESS_KEY", description="name of the env var holding the S3 secret key (never the key)"
    )
    max_retries: int = Field(5, ge=0, description="retries of a transient S3 failure (connection error, 5xx, SlowDown)")
    backoff_initial_s: float = Field(0.5, gt=0, description="first S3 retry delay in seconds, doubled per retry up to 30 s")
    multipart_part_size: int = Field(
        16 * 1024 * 1024, ge=5 * 1024 * 1024,
        description="part size in bytes of S3 multipart uploads (used above it; at least 5 MiB)",
    )
    shard_size: int = Field(
        64, ge=1, description="records per dataset part; finished units per checkpoint shard (a shard is written once this many are buffered)"
    )
    checkpoint_interval_s: float = Field(
        60.0, gt=0,
        description="a stage also writes a checkpoint shard this many seconds after the last one when units are buffered, "
        "so a crash loses at most this much finished work",
    )


class EvalConfig(Section):
    """Benchmarks, their sampling and the LLM judge (docs/method.md, "Evaluation")."""

    enabled: bool = Field(
        True, description="evaluate the final model (and with per_iteration the Generator along the way); false: no evaluation"
    )
    per_iteration: bool = Field(
        True, description="also evaluate the Generator at the start of each iteration and before the final SFT"
    )
    benchmarks: list[Literal["longen", "longbench-write", "longwrite-ruler"]] = Field(
        default_factory=lambda: ["longen"], description="benchmarks answered and scored at each evaluation"
    )
    benchmark_files: dict[str, str] = Field(default_factory=dict, description="benchmark name -> local path or URI")
    max_prompts: int | None = Field(
        None, ge=1, description="evaluate the first N prompts of each benchmark (of those in the run's languages, which the evaluate step keeps)"
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.5, top_p=0.8, max_tokens=30720),
        description="sampling of the benchmark answers; max_tokens 30720 leaves 2048 tokens of the default "
        "32768-token context (serving.cluster.max_model_len) for the prompt",
    )
    quality_rubric: Literal["longbench-write", "self-lengthen", "none"] = Field(
        "none", description="quality rubric scored by the serving.judge model; none: length scores only"
    )
    judge_retries: int = Field(3, ge=0, description="re-asks of the judge when its answer cannot be read")
    min_scored_fraction: float = Field(
        1.0, ge=0.0, le=1.0,
        description="`eval quality` fails (non-zero exit) when the judge scored fewer than this fraction of the "
        "prompts; 1.0: every prompt must be scored, 0: never fail (the unscored ones are reported either way)",
    )  # fmt: skip
    judge_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, max_tokens=512))


class ReportConfig(Section):
    """The fixed held-out query set whose answer lengths the report follows."""

    heldout_queries: int = Field(8, ge=1, description="fixed held-out queries answered before and after each iteration")
    heldout_samples: int = Field(
        1, ge=1, description="answers per held-out query each time the Generator answers them (with generate.sampling)"
    )


class ExportConfig(Section):
    """What the export step publishes at the end of a run: the dataset of long answers and the final
    model, with their cards, to a folder (local or s3://) and, when ``hub_repo`` is set, to the
    Hugging Face Hub."""

    enabled: bool = Field(False, description="add the export step at the end of the pipeline (after the report)")
    output: str | None = Field(
        None, description="where the export goes (local path or s3://): dataset/ and model/ below it; empty: <workdir>/<run_id>/export"
    )
    license: str = Field(
        "other", min_length=1,
        description="license id written into both cards' YAML header (a Hub license id such as apache-2.0; it must allow what the base model's license allows)",
    )
    hub_repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="<owner>/<name> on the Hugging Face Hub: the dataset goes to the dataset repo and the model to the model repo of that name; empty: no push",
    )
    token_env: str = Field(
        "HF_TOKEN", min_length=1, description="name of the env var holding the Hub token used to push (never the token; it is written nowhere)"
    )
    private: bool = Field(True, description="create the Hub repos private (repos that exist keep their visibility)")


class StepResources(Section):
    """CPU, memory (requests; the limits equal them) and local disk of a pipeline step's pod."""

    cpu: str = Field("1", pattern=_QUANTITY, description="CPU request and limit")
    memory: str = Field("4Gi", pattern=_QUANTITY, description="memory request and limit")
    scratch: str | None = Field(
        None, pattern=_QUANTITY,
        description="size limit of the pod's scratch emptyDir (its TMPDIR): a generation stage's end sorts its checkpoint "
        "there (about the size of the stage's output), and models are downloaded there when no model cache is set; "
        "null: no limit (the node's ephemeral storage)",
    )


class ExecutionConfig(Section):
    """Where the run executes, decided once: on this machine (``selflengthen run``) or on Kubeflow
    Pipelines (``selflengthen compile``). Checked when the config is loaded: a kubeflow run needs
    every input and output on object storage; a local run refuses settings only a cluster reads."""

    target: Literal["local", "kubeflow"] = Field(
        "local",
        description="local: kfp.local on this machine, local model servers, local or s3:// paths; kubeflow: "
        "vLLM Deployments, step pods and (training: trainjob) TrainJobs, s3:// paths only",
    )
    training: Literal["inline", "trainjob"] = Field(
        "inline",
        description="inline: the train step trains itself (kubeflow: in the trainer image under torchrun, one process per "
        "trainjob.gpus_per_node GPU); trainjob (kubeflow only): a Kubeflow Trainer TrainJob that the step watches",
    )
    steps: StepResources = Field(default_factory=StepResources, description="resources of every step pod but the train step's (kubeflow)")
    train_step: StepResources = Field(
        default_factory=lambda: StepResources(cpu="8", memory="64Gi"),
        description="resources of the train step's pod (kubeflow; with training inline it also holds the training)",
    )
    lease_s: float = Field(
        3600.0, ge=600,
        description="seconds a model server or TrainJob outlives the last renewal by a step using it; then `selflengthen gc` "
        "deletes it even while its run seems alive (covers gaps between steps: scheduling, retries)",
    )
    start_grace_s: float = Field(
        90.0, ge=0,
        description="seconds a pod may stay in a state that is usually fatal but can pass (image pull back-off, unschedulable, "
        "config error) before the serve or train step gives up; 0: at once",
    )
    crash_restarts: int = Field(1, ge=1, description="restarts of a crash-looping server or trainer container before the step gives up")
    model_cache_pvc: str | None = Field(
        None, pattern=_K8S_NAME, max_length=253,
        description="kubeflow: a ReadWriteMany PVC in pipeline.namespace holding model folders fetched once per content (URI and "
        "checksum), mounted read-only by every model server and TrainJob trainer, and (read-write: KFP mounts no PVC read-only) "
        "by the inline train step when its pod runs in pipeline.namespace (pipeline.run_namespace); null: each server copies the "
        "model into its own emptyDir",
    )


class PipelineConfig(Section):
    """Kubeflow Pipelines settings: image, retries, caching, namespace and Secrets."""

    image: str = Field("ghcr.io/selflengthen/runtime:0.1.0", description="the one pinned image of all components")
    pipeline_root: str | None = Field(
        None, description="where KFP keeps the run's artifacts (e.g. s3://bucket/kfp), compiled in as the default root; "
        "unset: the KFP installation's default (local runs: <workdir>/kfp)"
    )
    retries: int = Field(2, ge=0, description="KFP retries of a failed step (backoff from 15 s, doubling, at most 300 s)")
    caching: bool = Field(
        True, description="KFP caching of steps on their inputs (serve, teardown, prepare and report never cache)"
    )
    namespace: str = Field("selflengthen", description="Kubernetes namespace of the model servers and TrainJobs the steps create")
    run_namespace: str | None = Field(None, pattern=_K8S_NAME, max_length=63, description=(
        "namespace of the run's step pods: null: pipeline.namespace (multi-user Kubeflow: the profile namespace); standalone "
        "Kubeflow Pipelines: its own (e.g. kubeflow). Pods mount PVCs of their namespace only: the inline train step mounts "
        "execution.model_cache_pvc only when this is pipeline.namespace. doctor checks the run's account here"))  # fmt: skip
    service_account: str = Field(
        "selflengthen-runner",
        description="the account the run's pods use: `selflengthen submit` creates the run with it and `doctor` checks its "
        "permissions (the chart and overlays install selflengthen-runner; multi-user Kubeflow: default-editor)",
    )
    storage_secret: str = Field("selflengthen-s3", description="Kubernetes Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    api_key_secret: str | None = Field(None, description="Kubernetes Secret with SELFLENGTHEN_API_KEY")

    @property
    def steps_namespace(self) -> str:
        """Where the run's step pods run (``run_namespace``, else ``namespace``)."""
        return self.run_namespace or self.namespace


class ModelConfig(Section):
    """The base model both roles start from."""

    base: str = Field(
        description="base model: a local path or s3:// URI of a Hugging Face model folder, or hf://<owner>/<repo>[@revision] "
        "(a Hub model, fetched once by the prepare step with its revision pinned in <workdir>/<run_id>/base-model.json)"
    )
    tokenizer: str | None = Field(None, description="defaults to the base model's")
    build_tiny: bool = Field(False, description="build the tiny CPU model at `base` when it is missing")
    tiny_pretrain_steps: int = Field(
        1000, ge=0, description="pre-training steps of the tiny model (a step budget keeps the build deterministic); 0: untrained"
    )

    @model_validator(mode="after")
    def _tiny_is_built_locally(self) -> "ModelConfig":
        if self.build_tiny and self.base.startswith("hf://"):
            raise ValueError("model.build_tiny builds a model at a folder; model.base names a Hub model (hf://)")
        return self


# --------------------------------------------------------------------------- the run


# The samplings of requests to the roles the serve step starts (generator and extender).
SERVED_SAMPLINGS = (
    "self_instruct.sampling", "self_instruct.judge_sampling", "generate.sampling", "extend.sampling",
    "length_control.rewrite_sampling", "eval.sampling",
)  # fmt: skip


class RunConfig(Section):
    """A whole Self-Lengthen run."""

    run_id: str = Field(
        "selflengthen", pattern=_K8S_NAME, max_length=63,
        description="run name (a DNS label): artefacts go to <workdir>/<run_id>; names and labels its Kubernetes objects. "
        "On Kubeflow the pipeline's run_id parameter replaces it (empty: the KFP run's own id, so every run is new)",
    )
    workdir: str = Field("runs/local", description="root URI of every artefact of the run (local path or s3://bucket/prefix)")
    seed: int = Field(1234, description="run seed: few-shot draws, length-biased selection, line dropout and length constraints")
    iterations: int = Field(
        3, ge=1, le=50, description="macro-iterations (generate, extend, select, train) before the final phase (reference: 3)"
    )
    languages: list[Language] = Field(
        default_factory=lambda: ["en", "zh"], min_length=1,
        description="languages of the run: seeds, new instructions (split evenly), held-out queries",
    )
    on_change: Literal["refuse", "redo"] = Field(
        "refuse",
        description="an output or checkpoint made with other settings or inputs than a rerun's: refuse (an error naming "
        "the changed settings) or redo (discard it and compute it again)",
    )
    model: ModelConfig
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    extend: ExtendConfig = Field(default_factory=ExtendConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    sft_data: SftDataConfig = Field(default_factory=SftDataConfig)
    length_control: LengthControlConfig = Field(default_factory=LengthControlConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    trainjob: TrainJobConfig = Field(default_factory=TrainJobConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_layout(cls, data: Any) -> Any:
        """serving.layout, when not set: shared where the roles can be LoRA adapters of one served base
        (LoRA training, served by vLLM: on Kubeflow, or locally with the vllm backend), else sequential."""
        if not isinstance(data, dict):
            return data
        serving = _section(data, "serving")
        if "layout" in serving:
            return data
        lora = _section(data, "training").get("method", "lora") == "lora"
        vllm = _section(data, "execution").get("target", "local") == "kubeflow" or _section(serving, "local").get("backend") == "vllm"
        return {**data, "serving": {**serving, "layout": "shared" if lora and vllm else "sequential"}}

    @model_validator(mode="after")
    def _servable_layout(self) -> "RunConfig":
        """A shared server holds one base model with the roles as its LoRA adapters, each under its own name."""
        serving = self.serving
        if self.execution.target == "local" and serving.cluster.replicas > 1:
            raise ValueError("serving.cluster.replicas: a local run starts one server process per model server; set 1")
        if serving.layout != "shared":
            return self
        if self.training.method != "lora" or self.training.merge_each_iteration:
            raise ValueError(
                "serving.layout: shared serves both roles as LoRA adapters of one base model, but training.method full "
                "(or training.merge_each_iteration) makes each role a model of its own after the first iteration; "
                "use sequential or per_role"
            )
        if self.execution.target == "local" and serving.local.backend != "vllm":
            raise ValueError(
                "serving.layout: shared needs a server that loads LoRA adapters by name (vLLM); serving.local.backend "
                "transformers serves one model folder: set serving.local.backend vllm, or serving.layout sequential"
            )
        names = {"serving.base_model_name": serving.base_model_name}
        for field, name in (("serving.generator.model", serving.generator.model), ("serving.extender.model", serving.extender.model)):
            taken = [other for other, value in names.items() if value == name]
            if taken:
                raise ValueError(f"{field}: {name!r} is also {taken[0]}; one shared server tells the roles apart by name")
            names[field] = name
        return self

    @model_validator(mode="after")
    def _one_execution_target(self) -> "RunConfig":
        """A kubeflow run reads and writes object storage only; a local run has no TrainJob."""
        if self.execution.target == "local":
            if self.execution.training == "trainjob":
                raise ValueError("execution.training: trainjob needs execution.target kubeflow (a local run trains inline)")
            if self.execution.model_cache_pvc:
                raise ValueError("execution.model_cache_pvc: a PVC is mounted by cluster pods only; a local run caches in SELFLENGTHEN_CACHE")
            if self.serving.cluster.stream_from_s3:
                raise ValueError("serving.cluster.stream_from_s3: the cluster's vLLM pods stream from S3; a local run's server reads a local copy")
            return self
        if not self.storage.s3_endpoint:
            raise ValueError("storage.s3_endpoint: execution.target kubeflow keeps every artefact on S3; set the endpoint")
        if self.export.enabled and self.export.hub_repo and not self.serving.cluster.hf_token_secret:
            raise ValueError(
                "export.hub_repo: on kubeflow the export step pushes with key HF_TOKEN of the Secret "
                "serving.cluster.hf_token_secret (as env export.token_env), which is not set; set it, or unset export.hub_repo"
            )
        for dotted, uri in self._paths():
            if uri is not None and not uri.startswith(("s3://", "hf://")):
                raise ValueError(
                    f"{dotted}: {uri!r} is a path on one machine, which the pods of execution.target kubeflow cannot read; use s3://"
                )
        return self

    def _paths(self) -> list[tuple[str, str | None]]:
        """Every (field, URI) a step reads or writes."""
        paths = [
            ("workdir", self.workdir),
            ("model.base", self.model.base),
            ("model.tokenizer", self.model.tokenizer),
            ("self_instruct.seeds_uri", self.self_instruct.seeds_uri),
            ("export.output", self.export.output),
        ]
        return paths + [(f"eval.benchmark_files.{name}", uri) for name, uri in self.eval.benchmark_files.items()]

    @model_validator(mode="after")
    def _room_for_a_prompt(self) -> "RunConfig":
        """A served model's context holds prompt plus answer: max_tokens must leave room for a prompt."""
        limit = self.serving.cluster.max_model_len
        for dotted in SERVED_SAMPLINGS:
            section, field = dotted.split(".")
            max_tokens = getattr(getattr(self, section), field).max_tokens
            if max_tokens >= limit:
                raise ValueError(
                    f"{dotted}.max_tokens ({max_tokens}) must be less than serving.cluster.max_model_len ({limit}): "
                    "the model's context holds the prompt and the answer, so no prompt would fit"
                )
        return self

    @field_validator("languages")
    @classmethod
    def _unique_languages(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("languages must not repeat")
        return value

    def config_hash(self) -> str:
        """A short stable hash of the effective configuration (recorded in manifests)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The mapping at ``data[name]`` of raw config input (empty when absent or not a mapping)."""
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _format_errors(error: ValidationError, source: str) -> str:
    """``<source>: <field>: <message>`` for the first problem (a first line that names it), then
    one indented line per further problem."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{field}: {message}")
    more = f" (and {len(problems) - 1} more problem(s) below)" if len(problems) > 1 else ""
    return "\n".join([f"invalid configuration in {source}: {problems[0]}{more}", *(f"  {p}" for p in problems[1:])])


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate a mapping into a RunConfig, raising ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config file; ``overrides`` are dotted keys (``"training.max_steps": 20``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(error, 'problem', None) or error}") from None
    data = data or {}
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return parse_config(data, str(path))


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c = value`` inside a nested mapping, creating sections on the way."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def default_config_path() -> Path:
    """The local embedded default, package data (selflengthen/configs/tiny-local.yaml): found the same
    way from a source checkout, an installed wheel and the runtime image."""
    return Path(str(resources.files("selflengthen") / "configs" / "tiny-local.yaml"))
