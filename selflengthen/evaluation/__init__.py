"""Evaluation: benchmark prompts, length constraints, length-following and LLM-judge quality scores.

Modules: ``benchmarks`` (loading prompt and prediction files), ``constraints`` (reading length
constraints, Chinese numerals included), ``scoring`` (LonGen and LongBench-Write length scores),
``judge`` (rubrics, reading judge answers), ``runner`` (answering benchmarks; the evaluate step).
"""

from selflengthen.evaluation.runner import evaluate

__all__ = ["evaluate"]
