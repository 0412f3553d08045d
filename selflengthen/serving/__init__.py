"""Bringing model servers up and down (docs/architecture.md, principle 6); the local backend is ``local``."""

from selflengthen.serving.local import ServerHandle, read_state, start_local_server, stop_local_server

__all__ = ["ServerHandle", "read_state", "start_local_server", "stop_local_server"]
