"""The model server's init container: copying model folders from storage into the pod."""

from __future__ import annotations

import pytest

from selflengthen.cluster.fetch import main


@pytest.fixture
def model_folder(tmp_path):
    source = tmp_path / "store" / "models" / "base"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(b"\x00" * 10)
    return source


def test_every_folder_is_copied_with_its_layout(model_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SELFLENGTHEN_STORAGE_CONFIG", "{}")
    target = tmp_path / "pod" / "models" / "base"
    assert main([f"{model_folder}={target}"]) == 0
    assert (target / "config.json").read_text() == "{}"
    assert (target / "sub" / "weights.bin").read_bytes() == b"\x00" * 10
    assert "fetched 2 files" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        ([], "{}", "usage:"),
        (["no-separator"], "{}", "expected URI=FOLDER"),
        (["s3://bucket/models/base=/models/base"], "{}", "needs an S3 endpoint"),
        (
            ["s3://bucket/models/base=/models/base"],
            '{"s3_endpoint": 5, "bogus": 1}',
            "not a valid storage configuration",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(arguments, environment, message, monkeypatch, capsys):
    monkeypatch.setenv("SELFLENGTHEN_STORAGE_CONFIG", environment)
    assert main(arguments) == 1
    assert message in capsys.readouterr().err


def test_an_empty_source_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SELFLENGTHEN_STORAGE_CONFIG", raising=False)
    (tmp_path / "empty").mkdir()
    assert main([f"{tmp_path / 'empty'}={tmp_path / 'target'}"]) == 1
    assert "nothing to download" in capsys.readouterr().err
