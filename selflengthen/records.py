"""Typed records that stages read and write (one JSON object per JSONL line).

Every record has a stable ``id`` derived from its inputs, so a resumed stage can tell which
records are already done and never writes one twice.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selflengthen.config import Language, Role


def stable_id(*parts: object) -> str:
    """A short deterministic id from the given parts."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return digest[:16]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)


class Query(Record):
    """An instruction that calls for a long answer."""

    text: str = Field(min_length=1)
    language: Language
    source: Literal["seed", "self-instruct", "heldout", "benchmark", "length-control"] = "seed"
    iteration: int = 0
    constraint: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class ExtensionRound(BaseModel):
    """One round of one extension attempt (docs/method.md, step 3)."""

    model_config = ConfigDict(extra="forbid")

    chain: int = 0
    attempt: int
    round: int
    stage1_text: str = ""
    continuation: str = ""
    text: str = ""
    words: int = 0
    finish_reason: str | None = None
    accepted: bool = False
    reason: str | None = Field(None, description="why the round was rejected")


class Response(Record):
    """An answer to a query: initial (Generator) or extended (Extender)."""

    query_id: str
    query: str
    language: Language
    kind: Literal["initial", "extended", "collected", "heldout"] = "initial"
    sample_index: int = 0
    chain: int = Field(0, description="extended: the extension chain (of extend.chains) that produced it")
    iteration: int = 0
    text: str
    words: int
    finish_reason: str | None = None
    attempts: int = 1
    initial_id: str | None = None
    initial_text: str | None = None
    initial_words: int | None = None
    rounds: list[ExtensionRound] = Field(default_factory=list)


class Failure(Record):
    """A unit of work given up after its retries, kept so it is never silently dropped."""

    stage: str
    query_id: str | None = None
    reason: str
    attempts: int = 0
    detail: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class SftExample(Record):
    """A supervised example: the loss falls on the last (assistant) message only."""

    role: Role
    messages: list[ChatMessage] = Field(min_length=2)
    language: Language
    source_id: str | None = None
    iteration: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[ChatMessage]:
        return self.messages[:-1]

    @property
    def response(self) -> str:
        return self.messages[-1].content
