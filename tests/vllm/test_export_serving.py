"""The exported model folder is served by vLLM as it is: no adapter, safetensors, tokenizer, config."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from selflengthen.export import export_run
from selflengthen.serving import start_local_server, stop_local_server
from tests.fixtures.vllm_server import vllm_cpu_settings
from tests.test_export import finished  # noqa: F401  (the fixture: a finished tiny run with a LoRA adapter)

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

EXPORTED_NAME = "exported"


def test_the_exported_model_is_served_by_vllm_as_it_is(finished, vllm_python, tmp_path: Path) -> None:  # noqa: F811
    result = export_run(finished, output=str(tmp_path / "out"))
    handle = start_local_server(result.model, EXPORTED_NAME, vllm_cpu_settings(vllm_python), log_file=str(tmp_path / "vllm.log"))
    try:
        models = httpx.get(f"{handle.base_url}/models", timeout=30).json()
        assert [card["id"] for card in models["data"]] == [EXPORTED_NAME]
        body = {"model": EXPORTED_NAME, "messages": [{"role": "user", "content": "Write about rivers."}], "max_tokens": 8}
        reply = httpx.post(f"{handle.base_url}/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] in ("stop", "length") and reply.json()["usage"]["completion_tokens"] > 0
    finally:
        stop_local_server(handle)
