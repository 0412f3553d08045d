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


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_passes_every_input_to_its_step(name: str) -> None:
    """The step accepts each component input by name (the config JSON positionally)."""
    component = COMPONENTS[name]
    step_parameters = inspect.signature(inspect.unwrap(getattr(steps, name))).parameters
    passed = set(component.component_spec.inputs) - {"config_json", "status"}  # status: the exit handler's, only logged
    assert passed <= set(step_parameters), passed - set(step_parameters)
