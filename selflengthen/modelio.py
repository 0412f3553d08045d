"""Model folders addressed by URI: local paths are used in place, s3:// folders are fetched once."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from selflengthen.config import StorageConfig
from selflengthen.errors import DataError
from selflengthen.storage import get_storage, is_s3_uri


def model_cache_dir() -> Path:
    """Where fetched model folders live (SELFLENGTHEN_CACHE, else a per-user temp folder)."""
    return Path(os.environ.get("SELFLENGTHEN_CACHE", Path(tempfile.gettempdir()) / "selflengthen-cache"))


def localize(uri: str, storage_config: StorageConfig) -> Path:
    """A local folder holding the model at ``uri`` (downloaded once per process cache for s3://)."""
    if not is_s3_uri(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_dir():
            raise DataError(f"model folder not found: {uri}")
        return path
    target = model_cache_dir() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = target / ".complete"
    if not marker.exists():
        get_storage(storage_config).download_dir(uri, str(target))
        marker.touch()
    return target


def load_tokenizer(uri: str, storage_config: StorageConfig, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer (with its chat template) of the model at ``uri``."""
    from transformers import AutoTokenizer

    path = localize(uri, storage_config)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"tokenizer at {uri} has no chat template; stage-2 prefill needs one")
    return tokenizer
