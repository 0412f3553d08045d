"""Serve and teardown steps with a real local model server (transformers serve, tiny model)."""

from datetime import datetime, timezone

import httpx
import pytest

from selflengthen.errors import EndpointError
from selflengthen.orchestration import serving
from selflengthen.orchestration.layout import RunLayout
from selflengthen.storage import get_storage, join_uri
from selflengthen.training.output import COMPLETE_NAME, TrainedModel
from tests.orchestration.helpers import alive, run_config


@pytest.mark.integration
def test_serve_replace_teardown_and_teardown_of_the_run(tmp_path, untrained_model_dir, monkeypatch) -> None:
    monkeypatch.setenv(serving.LOCAL_DIR_ENV, str(tmp_path))
    config = run_config(str(tmp_path / "runs"), model={"base": str(untrained_model_dir)})
    storage = get_storage()
    first = serving.serve(config, target="local", phase="iteration-1", role="generator", model=str(untrained_model_dir))
    assert first == RunLayout(config).server_record("iteration-1", "generator")
    old = serving.ServerRecord.model_validate_json(storage.read_text(first))
    endpoint = serving.endpoint_for(config, first, "generator")
    assert endpoint.base_url == old.base_url and endpoint.model == old.model
    assert httpx.get(f"{endpoint.base_url}/models", timeout=10).status_code == 200
    assert (tmp_path / "logs" / "server-iteration-1-generator.log").exists()

    # A rerun of the same serve step (the first run was killed) replaces the server it left.
    again = serving.serve(config, target="local", phase="iteration-1", role="generator", model=str(untrained_model_dir))
    new = serving.ServerRecord.model_validate_json(storage.read_text(again))
    assert new.pid != old.pid and not alive(old.pid) and alive(new.pid)
    assert serving.with_endpoint(config, again, "generator").serving.generator.base_url == new.base_url

    other = serving.serve(config, target="local", phase="iteration-1", role="extender", model=str(untrained_model_dir))
    other_pid = serving.ServerRecord.model_validate_json(storage.read_text(other)).pid
    assert serving.teardown(config, target="local", phase="iteration-1", role="generator") == [f"iteration-1 generator (pid {new.pid})"]
    assert not alive(new.pid) and not storage.exists(again)
    assert serving.teardown(config, target="local", phase="iteration-1", role="generator") == []

    assert serving.teardown_run(config, target="local") == [f"iteration-1 extender (pid {other_pid})"]
    assert not alive(other_pid) and storage.list(RunLayout(config).serving()) == []


def test_a_lora_result_without_a_merged_model_is_refused_locally(tmp_path) -> None:
    config = run_config(str(tmp_path / "runs"))
    output = str(tmp_path / "train")
    trained = TrainedModel(
        role="generator", method="lora", base_model="/models/base", adapter=join_uri(output, "adapter"), model=None,
        steps=1, completed_at=datetime.now(timezone.utc),
    )  # fmt: skip
    get_storage().write_text(join_uri(output, COMPLETE_NAME), trained.model_dump_json())
    assert serving.served_model(get_storage(), output) == serving.ServedModel(model="/models/base", adapter=join_uri(output, "adapter"))
    with pytest.raises(EndpointError, match="training.save_merged"):
        serving.serve(config, target="local", phase="iteration-2", role="generator", model=output)


def test_unknown_targets_and_missing_records_are_clear_errors(tmp_path) -> None:
    config = run_config(str(tmp_path / "runs"))
    with pytest.raises(EndpointError, match="unknown serving target 'docker'"):
        serving.teardown_run(config, target="docker")
    with pytest.raises(EndpointError, match="serve step of this phase has not run"):
        serving.endpoint_for(config, RunLayout(config).server_record("iteration-1", "generator"), "generator")
