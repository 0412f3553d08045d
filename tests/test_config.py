import pytest
import yaml

from selflengthen.config import ConfigError, RunConfig, default_config_path, load_config, parse_config

MINIMAL = {"model": {"base": "/models/base"}}


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_reference_defaults():
    config = parse_config(MINIMAL)
    assert config.iterations == 3
    assert config.self_instruct.num_instructions == 5000
    assert config.self_instruct.max_attempts_per_slot == 10
    assert config.generate.samples_per_query == 2 and config.generate.max_retries == 20
    assert config.extend.chains == 2 and config.extend.attempts == 20 and config.extend.rounds == 3 and config.extend.min_ratio == 1.2
    assert config.extend.keep_fraction == pytest.approx(2 / 3)
    assert config.checks.en.ngram_n == 10 and config.checks.zh.ngram_n == 13
    sampling = config.generate.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.repetition_penalty, sampling.max_tokens) == (
        0.7, 0.8, 20, 1.1, 16384,
    )
    assert "---" not in sampling.stop
    assert config.sft_data.line_dropout == 0.2
    training = config.training
    assert (training.method, training.lora.r, training.lora.alpha, training.learning_rate) == ("lora", 8, 16, 1e-4)
    assert (training.epochs, training.lr_scheduler, training.warmup_ratio, training.max_length) == (4, "cosine", 0.1, 16384)
    assert config.length_control.type_probabilities == {"about": 0.4, "range": 0.25, "above": 0.1, "below": 0.25}
    # The reference asks 32768 new tokens of a 32768-token context: 2048 are left for the prompt here.
    assert config.eval.sampling.temperature == 0.5 and config.eval.sampling.max_tokens == 30720
    assert config.eval.sampling.max_tokens < config.serving.cluster.max_model_len


@pytest.mark.parametrize("section", ["generate", "extend", "eval", "self_instruct"])
def test_max_tokens_that_leave_no_room_for_a_prompt_are_refused(tmp_path, section):
    path = write(tmp_path, {**MINIMAL, section: {"sampling": {"max_tokens": 40000}}, "serving": {"cluster": {"max_model_len": 40000}}})
    with pytest.raises(ConfigError, match=rf"{section}\.sampling\.max_tokens \(40000\) must be less than serving\.cluster\.max_model_len \(40000\)"):
        load_config(path)
    load_config(path, {f"{section}.sampling.max_tokens": 39999})


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, {**MINIMAL, "generate": {"samples": 3}})
    with pytest.raises(ConfigError, match=r"generate\.samples: unknown key"):
        load_config(path)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"generate": {"samples_per_query": -1}}, "generate.samples_per_query"),
        ({"self_instruct": {"num_instructions": 0}}, "self_instruct.num_instructions"),
        ({"extend": {"min_ratio": 0.9}}, "extend.min_ratio"),
        ({"generate": {"sampling": {"top_p": 1.5}}}, "generate.sampling.top_p"),
        ({"length_control": {"type_probabilities": {"about": 0.5, "range": 0.1, "above": 0.1, "below": 0.1}}}, "length_control.type_probabilities"),
        ({"self_instruct": {"min_words": 600}}, "self_instruct"),
        ({"languages": ["en", "en"]}, "languages"),
        ({"languages": ["fr"]}, "languages.0"),
        ({"run_id": "Bad_ID"}, "run_id"),
    ],
)
def test_impossible_values_are_named(patch, field):
    with pytest.raises(ConfigError) as error:
        parse_config({**MINIMAL, **patch})
    assert str(error.value).splitlines()[0].startswith(f"invalid configuration in <config>: {field}:")  # the first line names it


def test_missing_required_model():
    with pytest.raises(ConfigError, match="model: Field required"):
        parse_config({})


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"model:\n  base: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    top = write(tmp_path, ["a", "list"], "list.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(top)


