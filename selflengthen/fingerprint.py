"""Fingerprints: exactly the settings and inputs that determine an output, and the rerun rule.

Every output that a rerun may skip or continue (a stage's dataset or its checkpoint, a training
output or its checkpoints) records a :class:`Fingerprint`: the flattened settings it was computed
from (dotted key -> value: its own config section(s), the checks, the sampling, the model it used,
the run seed where it is used) and the sha256 of each input. What does not change the records
(serving endpoints and ports, concurrency, timeouts, retries, storage credentials, shard_size) is
left out, so moving a server or tuning throughput never invalidates finished work.

The rerun rule (:func:`reconcile`): the same fingerprint keeps the output (a complete output is
skipped, a checkpoint resumed); a different one is refused with the changed settings named
(:class:`SettingsChanged`), or with ``on_change: redo`` the stale output is discarded and computed
again. Work is never continued or mixed under changed settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from selflengthen.config import Role, RunConfig
from selflengthen.errors import SelfLengthenError

FINGERPRINT_NAME = "fingerprint.json"


class SettingsChanged(SelfLengthenError):
    """An existing output (or checkpoint) was made with other settings or inputs than this rerun's."""


class Fingerprint(BaseModel):
    """What an output was computed from: settings (dotted key -> value), inputs (URI -> sha256),
    and ``digest``, a sha256 over both."""

    model_config = ConfigDict(extra="forbid")

    digest: str
    settings: dict[str, Any]
    inputs: dict[str, str]

    @classmethod
    def of(cls, settings: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> Fingerprint:
        settings, inputs = dict(sorted(settings.items())), dict(sorted((inputs or {}).items()))
        body = json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True, ensure_ascii=False)
        return cls(digest=hashlib.sha256(body.encode("utf-8")).hexdigest(), settings=settings, inputs=inputs)


def parse_fingerprint(text: str) -> Fingerprint | None:
    """A recorded fingerprint; None when it cannot be read (it then counts as not recorded)."""
    try:
        return Fingerprint.model_validate_json(text)
    except ValidationError:
        return None


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """A nested mapping as dotted key -> leaf (lists are leaves)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}


def config_settings(config: RunConfig, paths: Iterable[str]) -> dict[str, Any]:
    """The settings at the dotted ``paths`` of ``config`` (a section or a single field), flattened."""
    data = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for path in paths:
        node: Any = data
        for key in path.split("."):
            node = node[key]
        flat.update(flatten(node, path))
    return flat


def checks_sections(config: RunConfig) -> list[str]:
    """The config paths of the checks of the run's languages (what a stage that checks texts reads)."""
    return [f"checks.{language}" for language in config.languages]


def model_settings(config: RunConfig, role: Role | str) -> dict[str, Any]:
    """The model a ``role`` endpoint answers with: its name, and what it was loaded from when known."""
    endpoint = getattr(config.serving, role)
    settings: dict[str, Any] = {f"serving.{role}.model": endpoint.model}
    if endpoint.model_source is not None:
        settings[f"serving.{role}.model_source"] = endpoint.model_source
    return settings


def stage_fingerprint(
    config: RunConfig,
    *,
    sections: Iterable[str],
    role: Role | str | None = None,
    inputs: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of a stage reading the config ``sections`` (dotted paths), answered by the
    ``role`` endpoint's model, from ``inputs`` (URI -> sha256), with ``extra`` settings that are
    not config fields (e.g. the iteration number)."""
    settings = config_settings(config, sections)
    if role is not None:
        settings.update(model_settings(config, role))
    settings.update(extra or {})
    return Fingerprint.of(settings, inputs)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_changes(old: Fingerprint, new: Fingerprint) -> list[str]:
    """One phrase per difference: ``key: old -> new`` for settings, ``input <uri> changed`` for inputs."""

    def show(settings: Mapping[str, Any], key: str) -> str:
        return json.dumps(settings[key], ensure_ascii=False) if key in settings else "(not set)"

    changes = [
        f"{key}: {show(old.settings, key)} -> {show(new.settings, key)}"
        for key in sorted(set(old.settings) | set(new.settings))
        if old.settings.get(key, ...) != new.settings.get(key, ...)
    ]
    for uri in sorted(set(old.inputs) | set(new.inputs)):
        if uri not in new.inputs:
            changes.append(f"input {uri} is no longer read")
        elif uri not in old.inputs:
            changes.append(f"input {uri} is new")
        elif old.inputs[uri] != new.inputs[uri]:
            changes.append(f"input {uri} changed")
    return changes or ["the recorded fingerprint differs"]


def reconcile(
    output_uri: str,
    recorded: Fingerprint | None,
    current: Fingerprint,
    on_change: str,
    *,
    discard: Callable[[], None],
    what: str = "output",
) -> bool:
    """Apply the rerun rule to the existing ``what`` at ``output_uri``, made under ``recorded``
    (None: it records no fingerprint). True: it matches ``current`` and may be kept. Otherwise
    ``on_change`` "refuse" raises :class:`SettingsChanged`, "redo" calls ``discard`` and returns
    False (compute it again)."""
    if recorded is not None and recorded.digest == current.digest:
        return True
    changes = describe_changes(recorded, current) if recorded is not None else ["it records no fingerprint of its settings"]
    if on_change == "redo":
        discard()
        return False
    raise SettingsChanged(
        f"the {what} at {output_uri} was made with other settings: {'; '.join(changes)}. "
        "Set on_change: redo (e.g. --set on_change=redo) to discard it and compute it again, "
        "or write to another output or workdir"
    )
