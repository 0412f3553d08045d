"""Base models named by hub id (``hf://<owner>/<repo>[@revision]``), read from a prepared hub cache
with HF_HUB_OFFLINE=1 through the real loading code: the prepare step, the tokenizer loader."""

import json
import shutil
from pathlib import Path

import pytest

from selflengthen.errors import DataError
from selflengthen.modelio import load_tokenizer, localize
from selflengthen.orchestration import steps
from selflengthen.orchestration.layout import RunLayout
from tests.orchestration.helpers import run_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, untrained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny model as ``selflengthen/tiny`` at COMMIT (branch main) in a hub cache, offline.

    The cache layout huggingface_hub documents (guides/manage-cache): models--<owner>--<name>/
    refs/<branch> holding the commit, snapshots/<commit>/<files>."""
    cache = tmp_path / "hub"
    repo = cache / "models--selflengthen--tiny"
    shutil.copytree(untrained_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return repo / "snapshots" / COMMIT


def test_prepare_pins_the_revision_and_every_loader_reads_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    config = run_config(str(tmp_path / "runs"), model={"base": "hf://selflengthen/tiny"})
    base = steps.prepare(config.to_json(), iterations=config.iterations)
    assert Path(base) == hub_cache
    record = json.loads(Path(RunLayout(config).base_model_record()).read_text())
    assert record == {"id": "selflengthen/tiny", "revision": None, "commit": COMMIT, "uri": str(hub_cache)}
    assert localize(f"hf://selflengthen/tiny@{COMMIT}", config.storage) == hub_cache
    tokenizer = load_tokenizer("hf://selflengthen/tiny", config.storage)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).count("hi") == 1


def test_a_model_missing_offline_names_the_id_and_how_to_provide_it(tmp_path: Path, hub_cache: Path) -> None:
    config = run_config(str(tmp_path / "runs"), model={"base": "hf://someone/absent@v2"})
    with pytest.raises(DataError, match=r"model hf://someone/absent@v2: not in the Hugging Face cache .*hf download someone/absent --revision v2.*local folder or an s3:// folder"):
        steps.prepare(config.to_json(), iterations=config.iterations)
    assert not Path(RunLayout(config).base_model_record()).exists()
    with pytest.raises(DataError, match="expected hf://<owner>/<repo>"):
        localize("hf://no-owner", config.storage)
