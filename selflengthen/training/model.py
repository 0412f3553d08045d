"""The model being trained: checks on the base, LoRA or full fine-tuning, adapter continuation, merging.

Checks run on the base model's ``config.json`` and on a weightless (meta-device) copy of its
architecture, so a wrong path, a model that is not a causal LM or LoRA targets the model lacks
fail in seconds, before any weights are loaded or any process group is joined.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from selflengthen.config import LoraConfig, TrainingConfig
from selflengthen.errors import SelfLengthenError, TrainingError
from selflengthen.storage import Storage, join_uri

ADAPTER_CONFIG = "adapter_config.json"


def _read_json(storage: Storage, uri: str, what: str) -> dict[str, Any]:
    try:
        if not storage.exists(uri):
            raise TrainingError(f"{what}: {uri} does not exist")
        data = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as error:
        raise TrainingError(f"{what}: {uri} is not valid JSON: {error}") from None
    except TrainingError:
        raise
    except SelfLengthenError as error:
        raise TrainingError(f"{what}: {error}") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{what}: {uri} must hold a JSON object")
    return data


def check_base_model(storage: Storage, uri: str, *, trust_remote_code: bool) -> Any:
    """The base model's config, after checking that ``uri`` holds a causal language model.

    None for a model whose architecture lives in its own remote code (``trust_remote_code``).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    what = f"base model {uri}"
    data = _read_json(storage, join_uri(uri, "config.json"), what + " is not a Hugging Face model folder")
    model_type = data.get("model_type")
    architectures = data.get("architectures") or []
    if trust_remote_code and "AutoModelForCausalLM" in (data.get("auto_map") or {}):
        return None  # the architecture is in the model's own code, only loadable with the weights
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures:
        causal = any(name in causal_classes or name.endswith("ForCausalLM") for name in architectures)
    else:
        causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not causal:
        raise TrainingError(
            f"{what} (model_type {model_type!r}, architectures {architectures}) is not a causal language model"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise TrainingError(
            f"{what}: transformers knows no causal LM of model_type {model_type!r} "
            "(a model that ships its own code needs training.trust_remote_code)"
        )
    try:
        return AutoConfig.for_model(**data)
    except (ValueError, TypeError) as error:
        raise TrainingError(f"{what}: invalid config.json: {error}") from None


def check_weights(folder: Path, what: str) -> None:
    """``folder`` must hold weights, each safetensors file with a readable header: a zero-byte or
    cut-off file fails here with its name, not deep inside ``from_pretrained``."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files and not any(folder.glob("*.bin")):
        raise TrainingError(f"{what}: no weights (*.safetensors or *.bin) in {folder}")
    for path in files:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise TrainingError(f"{what}: {path.name} is not a readable safetensors file ({error})") from None


def linear_module_names(model_config: Any) -> set[str]:
    """Leaf names of the linear layers of the architecture (built on the meta device, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    return {name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules() if isinstance(module, torch.nn.Linear)}


def check_lora_targets(model_config: Any, lora: LoraConfig) -> None:
    """Every configured target module must name linear layers of the model."""
    if lora.target_modules == "all-linear" or model_config is None:
        return
    available = linear_module_names(model_config)
    missing = [name for name in lora.target_modules if name.rsplit(".", 1)[-1] not in available]
    if missing:
        raise TrainingError(
            f"training.lora.target_modules: {', '.join(missing)} not in the model; "
            f"its linear layers are {', '.join(sorted(available))}"
        )


def check_adapter(storage: Storage, uri: str) -> None:
    """``uri`` must hold a LoRA adapter (an adapter_config.json of peft_type LORA)."""
    data = _read_json(storage, join_uri(uri, ADAPTER_CONFIG), f"adapter {uri} is not a LoRA adapter folder")
    if data.get("peft_type") != "LORA":
        raise TrainingError(f"adapter {uri} is a {data.get('peft_type')} adapter, not LoRA")


def load_for_training(
    base_dir: Path,
    training: TrainingConfig,
    *,
    dtype: torch.dtype,
    attention: str,
    adapter_dir: Path | None,
) -> Any:
    """The trainable model: the base itself (full), a new LoRA, or the previous LoRA continued.

    A continued adapter keeps its own LoRA settings (rank, targets); ``training.lora`` shapes new ones.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=dtype, attn_implementation=attention, trust_remote_code=training.trust_remote_code
    )
    if training.method == "full":
        return model
    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    lora = training.lora
    return get_peft_model(
        model,
        PeftLoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )


def merge_adapter(base_dir: Path, adapter_dir: Path, output_dir: Path, *, trust_remote_code: bool, tokenizer: Any) -> None:
    """Write the base with the adapter merged in (the base's own dtype) plus the tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
