"""Self-Lengthen: an LLM teaches itself to write long answers (Generator + Extender, iterated)."""

__version__ = "0.1.0"
