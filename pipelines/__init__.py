"""The Self-Lengthen pipeline graph (KFP v2).

``iteration`` holds one macro-iteration as a sub-pipeline, ``final`` the phase after the
iterations, ``selflengthen`` the whole run: the iterations unrolled at compile time, each one's
trained roles feeding the next, then the final phase and the report, all inside an exit handler
that stops every model server of the run. ``tasks`` makes the tasks with what each needs (image,
retries, caching, secrets, GPU placement). ``compiled/`` keeps the compiled cluster pipeline.
"""

from pipelines.selflengthen import build_pipeline, compile_pipeline

__all__ = ["build_pipeline", "compile_pipeline"]
