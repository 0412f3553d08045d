"""Errors that entry points turn into a clear message and a non-zero exit (no traceback)."""


class SelfLengthenError(Exception):
    """Base of every user-facing error; the message names the field, line, URI or endpoint.

    ``transient``: whether another attempt of the same work may succeed (a server or object store
    that may come back). The others are deterministic: bad input, config or settings fail every
    attempt alike, so a pipeline step that raises one is not retried (see orchestration.steps).
    """

    transient: bool = False


class DataError(SelfLengthenError):
    """Malformed input data (JSONL line, empty file, non-UTF-8 bytes, missing field)."""


class StorageError(SelfLengthenError):
    """Object storage could not be used (missing bucket, bad credentials, unreachable endpoint)."""

    transient = True


class EndpointError(SelfLengthenError):
    """A model server could not be used (unreachable, refusing, retries exhausted)."""

    transient = True


class RequestRefused(EndpointError):
    """One request was refused for what it holds (a 4xx other than auth or unknown model, or a prompt
    that leaves no room for an answer): a failure of its record, not of the stage.

    ``reason`` is ``"prompt_too_long"`` or ``"refused"``; it becomes the record's Failure reason.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TrainingError(SelfLengthenError):
    """Training cannot start or failed (bad dataset, model, LoRA targets)."""
