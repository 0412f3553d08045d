"""Fixtures of the cluster tests: a scripted API behind the real client, a virtual clock, a config."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from selflengthen.cluster import objects, ownership, pods
from selflengthen.config import RunConfig, apply_override, parse_config
from tests.cluster.fake_kube import FakeKubeAPI, VirtualClock

NAMESPACE = "ns1"
# The wall clock leases are computed from (a built object and the one a step sends are equal).
WALL_CLOCK = 1_800_000_000.0


def cluster_config(**overrides: Any) -> RunConfig:
    """A run configured for the cluster; ``overrides`` are dotted keys with "__" for ".": serving__cluster__gpus=2."""
    data: dict[str, Any] = {
        "run_id": "demo",
        "workdir": "s3://runs/demo",
        "model": {"base": "s3://models/base"},
        "storage": {"s3_endpoint": "minio.ns1.svc:9000", "s3_secure": False},
        "serving": {"generator": {"model": "gen"}, "extender": {"model": "ext"}, "cluster": {"ready_timeout_s": 10}},
        "trainjob": {"timeout_s": 60, "gpus_per_node": 4, "num_nodes": 2},
        "execution": {"target": "kubeflow", "training": "trainjob"},
        "pipeline": {"namespace": NAMESPACE},
    }
    for key, value in overrides.items():
        apply_override(data, key.replace("__", "."), value)
    return parse_config(data)


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    yield api
    api.assert_done()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Polling loops run on virtual time: sleeping advances the clock and takes no time."""
    virtual = VirtualClock()
    monkeypatch.setattr(objects, "time", virtual)
    monkeypatch.setattr(pods, "time", virtual)
    return virtual


@pytest.fixture(autouse=True)
def _no_pipeline_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide whether a pipeline pod is known (env POD_NAME / POD_UID / POD_NAMESPACE)."""
    for name in ("POD_NAME", "POD_UID", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _fixed_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership, "time", SimpleNamespace(time=lambda: WALL_CLOCK))
