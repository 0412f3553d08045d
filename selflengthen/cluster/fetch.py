"""Entry point of the model server's init container: copy model folders from object storage.

    python -m selflengthen.cluster.fetch s3://bucket/models/base=/models/base [URI=FOLDER ...]

With a shared model cache (``execution.model_cache_pvc``, mounted at the folder env
``SELFLENGTHEN_MODEL_CACHE`` names) each folder is fetched into the cache once per content (URI
and checksum) and ``FOLDER`` becomes a link to it, which the server reads read-only.

The storage settings (endpoint, TLS, region; no secrets) come as JSON in the env var
``SELFLENGTHEN_STORAGE_CONFIG``; the credentials come from the env vars those settings name, which
the pod fills from a Secret. Nothing secret is ever an argument. Exits 1 with one line on stderr
when a copy fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import ValidationError

from selflengthen.cluster.objects import STORAGE_CONFIG_ENV
from selflengthen.config import StorageConfig
from selflengthen.errors import SelfLengthenError
from selflengthen.modelio import MODEL_CACHE_ENV, localize
from selflengthen.storage import get_storage


def parse_pair(argument: str) -> tuple[str, str]:
    """``URI=FOLDER`` -> (URI, FOLDER); the split is at the last ``=`` (URIs may hold one)."""
    uri, separator, folder = argument.rpartition("=")
    if not separator or not uri or not folder:
        raise SelfLengthenError(f"expected URI=FOLDER, got {argument!r}")
    return uri, folder


def fetch(pairs: list[tuple[str, str]], storage_config: StorageConfig) -> None:
    """Copy every object below each URI into its folder (same relative paths); with a shared
    model cache (env SELFLENGTHEN_MODEL_CACHE, the PVC of ``execution.model_cache_pvc``) fetch it
    there once per content and make the folder a link to it."""
    storage = get_storage(storage_config)
    shared = os.environ.get(MODEL_CACHE_ENV)
    for uri, folder in pairs:
        if shared:
            cached = localize(uri, storage_config)
            Path(folder).parent.mkdir(parents=True, exist_ok=True)
            Path(folder).symlink_to(cached, target_is_directory=True)
            print(f"{folder} is {cached}, the cached copy of {uri}", flush=True)
            continue
        files = storage.download_dir(uri, folder)
        print(f"fetched {len(files)} files from {uri} into {folder}", flush=True)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        if not arguments:
            raise SelfLengthenError("usage: python -m selflengthen.cluster.fetch URI=FOLDER [URI=FOLDER ...]")
        try:
            storage_config = StorageConfig.model_validate_json(os.environ.get(STORAGE_CONFIG_ENV) or "{}")
        except ValidationError as error:
            raise SelfLengthenError(f"{STORAGE_CONFIG_ENV} is not a valid storage configuration: {error}") from None
        fetch([parse_pair(argument) for argument in arguments], storage_config)
    except SelfLengthenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
