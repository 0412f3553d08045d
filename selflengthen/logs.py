"""Structured logs: every line carries the run id, iteration and stage."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s iteration=%(iteration)s stage=%(stage)s %(message)s"


HANDLER_NAME = "selflengthen-structured"


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is when a record is emitted, not to the
    stream it was made with (a redirect or a test runner's capture may have closed that one)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Send selflengthen logs to stderr once, in the structured format (a handler named
    ``HANDLER_NAME``, added unless present, whatever other handlers the logger has)."""
    logger = logging.getLogger("selflengthen")
    if not any(handler.get_name() == HANDLER_NAME for handler in logger.handlers):
        handler = _StderrHandler()
        handler.set_name(HANDLER_NAME)
        # Module loggers (the client's retries, say) log without the stage's fields: "-" then.
        handler.setFormatter(logging.Formatter(_FORMAT, defaults={"run_id": "-", "iteration": "-", "stage": "-"}))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def stage_logger(run_id: str, stage: str, iteration: int | None = None) -> logging.LoggerAdapter:
    configure_logging()
    extra = {"run_id": run_id, "stage": stage, "iteration": "-" if iteration is None else iteration}
    return logging.LoggerAdapter(logging.getLogger(f"selflengthen.{stage}"), extra)
