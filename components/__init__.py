"""KFP components: one per pipeline step, each a thin wrapper over one library function.

Every component runs in the one pinned runtime image (``IMAGE``, the default of
``RunConfig.pipeline.image``; a pipeline built from a config sets that config's image on each task),
takes the run's configuration as one JSON string plus a few URIs and names, and calls the matching
function of :mod:`selflengthen.orchestration.steps`. Bodies import what they use, because KFP ships
each body on its own.
"""

from components.data import select, sft_data
from components.evaluation import evaluate, export, report
from components.generation import extend, generate, heldout, length_control, self_instruct
from components.model import prepare, train
from components.run import identify_run, teardown_run
from components.serving import serve, teardown

__all__ = [
    "evaluate",
    "export",
    "extend",
    "generate",
    "heldout",
    "identify_run",
    "length_control",
    "prepare",
    "report",
    "select",
    "self_instruct",
    "serve",
    "sft_data",
    "teardown",
    "teardown_run",
    "train",
]
