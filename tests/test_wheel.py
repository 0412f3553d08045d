"""The built wheel carries what the CLI needs at run time, so an installed package (and the runtime
image, which installs the package the same way) works with nothing of the repository beside it."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What images/Dockerfile.runtime copies before `pip install .`, plus the other packages of the wheel.
SOURCES = ("pyproject.toml", "README.md", "selflengthen", "components", "pipelines")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its sources (the build writes beside them)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("selflengthen-*.whl")
    return built


def test_the_wheel_holds_the_default_config_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "selflengthen/configs/tiny-local.yaml" in names
    assert "selflengthen/data/benchmarks/longen.jsonl" in names
    assert "selflengthen/training/deepspeed/zero2.json" in names


def test_the_installed_package_finds_and_loads_its_default_config(wheel, tmp_path):
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from selflengthen.config import default_config_path, load_config;"
        "path = default_config_path(); config = load_config(path);"
        "print(json.dumps({'path': str(path), 'run_id': config.run_id, 'iterations': config.iterations}))"
    )
    # run from an empty folder, so nothing of the repository can be found by a relative path
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(loaded["path"]).is_relative_to(target)
    assert Path(loaded["path"]).is_file()
    assert (loaded["run_id"], loaded["iterations"]) == ("tiny-local", 2)