def test_overrides_and_hash(tmp_path):
    path = write(tmp_path, MINIMAL)
    base = load_config(path)
    changed = load_config(path, {"training.max_steps": 20, "iterations": 2})
    assert changed.training.max_steps == 20 and changed.iterations == 2
    assert base.config_hash() != changed.config_hash()
    assert base.config_hash() == load_config(path).config_hash()


def test_round_trip_yaml():
    config = parse_config(MINIMAL)
    assert RunConfig.model_validate(yaml.safe_load(config.to_yaml())) == config


def test_packaged_default_is_valid():
    config = load_config(default_config_path())
    assert config.iterations == 2
    assert config.serving.local.host == "127.0.0.1"


def test_reference_recipe_is_one_example_per_step_and_packed_is_the_throughput_option():
    config = parse_config({"model": {"base": "b"}})
    training = config.training
    assert (training.recipe, training.batching, training.batch_size, training.gradient_accumulation_steps) == ("reference", "padded", 1, 1)
    assert training.truncate_overlong and training.lora.dropout == 0.0
    assert parse_config({"model": {"base": "b"}, "training": {"recipe": "packed"}}).training.batching == "packed"
    with pytest.raises(ConfigError, match="recipe reference trains one example per optimizer step"):
        parse_config({"model": {"base": "b"}, "training": {"batching": "packed"}})


KUBEFLOW = {
    "model": {"base": "s3://m/base"},
    "workdir": "s3://runs",
    "storage": {"s3_endpoint": "minio:9000"},
    "execution": {"target": "kubeflow"},
    "serving": {"generator": {"model": "generator"}, "extender": {"model": "extender"}},
}


def test_the_layout_defaults_to_shared_for_lora_on_vllm_and_to_sequential_otherwise():
    assert parse_config(KUBEFLOW).serving.layout == "shared"
    assert parse_config({**KUBEFLOW, "training": {"method": "full"}}).serving.layout == "sequential"
    assert parse_config(MINIMAL).serving.layout == "sequential"  # a local run serves with transformers serve
    local_vllm = {**MINIMAL, "serving": {"generator": {"model": "g"}, "extender": {"model": "e"}, "local": {"backend": "vllm"}}}
    assert parse_config(local_vllm).serving.layout == "shared"
    assert parse_config({**KUBEFLOW, "training": {"method": "full"}, "serving": {**KUBEFLOW["serving"], "layout": "per_role"}}).serving.layout == "per_role"
    # the reference's proposer and judge: the base model
    assert parse_config(MINIMAL).self_instruct.model == "base"
    assert parse_config(MINIMAL).serving.cluster.replicas == 1


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"training": {"method": "full"}}, "serving.layout: shared serves both roles as LoRA adapters"),
        ({"training": {"merge_each_iteration": True}}, "serving.layout: shared serves both roles as LoRA adapters"),
        ({"serving": {"generator": {"model": "same"}, "extender": {"model": "same"}}}, "serving.extender.model: 'same' is also serving.generator.model"),
        ({"serving": {"generator": {"model": "base"}, "extender": {"model": "e"}}}, "serving.generator.model: 'base' is also serving.base_model_name"),
    ],
)
def test_a_shared_layout_it_cannot_serve_is_refused_naming_the_field(patch, message):
    data = {**KUBEFLOW, **patch, "serving": {**KUBEFLOW["serving"], **patch.get("serving", {}), "layout": "shared"}}
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_a_local_run_refuses_a_shared_layout_on_transformers_serve_and_replicas():
    with pytest.raises(ConfigError, match="serving.layout: shared needs a server that loads LoRA adapters by name"):
        parse_config({**MINIMAL, "serving": {"layout": "shared", "generator": {"model": "g"}, "extender": {"model": "e"}}})
    with pytest.raises(ConfigError, match="serving.cluster.replicas: a local run starts one server process"):
        parse_config({**MINIMAL, "serving": {"cluster": {"replicas": 2}}})
    assert parse_config({**KUBEFLOW, "serving": {**KUBEFLOW["serving"], "cluster": {"replicas": 4}}}).serving.cluster.replicas == 4
