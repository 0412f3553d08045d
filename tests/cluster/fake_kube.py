"""A scripted Kubernetes API behind a real ``kubernetes.client.ApiClient``.

No API server runs here. The client is the real one (its API classes, ``ApiClient.call_api``,
serialisation, ``RESTClientObject`` raising ``ApiException`` for non-2xx answers); only the
urllib3 pool manager at the bottom of ``call_api`` is replaced by :class:`FakeKubeAPI`, which
records every request (method, path, query, JSON body) and answers with the next scripted
response. A request the script does not expect fails the test at once.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import urllib3
from kubernetes import client as k8s

Payload = dict[str, Any] | Callable[["Request"], dict[str, Any]] | None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Reply:
    method: str
    path: str
    code: int = 200
    payload: Payload = None
    error: Exception | None = None


def status(code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A ``Status`` object as the API server sends with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if causes:
        body["details"] = {"causes": causes}
    return body


def echo(**metadata: Any) -> Callable[[Request], dict[str, Any]]:
    """A response that returns the request's body with extra metadata (uid, generation...)."""

    def reply(request: Request) -> dict[str, Any]:
        body = json.loads(json.dumps(request.body))
        body.setdefault("metadata", {}).update(metadata)
        return body

    return reply


class FakeKubeAPI:
    """Stands in for urllib3's PoolManager under ``api_client``; script it with :meth:`reply`."""

    host = "https://kube.test"

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: deque[_Reply] = deque()
        self.api_client = k8s.ApiClient(k8s.Configuration(host=self.host))
        self.api_client.rest_client.pool_manager = self

    def reply(self, method: str, path: str, code: int = 200, payload: Payload = None) -> "FakeKubeAPI":
        """Expect ``method path`` next and answer it with ``code`` and ``payload`` (JSON)."""
        self._script.append(_Reply(method, path, code, payload))
        return self

    def fail(self, method: str, path: str, error: Exception) -> "FakeKubeAPI":
        """Expect ``method path`` next and answer it by raising ``error`` (a transport failure)."""
        self._script.append(_Reply(method, path, error=error))
        return self

    def request(
        self, method: str, url: str, fields: Any = None, body: str | None = None, **_: Any
    ) -> urllib3.HTTPResponse:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query.update(dict(fields or []))
        request = Request(method, parts.path, query, json.loads(body) if body else None)
        self.requests.append(request)
        if not self._script:
            raise AssertionError(f"unexpected request: {method} {parts.path}")
        expected = self._script.popleft()
        assert (method, parts.path) == (expected.method, expected.path), (
            f"expected {expected.method} {expected.path}, got {method} {parts.path}"
        )
        if expected.error is not None:
            raise expected.error
        payload = expected.payload(request) if callable(expected.payload) else expected.payload
        return urllib3.HTTPResponse(
            body=json.dumps(payload if payload is not None else {}).encode(),
            status=expected.code,
            reason={200: "OK", 201: "Created"}.get(expected.code, "Error"),
            headers={"Content-Type": "application/json"},
            preload_content=True,
        )

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(request.method, request.path) for request in self.requests]

    def assert_done(self) -> None:
        assert not self._script, f"scripted requests never made: {[(r.method, r.path) for r in self._script]}"


class VirtualClock:
    """``time.monotonic`` and ``time.sleep`` where sleeping only advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
