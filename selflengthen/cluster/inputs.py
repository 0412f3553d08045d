"""The inputs a kubeflow run reads from object storage, uploaded from this machine: the base
model folder to ``model.base`` and the benchmark files to ``eval.benchmark_files`` (a given file,
else the copy packaged with selflengthen). ``selflengthen doctor`` then finds them."""

from __future__ import annotations

import json
from pathlib import Path

from selflengthen.config import ConfigError, RunConfig
from selflengthen.evaluation.benchmarks import load_benchmark, packaged_benchmark
from selflengthen.storage import Storage, is_s3_uri


def upload_model(config: RunConfig, storage: Storage, model_dir: Path) -> list[str]:
    """Copy the model folder ``model_dir`` (checked first: config.json with a model_type, weights)
    below ``model.base``; the URIs written."""
    if not is_s3_uri(config.model.base):
        raise ConfigError(f"model.base {config.model.base!r} is not an s3:// URI: nothing to upload it to")
    config_file = model_dir / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"--model-dir {model_dir}: no readable config.json ({error})") from None
    if not model_type or not [*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")]:
        raise ConfigError(f"--model-dir {model_dir}: not a model folder (config.json with model_type, and *.safetensors or *.bin)")
    return storage.upload_dir(model_dir, config.model.base)


def upload_benchmarks(config: RunConfig, storage: Storage, files: dict[str, Path]) -> list[str]:
    """Copy each benchmark of ``eval.benchmarks`` with an s3:// entry in ``eval.benchmark_files``
    there: ``files[name]`` when given (parsed first), else the packaged copy; the URIs written."""
    unknown = sorted(set(files) - set(config.eval.benchmarks))
    if unknown:
        raise ConfigError(f"--benchmark {unknown[0]}: not in eval.benchmarks {config.eval.benchmarks}")
    written = []
    for benchmark in config.eval.benchmarks:
        target = config.eval.benchmark_files.get(benchmark)
        if not target or not is_s3_uri(target):
            continue
        source = str(files.get(benchmark) or packaged_benchmark(benchmark))
        load_benchmark(storage, benchmark, source)  # refuse a file that is not that benchmark
        storage.put_file(source, target)
        written.append(target)
    return written
