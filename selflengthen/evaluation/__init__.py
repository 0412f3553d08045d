"""Evaluation: benchmark prompts, length constraints, length-following and LLM-judge quality scores.

Modules: ``benchmarks`` (loading prompt and prediction files), ``constraints`` (reading length
constraints, Chinese numerals included), ``scoring`` (LonGen and LongBench-Write length scores),
``judge`` (rubrics, reading judge answers), ``runner`` (answering benchmarks; the evaluate step).
"""


__all__ = ["evaluate"]


def __getattr__(name: str):
    """``evaluate`` is loaded on first use, so that importing ``benchmarks`` or ``scoring`` loads no HTTP client."""
    if name == "evaluate":
        from selflengthen.evaluation.runner import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
