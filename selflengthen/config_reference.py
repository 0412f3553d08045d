"""The configuration reference (docs/configuration.md), generated from the config models."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from selflengthen.config import RunConfig

HEADER = """# Configuration reference

Generated from `selflengthen/config.py` by `selflengthen config reference`; a test keeps this file
up to date. Every key is optional unless its default says *required*. Print the effective config of
a file with `selflengthen config show --config FILE`.

| key | type | default | description |
| --- | --- | --- | --- |
"""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return (text or str(annotation)).replace("typing.", "").replace("selflengthen.config.", "").replace("|", "\\|")


def _default(value: Any, required: bool) -> str:
    if required:
        return "*required*"
    return f"`{json.dumps(value, ensure_ascii=False)}`".replace("|", "\\|")


def _rows(model: type[BaseModel], instance: BaseModel | None, prefix: str) -> list[str]:
    """One row per key; defaults are read from ``instance`` (a section as its parent builds it)."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        value = getattr(instance, name, None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            description = (annotation.__doc__ or "").strip().splitlines()[0] if annotation.__doc__ else ""
            rows.append(f"| **`{key}`** | section | | {description} |")
            nested = value if value is not None else annotation.model_construct()
            rows.extend(_rows(annotation, nested, f"{key}."))
            continue
        required = field.default is PydanticUndefined and field.default_factory is None
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(value, required)} | {description} |")
    return rows


def config_reference_markdown() -> str:
    """The whole reference as Markdown."""
    return HEADER + "\n".join(_rows(RunConfig, RunConfig.model_construct(), "")) + "\n"
