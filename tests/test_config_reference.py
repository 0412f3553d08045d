from pathlib import Path

from selflengthen.config import RunConfig
from selflengthen.config_reference import config_reference_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_reference_covers_every_key():
    text = config_reference_markdown()
    assert "| `generate.samples_per_query` | int | `2` |" in text
    assert "| `self_instruct.sampling.temperature` | float | `1.0` |" in text  # section-specific default
    assert "| `model.base` | str | *required* |" in text
    for name in RunConfig.model_fields:
        assert f"`{name}`" in text


def test_docs_file_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == config_reference_markdown(), (
        "docs/configuration.md is stale: run `selflengthen config reference > docs/configuration.md`"
    )
