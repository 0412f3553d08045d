"""Every component is a thin wrapper: the pinned image, no installs, config JSON in, one step called."""

import inspect
import re

import pytest

import components
from components.image import IMAGE
from selflengthen.config import PipelineConfig
from selflengthen.orchestration import steps

COMPONENTS = {name: getattr(components, name) for name in components.__all__}


def test_the_image_is_the_pinned_config_default() -> None:
    assert IMAGE == PipelineConfig().image


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_runs_the_pinned_image_without_installs(name: str) -> None:
    container = COMPONENTS[name].component_spec.implementation.container
    assert container.image == IMAGE
    assert "pip install" not in " ".join(container.command)


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_takes_the_config_json_and_calls_its_one_step(name: str) -> None:
    component = COMPONENTS[name]
    assert list(component.component_spec.inputs)[0] == "config_json"
    body = inspect.getsource(component.python_func)
    calls = re.findall(r"steps\.(\w+)\(", body)
    assert calls == [name], f"{name} must call exactly steps.{name}"
    assert callable(getattr(steps, name))


# The run's own steps: they make the run id (identify_run) or derive it as identify_run does (the
# exit handler, which may not read another task's output).
RUN_STEPS = {"identify_run", "teardown_run"}


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_passes_every_input_to_its_step(name: str) -> None:
    """The step accepts each component input by name (the config JSON positionally; run_id goes to
    the step wrapper, which sets the config's run id)."""
    component = COMPONENTS[name]
    step_parameters = inspect.signature(inspect.unwrap(getattr(steps, name))).parameters
    inputs = list(component.component_spec.inputs)
    if name not in RUN_STEPS:
        assert inputs[1] == "run_id", "every step works under the run id of identify-run"
    passed = set(inputs) - {"config_json", "status"} - ({"run_id"} if name not in RUN_STEPS else set())  # status: only logged
    assert passed <= set(step_parameters), passed - set(step_parameters)
