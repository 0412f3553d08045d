"""The structured log format, for stage loggers and for plain module loggers alike."""

import logging

from selflengthen.logs import HANDLER_NAME, configure_logging, stage_logger


def formatted(logger: logging.Logger | logging.LoggerAdapter, message: str, *args: object) -> str:
    """The line the selflengthen handler writes for ``message`` logged at INFO through ``logger``."""
    records: list[logging.LogRecord] = []
    base = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
    base.addFilter(records.append)  # a filter sees every record; appending returns None, so it drops it
    try:
        logger.info(message, *args)
    finally:
        base.removeFilter(records.append)
    # The handler configure_logging added (tests may have added capturing handlers beside it).
    handler = next(h for h in logging.getLogger("selflengthen").handlers if h.get_name() == HANDLER_NAME)
    return handler.format(records[0])


def test_stage_and_module_loggers_both_format() -> None:
    configure_logging()
    line = formatted(stage_logger("run-7", "extend", 2), "kept %d", 3)
    assert line.endswith("INFO run=run-7 iteration=2 stage=extend kept 3")
    # A module logger (the client's retries) carries no run fields: "-", not a "--- Logging error ---".
    line = formatted(logging.getLogger("selflengthen.client"), "retry %d", 1)
    assert line.endswith("INFO run=- iteration=- stage=- retry 1")
