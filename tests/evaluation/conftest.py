"""A scripted OpenAI-compatible server (FastAPI + uvicorn in a thread on 127.0.0.1, a free port).

The tiny model cannot write valid judge JSON, so the judged-score paths run against this server,
whose answers come from a Python function of the request's messages. ``reply`` returns the answer
text, or raises ``fastapi.HTTPException`` to make the server refuse the request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from selflengthen.config import EndpointConfig

Reply = Callable[[list[dict]], str]


class ScriptedServer:
    def __init__(self, reply: Reply) -> None:
        self.requests: list[dict] = []
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict:
            return {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "test"}]}

        @app.post("/v1/chat/completions")
        def chat(body: dict) -> dict:
            self.requests.append(body)
            text = reply(body["messages"])
            return {
                "id": "scripted",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def endpoint(self) -> EndpointConfig:
        return EndpointConfig(
            base_url=self.base_url, model="scripted", max_concurrency=4, max_retries=1, backoff_initial_s=0.05
        )


@pytest.fixture
def scripted_server() -> Iterator[Callable[[Reply], ScriptedServer]]:
    """``scripted_server(reply)`` starts a server answering with ``reply``; all stop at teardown."""
    servers: list[ScriptedServer] = []

    def start(reply: Reply) -> ScriptedServer:
        servers.append(ScriptedServer(reply).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
