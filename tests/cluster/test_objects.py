"""Names, API error messages and the placement settings shared by the cluster steps."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from selflengthen.cluster.objects import describe_api_error, is_transient, model_source, object_name
from selflengthen.config import ClusterServerConfig, ConfigError, parse_config
from selflengthen.errors import EndpointError


def test_names_are_dns_labels_made_unique_by_a_hash_when_shortened():
    assert object_name("demo", "generator", 3) == "sl-demo-generator-it3"
    long = object_name("x" * 63, "generator", 3, max_length=40)
    assert (
        len(long) == 40 and long.startswith("sl-xxx") and long != object_name("x" * 63, "generator", 4, max_length=40)
    )


@pytest.mark.parametrize(
    ("uri", "source"),
    [("s3://models/base", "s3"), ("Qwen/Qwen2.5-7B-Instruct", "hub"), ("gpt2", "hub")],
)
def test_model_sources(uri, source):
    assert model_source(uri, EndpointError) == source


@pytest.mark.parametrize("uri", ["/models/base", "./base", "../base", "~/base", "file:///base", "C:\\models", ""])
def test_local_paths_are_not_model_sources(uri):
    with pytest.raises(EndpointError, match="s3:// URI"):
        model_source(uri, EndpointError)


def test_an_error_without_a_status_body_still_reads_well():
    error = ApiException(status=500, reason="Internal Server Error")
    assert describe_api_error(error, "creating X") == (
        "creating X: HTTP 500 - the API server failed. Server said: Internal Server Error"
    )
    assert is_transient(error) and not is_transient(ApiException(status=403))


def test_tolerations_are_checked_by_the_config():
    with pytest.raises(ConfigError, match=r"serving.cluster.tolerations: .*unknown key\(s\) \['tolerationSecond'\]"):
        parse_config(
            {"model": {"base": "m"}, "serving": {"cluster": {"tolerations": [{"key": "a", "tolerationSecond": 5}]}}}
        )
    with pytest.raises(ConfigError, match="trainjob.tolerations: .*operator must be Equal or Exists"):
        parse_config({"model": {"base": "m"}, "trainjob": {"tolerations": [{"key": "a", "operator": "In"}]}})


def test_impossible_serving_placements_are_refused():
    with pytest.raises(ValueError, match=r"tensor_parallel_size \(4\) must not exceed gpus \(2\)"):
        ClusterServerConfig(gpus=2, tensor_parallel_size=4)
    with pytest.raises(ValueError, match="memory"):
        ClusterServerConfig(memory="64GB")
    assert ClusterServerConfig(gpus=0, tensor_parallel_size=1).gpus == 0
