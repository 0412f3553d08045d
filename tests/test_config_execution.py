"""The execution section: local or kubeflow decided once, a config mixing them refused naming the field."""

import pytest

from selflengthen.config import ConfigError, parse_config

KUBEFLOW = {
    "workdir": "s3://runs/x",
    "model": {"base": "s3://models/base"},
    "storage": {"s3_endpoint": "minio:9000"},
    "execution": {"target": "kubeflow"},
}




@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**KUBEFLOW, "workdir": "runs/local"}, "workdir"),
        ({**KUBEFLOW, "model": {"base": "/models/base"}}, "model.base"),
        ({**KUBEFLOW, "eval": {"benchmark_files": {"longen": "./longen.jsonl"}}}, "eval.benchmark_files.longen"),
        ({**KUBEFLOW, "self_instruct": {"seeds_uri": "seeds.jsonl"}}, "self_instruct.seeds_uri"),
        ({**KUBEFLOW, "storage": {}}, "storage.s3_endpoint"),
        ({**KUBEFLOW, "export": {"enabled": True, "hub_repo": "me/long"}}, "export.hub_repo"),
        ({"model": {"base": "/models/base"}, "execution": {"training": "trainjob"}}, "execution.training"),
        ({"model": {"base": "/models/base"}, "execution": {"model_cache_pvc": "models"}}, "execution.model_cache_pvc"),
    ],
)
def test_a_config_mixing_execution_targets_is_refused_naming_the_field(data, field) -> None:
    with pytest.raises(ConfigError, match=rf"{field.replace('.', '[.]')}: "):
        parse_config(data)


def test_consistent_configs_load() -> None:
    assert parse_config(KUBEFLOW).execution.training == "inline"
    assert parse_config({**KUBEFLOW, "model": {"base": "hf://Qwen/Qwen2.5-7B-Instruct"}, "execution": {"target": "kubeflow", "training": "trainjob"}})
    assert parse_config({"model": {"base": "/models/base"}}).execution.target == "local"
    assert parse_config({**KUBEFLOW, "export": {"enabled": True, "hub_repo": "me/long"}, "serving": {"cluster": {"hf_token_secret": "hf"}}})
