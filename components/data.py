"""Steps over datasets alone: selection and SFT data."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select(config_json: str, run_id: str, phase: str, responses: str, metrics: Output[Metrics]) -> str:
    """The checks, then seeded length-biased sampling of the extended responses."""
    from selflengthen.orchestration import steps

    return steps.select(config_json, run_id=run_id, phase=phase, responses=responses, metrics=metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sft_data(
    config_json: str, run_id: str, phase: str, selected: str, initial: str, extended: str, run_data: str
) -> NamedTuple("Outputs", generator=str, extender=str, run_data=str):
    """SFT examples for the Generator and the Extender, and the run's datasets so far (``run_data``:
    the earlier iterations' in, this one's added)."""
    from selflengthen.orchestration import steps

    uris = steps.sft_data(config_json, run_id=run_id, phase=phase, selected=selected, initial=initial, extended=extended, run_data=run_data)
    return NamedTuple("Outputs", generator=str, extender=str, run_data=str)(**uris)
