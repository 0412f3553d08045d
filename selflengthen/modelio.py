"""Model folders addressed by URI: local paths are used in place, s3:// folders are fetched once,
``hf://<owner>/<repo>[@revision]`` names a model on the Hugging Face Hub, read from the hub cache
(``huggingface_hub.snapshot_download``: a download when missing, the cache alone with
``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from selflengthen.config import StorageConfig
from selflengthen.errors import DataError
from selflengthen.storage import get_storage, is_s3_uri

log = logging.getLogger(__name__)

HUB_SCHEME = "hf://"


def hub_model_id(uri: str) -> str | None:
    """``<owner>/<repo>`` of an ``hf://`` model URI; None for other URIs."""
    return parse_hub_uri(uri)[0] if uri.startswith(HUB_SCHEME) else None


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of ``hf://<owner>/<repo>[@revision]``."""
    repo, at, revision = uri.removeprefix(HUB_SCHEME).partition("@")
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name or (at and not revision):
        raise DataError(f"model {uri}: expected hf://<owner>/<repo> or hf://<owner>/<repo>@<revision>")
    return repo, revision or None


def hub_snapshot(uri: str) -> tuple[Path, str]:
    """The local snapshot folder of the hub model ``uri`` and the commit it resolved to."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    repo, revision = parse_hub_uri(uri)
    try:
        folder = Path(snapshot_download(repo, revision=revision))
    except (OSError, ValueError, HFValidationError) as error:  # LocalEntryNotFoundError and the HTTP errors are OSErrors
        get = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        raise DataError(
            f"model {uri}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and not downloadable "
            f"({type(error).__name__}: {error}); download it into that cache first ({get}), "
            "or name a local folder or an s3:// folder holding it"
        ) from None
    return folder, folder.name  # snapshots/<commit>


# Where the model folders fetched from S3 live when set: on a cluster with
# ``execution.model_cache_pvc``, the PVC every model server and trainer mounts.
MODEL_CACHE_ENV = "SELFLENGTHEN_MODEL_CACHE"
COMPLETE = ".complete"


def model_cache_dir() -> Path:
    """This process's cache (SELFLENGTHEN_CACHE, else a per-user temp folder): fetched model
    folders unless SELFLENGTHEN_MODEL_CACHE names another place, training outputs."""
    return Path(os.environ.get("SELFLENGTHEN_CACHE", Path(tempfile.gettempdir()) / "selflengthen-cache"))


def model_folders_dir() -> Path:
    """Where :func:`localize` keeps model folders: SELFLENGTHEN_MODEL_CACHE, else the process cache."""
    shared = os.environ.get(MODEL_CACHE_ENV)
    return Path(shared) if shared else model_cache_dir()


def cache_key(uri: str, fingerprint: str) -> str:
    """The cache entry of a folder: its URI and its content (:meth:`Storage.fingerprint`)."""
    return hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()[:24]


def _fill(uri: str, storage_config: StorageConfig, target: Path) -> Path:
    """Download ``uri`` next to ``target`` and move it there whole (another process filling the
    same entry meanwhile wins; its copy is the same content)."""
    partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        get_storage(storage_config).download_dir(uri, str(partial))
        (partial / COMPLETE).touch()
        try:
            partial.rename(target)
        except OSError:
            if not (target / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def localize(uri: str, storage_config: StorageConfig) -> Path:
    """A local folder holding the model at ``uri``: s3:// folders are fetched once per content
    into the model cache, keyed by URI and content; a read-only cache (a trainer's mount) without
    the entry gives a private download instead."""
    if uri.startswith(HUB_SCHEME):
        return hub_snapshot(uri)[0]
    if not is_s3_uri(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_dir():
            raise DataError(f"model folder not found: {uri}")
        return path
    cache = model_folders_dir()
    target = cache / cache_key(uri, get_storage(storage_config).fingerprint(uri))
    if (target / COMPLETE).exists():
        return target
    try:  # the same call that fails on a read-only mount (EROFS) whoever the user is
        cache.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=cache, prefix=".probe-"))
    except OSError as error:
        log.info("model cache %s cannot be written (%s) and has no copy of %s: downloading it for this process", cache, error, uri)
        target = Path(tempfile.mkdtemp(prefix="selflengthen-model-")) / target.name
    return _fill(uri, storage_config, target)


def load_tokenizer(uri: str, storage_config: StorageConfig, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer (with its chat template) of the model at ``uri``."""
    from transformers import AutoTokenizer

    path = localize(uri, storage_config)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"tokenizer at {uri} has no chat template; stage-2 prefill needs one")
    return tokenizer
