"""Local model servers: command lines (unit) and real ``transformers serve`` processes (integration)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from selflengthen.config import LocalServerConfig
from selflengthen.errors import EndpointError
from selflengthen.serving import ServerHandle, read_state, start_local_server, stop_local_server
from selflengthen.serving.local import server_command, write_state

TRANSFORMERS = LocalServerConfig(backend="transformers", startup_timeout_s=180)


def assert_gone(handle: ServerHandle) -> None:
    """The process is gone and its port can be bound again."""
    with pytest.raises(ProcessLookupError):
        os.kill(handle.pid, 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", handle.port))


# --------------------------------------------------------------------------- unit


def test_vllm_command_line():
    config = LocalServerConfig(backend="vllm", vllm_python="/opt/vllm/bin/python", extra_args=["--max-model-len", "4096"])
    command, model = server_command("/models/gen", "generator", config, 8123)
    assert command == [
        "/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/gen", "--served-model-name", "generator",
        "--host", "127.0.0.1", "--port", "8123",
        "--max-model-len", "4096",
    ]  # fmt: skip
    assert model == "generator"


def test_vllm_needs_its_python():
    with pytest.raises(EndpointError, match=r"serving\.local\.vllm_python"):
        server_command("/models/gen", "generator", LocalServerConfig(backend="vllm"), 8123)


def test_transformers_command_line_pins_the_model_folder():
    command, model = server_command("/models/gen", "generator", TRANSFORMERS, 8123)
    assert command[:5] == [sys.executable, "-m", "transformers.cli.transformers", "serve", "/models/gen"]
    assert command[5:] == ["--host", "127.0.0.1", "--port", "8123", "--no-trust-remote-code"]
    assert model == "/models/gen"


def test_transformers_cannot_serve_a_path_with_an_at_sign():
    with pytest.raises(EndpointError, match="'@'"):
        server_command("/models/gen@2", "generator", TRANSFORMERS, 8123)


def test_a_folder_without_a_model_is_refused_before_starting(tmp_path):
    with pytest.raises(EndpointError, match="no config.json"):
        start_local_server(str(tmp_path), "tiny", TRANSFORMERS)


def test_stop_is_idempotent_on_state_files(tmp_path):
    stop_local_server(tmp_path / "never-written.json")
    stale = tmp_path / "stale.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_state(ServerHandle(pid=dead.pid, port=1, base_url="http://127.0.0.1:1/v1", model="m"), stale)
    stop_local_server(stale)
    assert not stale.exists()


def test_unreadable_state_file(tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(EndpointError, match="state file"):
        read_state(state)


# --------------------------------------------------------------------------- processes that never serve


def test_server_dying_during_start_up_reports_its_log(tmp_path):
    # The project's own python has no vllm: the server process exits at once, as a misconfigured
    # serving.local.vllm_python would make it.
    no_vllm = LocalServerConfig(backend="vllm", vllm_python=sys.executable)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    log = tmp_path / "server.log"
    with pytest.raises(EndpointError, match="exited with code 1 during start-up") as raised:
        start_local_server(str(tmp_path), "tiny", no_vllm, log_file=str(log))
    assert "No module named 'vllm'" in log.read_text()
    assert log.read_text().strip().splitlines()[-1] in str(raised.value)


def test_start_up_timeout_stops_the_server(tmp_path):
    # transformers serve takes seconds to import: far more than this timeout.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    impatient = LocalServerConfig(startup_timeout_s=0.5)
    with pytest.raises(EndpointError, match="did not answer") as raised:
        start_local_server(str(tmp_path), "tiny", impatient, log_file=str(tmp_path / "server.log"))
    pid = int(re.search(r"pid (\d+)", str(raised.value)).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------- real servers


@pytest.mark.integration
def test_start_and_stop_by_handle(served_model_dir, tmp_path):
    handle = start_local_server(str(served_model_dir), "tiny", TRANSFORMERS, log_file=str(tmp_path / "server.log"))
    models = httpx.get(f"{handle.base_url}/models", timeout=5)
    assert models.status_code == 200
    assert handle.base_url == f"http://127.0.0.1:{handle.port}/v1"
    assert os.getpgid(handle.pid) == handle.pid  # its own process group
    stop_local_server(handle)
    assert_gone(handle)
    stop_local_server(handle)


@pytest.mark.integration
def test_server_outlives_its_starter_and_is_stopped_through_the_state_file(served_model_dir, tmp_path):
    state = tmp_path / "state" / "server.json"
    starter = textwrap.dedent(
        f"""
        from selflengthen.config import LocalServerConfig
        from selflengthen.serving import start_local_server
        start_local_server({str(served_model_dir)!r}, "tiny", LocalServerConfig(startup_timeout_s=180),
                           state_file={str(state)!r}, log_file={str(tmp_path / "server.log")!r})
        """
    )
    subprocess.run([sys.executable, "-c", starter], check=True, timeout=240)
    handle = read_state(state)
    assert json.loads(state.read_text()) == {
        "pid": handle.pid,
        "port": handle.port,
        "base_url": handle.base_url,
        "model": str(Path(served_model_dir).resolve()),
    }
    chat = httpx.post(
        f"{handle.base_url}/chat/completions",
        json={"model": handle.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert chat.status_code == 200
    stop_local_server(state)
    assert not state.exists()
    assert_gone(handle)
    stop_local_server(state)
