"""GenerationClient against a scripted HTTP server (unit) and against ``transformers serve`` (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from selflengthen.client import Completion, GenerationClient, seeded
from selflengthen.config import EndpointConfig, SamplingConfig
from selflengthen.errors import EndpointError, RequestRefused
from selflengthen.serving.local import free_port
from tests.fixtures.http_json import send_json

SAMPLING = SamplingConfig(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1, max_tokens=32, seed=7)
MESSAGES = [{"role": "user", "content": "Write about the sea."}]
QWEN_STYLE_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# --------------------------------------------------------------------------- the scripted server

Reply = Callable[[BaseHTTPRequestHandler, dict], None]  # (handler, request body)


def answer(*texts: str, finish_reason: str = "stop", tokens: int = 3) -> Reply:
    """An OpenAI-shaped success with one choice per text, for whichever endpoint was called."""

    def send(handler: BaseHTTPRequestHandler, body: dict) -> None:
        if handler.path.endswith("/chat/completions"):
            choices = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish_reason}
                for i, t in enumerate(texts)
            ]
            kind = "chat.completion"
        else:
            choices = [{"index": i, "text": t, "finish_reason": finish_reason} for i, t in enumerate(texts)]
            kind = "text_completion"
        usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
        send_json(handler, 200, {"id": "x", "object": kind, "created": 0, "model": "m", "choices": choices, "usage": usage})

    return send


def error(status: int, body: dict) -> Reply:
    return lambda handler, _: send_json(handler, status, body)


def drop() -> Reply:
    """Close the connection without answering."""

    def send(handler: BaseHTTPRequestHandler, body: dict) -> None:
        handler.close_connection = True

    return send


def slow(seconds: float, reply: Reply) -> Reply:
    def send(handler: BaseHTTPRequestHandler, body: dict) -> None:
        time.sleep(seconds)
        reply(handler, body)

    return send


def reject_extensions(reply: Reply) -> Reply:
    """Like transformers serve: a 422 naming the sampling fields outside the OpenAI schema, if any."""

    def send(handler: BaseHTTPRequestHandler, body: dict) -> None:
        unexpected = {"top_k", "repetition_penalty"} & body.keys()
        if unexpected:
            send_json(handler, 422, {"detail": f"Unexpected fields in the request: {unexpected}"})
        else:
            reply(handler, body)

    return send



class ScriptedServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1: each POST gets the next scripted reply (``answer("ok")`` when
    the script is empty); every request is recorded, and the most requests in flight at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script: deque[Reply] = deque()
        self.default: Reply = answer("ok")
        self.requests: list[dict] = []
        self.models: list[dict] = []  # the cards GET /v1/models lists
        self.tokenize: Reply | None = None  # POST /tokenize (at the root, as vLLM has it); 404 when None
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def endpoint(self, **overrides: object) -> EndpointConfig:
        values: dict[str, object] = {
            "base_url": self.base_url,
            "model": "scripted",
            "max_retries": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.02,
            "request_timeout_s": 5.0,
        }
        return EndpointConfig(**{**values, **overrides})

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: writing to a connection the client gave up on (timeouts) is expected here."""

    def serve_post(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        with self._lock:
            self.requests.append({"path": handler.path, "headers": handler.headers, "body": body})
            if handler.path == "/tokenize":
                reply = self.tokenize or error(404, {"detail": "Not Found"})
            else:
                reply = self.script.popleft() if self.script else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        # A request is in flight until its answer starts: once the answer is written, the client
        # may read it and send its next request before this thread would count the first one done.
        answered = threading.Event()
        send_response = handler.send_response

        def answer_starts(*args: object) -> None:
            if not answered.is_set():
                answered.set()
                with self._lock:
                    self.in_flight -= 1
            send_response(*args)

        handler.send_response = answer_starts  # type: ignore[method-assign]
        try:
            reply(handler, body)
        finally:
            if not answered.is_set():
                with self._lock:
                    self.in_flight -= 1


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.serve_post(self, body)

    def do_GET(self) -> None:
        send_json(self, 200, {"object": "list", "data": self.server.models})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()


class _HtmlHandler(BaseHTTPRequestHandler):
    """A web page with status 200 for every request: not a model server."""

    def _page(self) -> None:
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def html_server():
    """The base URL of a real HTTP server on 127.0.0.1 that answers HTML to everything."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def bodies(server: ScriptedServer, path: str | None = None) -> list[dict]:
    return [request["body"] for request in server.requests if path is None or request["path"] == path]


# --------------------------------------------------------------------------- retries and errors


async def test_429_is_retried(server):
    server.script.extend([error(429, {"error": {"message": "slow down"}}), answer("hello")])
    async with GenerationClient(server.endpoint()) as client:
        assert await client.chat(MESSAGES, SAMPLING) == [Completion("hello", "stop", 3)]
    assert len(server.requests) == 2


async def test_5xx_until_retries_run_out(server):
    server.script.extend([error(503, {"error": {"message": "engine overloaded"}})] * 3)
    async with GenerationClient(server.endpoint(max_retries=2)) as client:
        with pytest.raises(EndpointError, match="engine overloaded") as raised:
            await client.chat(MESSAGES, SAMPLING)
    assert server.base_url in str(raised.value)
    assert "3 attempts" in str(raised.value)
    assert len(server.requests) == 3


async def test_other_4xx_fails_at_once_with_the_servers_message(server):
    server.script.append(error(400, {"error": {"message": "maximum context length is 2048 tokens"}}))
    async with GenerationClient(server.endpoint()) as client:
        with pytest.raises(EndpointError, match="maximum context length is 2048 tokens"):
            await client.complete("prompt", SAMPLING)
    assert len(server.requests) == 1


async def test_a_refusal_is_the_requests_own_with_its_reason(server):
    overflow = (
        "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
        "(2068 in the messages, 32 in the completion). Please reduce the length of the messages or completion."
    )
    server.script.extend([
        error(400, {"object": "error", "message": overflow, "type": "BadRequestError", "code": 400}),
        error(422, {"detail": "messages: field required"}),
    ])  # fmt: skip
    async with GenerationClient(server.endpoint()) as client:
        with pytest.raises(RequestRefused) as too_long:
            await client.chat(MESSAGES, SAMPLING)
        with pytest.raises(RequestRefused) as refused:
            await client.chat(MESSAGES, SAMPLING)
    assert (too_long.value.reason, refused.value.reason) == ("prompt_too_long", "refused")
    assert "maximum context length is 2048" in str(too_long.value) and server.base_url in str(too_long.value)
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refusal_that_says_the_endpoint_is_wrong_fails_the_caller(server, status):
    server.script.append(error(status, {"error": {"message": "no such model or key"}}))
    async with GenerationClient(server.endpoint()) as client:
        with pytest.raises(EndpointError, match="no such model or key") as raised:
            await client.chat(MESSAGES, SAMPLING)
    assert not isinstance(raised.value, RequestRefused)


def _count_words(handler: BaseHTTPRequestHandler, body: dict) -> None:
    """vLLM's /tokenize answer, counting one token per word of the messages plus 3 per message."""
    if "messages" in body:
        count = sum(len(m["content"].split()) + 3 for m in body["messages"])
    else:
        count = len(body["prompt"].split())
    send_json(handler, 200, {"count": count, "max_model_len": 64, "tokens": list(range(count))})


async def test_max_tokens_is_capped_to_the_context_the_prompt_leaves(server):
    server.models = [{"id": "scripted", "object": "model", "max_model_len": 64}, {"id": "other", "max_model_len": 9}]
    server.tokenize = _count_words
    long_prompt = " ".join(["word"] * 50)
    sampling = SAMPLING.model_copy(update={"max_tokens": 32})
    async with GenerationClient(server.endpoint()) as client:
        await client.chat(MESSAGES, sampling)  # 4 words + 3: 32 fit
        await client.complete(long_prompt, sampling)  # 50: 14 left
        await client.complete(long_prompt, sampling, n=1)  # counted once
        with pytest.raises(RequestRefused, match="prompt of 64 tokens leaves no room") as raised:
            await client.complete(" ".join(["word"] * 64), sampling)
        await client.continue_chat(MESSAGES, "The sea", sampling)
    assert raised.value.reason == "prompt_too_long"
    sent = bodies(server, "/v1/chat/completions") + bodies(server, "/v1/completions")
    assert sorted(body["max_tokens"] for body in sent) == [14, 14, 32, 32]
    counted = bodies(server, "/tokenize")
    assert len(counted) == 4  # one per distinct prompt; the refused one never reached a completion endpoint
    assert counted[-1]["continue_final_message"] is True and counted[-1]["add_generation_prompt"] is False
    assert all(body["model"] == "scripted" for body in counted)


async def test_an_adapter_takes_the_context_of_the_base_model_its_card_names(server):
    # vLLM's card of a LoRA adapter: max_model_len null, parent the base model's id.
    server.models = [{"id": "base", "max_model_len": 64}, {"id": "scripted", "parent": "base", "max_model_len": None}]
    server.tokenize = _count_words
    async with GenerationClient(server.endpoint()) as client:
        await client.complete(" ".join(["word"] * 50), SAMPLING.model_copy(update={"max_tokens": 32}))
    assert bodies(server, "/v1/completions")[0]["max_tokens"] == 14


async def test_fit_context_off_sends_the_prompt_as_configured(server):
    server.models = [{"id": "scripted", "max_model_len": 64}]
    server.tokenize = _count_words
    endpoint = server.endpoint().model_copy(update={"fit_context": False})
    async with GenerationClient(endpoint) as client:
        await client.complete(" ".join(["word"] * 100), SAMPLING)
    assert bodies(server, "/v1/completions")[0]["max_tokens"] == 32
    assert bodies(server, "/tokenize") == []


async def test_no_cap_when_the_server_reports_no_context_length(server):
    server.tokenize = _count_words
    async with GenerationClient(server.endpoint()) as client:
        await client.complete(" ".join(["word"] * 500), SAMPLING)
    assert bodies(server, "/v1/completions")[0]["max_tokens"] == 32
    assert bodies(server, "/tokenize") == []


async def test_the_tokenizer_counts_and_bounds_the_prompt_without_the_server(server):
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        unk_token="<unk>",
        chat_template=QWEN_STYLE_TEMPLATE,
        model_max_length=40,
    )
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    async with GenerationClient(server.endpoint(), tokenizer=tokenizer) as client:
        await client.complete("one two three four five", SAMPLING)
        with pytest.raises(RequestRefused, match="leaves no room"):
            await client.chat([{"role": "user", "content": " ".join(["word"] * 40)}], SAMPLING)
    (sent,) = bodies(server)
    assert sent["max_tokens"] == 32 and bodies(server, "/tokenize") == []
    server.requests.clear()
    async with GenerationClient(server.endpoint(), tokenizer=tokenizer) as client:
        await client.complete(" ".join(["word"] * 20), SAMPLING)
    assert bodies(server)[0]["max_tokens"] == 20


async def test_an_answer_that_is_not_an_openai_response_names_the_server(html_server):
    async with GenerationClient(EndpointConfig(base_url=html_server, max_retries=0)) as client:
        with pytest.raises(EndpointError, match="not an OpenAI response") as health:
            await client.check_health()
        with pytest.raises(EndpointError, match="not an OpenAI response") as raised:
            await client.chat(MESSAGES, SAMPLING)
    assert html_server in str(health.value) and html_server in str(raised.value) and "<html>" in str(raised.value)


async def test_dropped_connection_is_retried(server):
    server.script.extend([drop(), answer("after the drop")])
    async with GenerationClient(server.endpoint()) as client:
        completions = await client.complete("prompt", SAMPLING)
    assert [c.text for c in completions] == ["after the drop"]
    assert len(server.requests) == 2


async def test_timeout_is_retried(server):
    server.script.extend([slow(2.0, answer("too late")), answer("in time")])
    async with GenerationClient(server.endpoint(request_timeout_s=0.3)) as client:
        completions = await client.chat(MESSAGES, SAMPLING)
    assert [c.text for c in completions] == ["in time"]
    assert len(server.requests) == 2


async def test_sampling_extensions_the_server_rejects_are_learned_once(server, caplog):
    server.default = reject_extensions(answer("ok"))
    async with GenerationClient(server.endpoint(max_retries=0, max_concurrency=8)) as client:
        first = await asyncio.gather(*(client.chat(MESSAGES, SAMPLING) for _ in range(8)))
        later = await client.chat(MESSAGES, SAMPLING)
    assert [c.text for c in [*(c for batch in first for c in batch), *later]] == ["ok"] * 9
    sent = bodies(server)
    assert len(sent) == 10  # the first request rejected once, then nine answered
    assert sum("top_k" in body for body in sent) == 1 and "top_k" in sent[0]
    assert caplog.text.count("does not accept repetition_penalty, top_k") == 1


async def test_sampling_extensions_a_server_takes_are_kept(server):
    async with GenerationClient(server.endpoint(max_concurrency=4)) as client:
        await asyncio.gather(*(client.chat(MESSAGES, SAMPLING) for _ in range(4)))
    assert [body["top_k"] for body in bodies(server)] == [20] * 4


async def test_missing_base_url_names_the_config_field():
    with pytest.raises(EndpointError, match=r"serving\.extender\.base_url"):
        GenerationClient(EndpointConfig(base_url=None), role="extender")


async def test_check_health_on_a_dead_port_fails_quickly():
    endpoint = EndpointConfig(base_url=f"http://127.0.0.1:{free_port('127.0.0.1')}/v1", max_retries=5)
    started = time.monotonic()
    async with GenerationClient(endpoint) as client:
        with pytest.raises(EndpointError, match="cannot reach model server at http://127.0.0.1"):
            await client.check_health()
    assert time.monotonic() - started < 3


async def test_check_health_of_a_live_server(server):
    async with GenerationClient(server.endpoint()) as client:
        await client.check_health()


async def test_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("TEST_MODEL_KEY", "s3cret")
    async with GenerationClient(server.endpoint(api_key_env="TEST_MODEL_KEY")) as client:
        await client.chat(MESSAGES, SAMPLING)
    monkeypatch.delenv("TEST_MODEL_KEY")
    async with GenerationClient(server.endpoint(api_key_env="TEST_MODEL_KEY")) as client:
        await client.chat(MESSAGES, SAMPLING)
    assert [r["headers"]["Authorization"] for r in server.requests] == ["Bearer s3cret", "Bearer EMPTY"]


# --------------------------------------------------------------------------- what is sent and returned


async def test_sampling_parameters_are_sent(server):
    sampling = SAMPLING.model_copy(update={"stop": ["\n\n\n"]})
    async with GenerationClient(server.endpoint()) as client:
        await client.chat(MESSAGES, sampling)
        await client.complete("prompt", sampling.model_copy(update={"top_k": -1, "seed": None}))
    chat, completion = bodies(server)
    assert chat == {
        "model": "scripted",
        "messages": MESSAGES,
        "temperature": 0.7,
        "top_p": 0.8,
        "max_tokens": 32,
        "seed": 7,
        "stop": ["\n\n\n"],
        "top_k": 20,
        "repetition_penalty": 1.1,
    }
    assert "top_k" not in completion and "seed" not in completion and "n" not in completion
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions", "/v1/completions"]


async def test_stop_strings_are_enforced_client_side(server):
    server.script.extend([answer("Instruction 3: a poem\nInstruction 4: more", finish_reason="length"), answer("clean")])
    sampling = SAMPLING.model_copy(update={"stop": ["Instruction 4", "\nInstruction"]})
    async with GenerationClient(server.endpoint()) as client:
        cut = await client.complete("Instruction 1: ...", sampling)
        clean = await client.complete("Instruction 1: ...", sampling)
    assert cut == [Completion("Instruction 3: a poem", "stop", 3)]
    assert clean == [Completion("clean", "stop", 3)]


async def test_length_finish_reason_is_passed_through(server):
    server.script.append(answer("a truncated", finish_reason="length", tokens=32))
    async with GenerationClient(server.endpoint()) as client:
        assert await client.chat(MESSAGES, SAMPLING) == [Completion("a truncated", "length", 32)]


async def test_n_by_separate_requests_when_the_server_does_not_support_it(server):
    server.script.extend([answer("a"), answer("b"), answer("c")])
    async with GenerationClient(server.endpoint(server_supports_n=False)) as client:
        completions = await client.chat(MESSAGES, SAMPLING, n=3)
    assert sorted(c.text for c in completions) == ["a", "b", "c"]
    assert all("n" not in body for body in bodies(server))
    assert sorted(body["seed"] for body in bodies(server)) == [7, 8, 9]


async def test_n_topped_up_when_the_server_ignores_it(server):
    server.script.extend([answer("a"), answer("b"), answer("c")])
    async with GenerationClient(server.endpoint(server_supports_n=True)) as client:
        completions = await client.complete("prompt", SAMPLING, n=3)
    assert len(completions) == 3
    first, *rest = bodies(server)
    assert first["n"] == 3 and first["seed"] == 7
    assert all("n" not in body for body in rest)
    assert sorted(body["seed"] for body in rest) == [8, 9]


async def test_n_in_one_request_when_the_server_honours_it(server):
    server.script.append(answer("a", "b"))
    async with GenerationClient(server.endpoint(server_supports_n=True)) as client:
        completions = await client.chat(MESSAGES, SAMPLING, n=2)
    assert completions == [Completion("a", "stop", None), Completion("b", "stop", None)]
    assert len(server.requests) == 1


async def test_concurrency_is_bounded(server):
    server.default = slow(0.1, answer("ok"))
    async with GenerationClient(server.endpoint(max_concurrency=2)) as client:
        results = await asyncio.gather(*(client.chat(MESSAGES, SAMPLING) for _ in range(6)))
    assert len(results) == 6
    assert server.max_in_flight == 2


async def test_continue_chat_continues_the_final_assistant_message(server):
    server.script.append(answer(" and the waves rolled on."))
    async with GenerationClient(server.endpoint(chat_template_continuation=True)) as client:
        completions = await client.continue_chat(MESSAGES, "The sea was calm", SAMPLING)
    assert completions[0].text == " and the waves rolled on."
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["messages"][-1] == {"role": "assistant", "content": "The sea was calm"}
    assert request["body"]["continue_final_message"] is True
    assert request["body"]["add_generation_prompt"] is False


async def test_continue_chat_by_raw_completion_over_the_chat_template(server):
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        unk_token="<unk>",
        chat_template=QWEN_STYLE_TEMPLATE,
    )
    server.script.append(answer(" and the waves rolled on."))
    endpoint = server.endpoint(chat_template_continuation=False)
    async with GenerationClient(endpoint, tokenizer=tokenizer) as client:
        completions = await client.continue_chat(MESSAGES, "The sea was calm\n\n", SAMPLING)
    assert completions[0].text == " and the waves rolled on."
    (request,) = server.requests
    assert request["path"] == "/v1/completions"
    assert request["body"]["prompt"] == (
        "<|im_start|>user\nWrite about the sea.<|im_end|>\n<|im_start|>assistant\nThe sea was calm\n\n"
    )


async def test_continue_chat_by_raw_completion_needs_a_tokenizer(server):
    async with GenerationClient(server.endpoint(chat_template_continuation=False)) as client:
        with pytest.raises(EndpointError, match="tokenizer"):
            await client.continue_chat(MESSAGES, "The sea", SAMPLING)
    assert server.requests == []


# --------------------------------------------------------------------------- a real server

TINY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=4)


@pytest.mark.integration
async def test_chat_and_complete_with_transformers_serve(endpoint_config):
    async with GenerationClient(endpoint_config) as client:
        await client.check_health()
        (chat,) = await client.chat(MESSAGES, TINY)
        completions = await client.complete("Once upon a time", TINY, n=2)
    assert chat.finish_reason in ("stop", "length") and chat.completion_tokens <= 4
    assert len(completions) == 2 and all(isinstance(c.text, str) for c in completions)


@pytest.mark.integration
async def test_continue_chat_with_transformers_serve_returns_only_the_continuation(endpoint_config, served_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(served_model_dir)
    prefill = "The sea was calm"
    prompt = tokenizer.apply_chat_template(
        [*MESSAGES, {"role": "assistant", "content": prefill}], tokenize=False, continue_final_message=True
    )
    # Default top_k and repetition_penalty: transformers serve rejects them, the client drops them.
    greedy = SamplingConfig(temperature=0.0, max_tokens=6)
    async with GenerationClient(endpoint_config, tokenizer=tokenizer) as client:
        (continued,) = await client.continue_chat(MESSAGES, prefill, greedy)
        (raw,) = await client.complete(prompt, greedy)
    assert prompt.endswith(prefill)
    assert continued.text == raw.text
    assert not continued.text.startswith(prefill)


@pytest.mark.integration
async def test_concurrent_requests_to_transformers_serve(endpoint_config):
    assert endpoint_config.max_concurrency > 1
    async with GenerationClient(endpoint_config) as client:
        results = await asyncio.gather(*(client.chat(MESSAGES, TINY) for _ in range(4)))
    assert [len(r) for r in results] == [1] * 4


# --------------------------------------------------------------------------- per-request seeds


def test_seeds_differ_per_record_sample_and_attempt():
    seeds = {seeded(SAMPLING, "generate", record, sample, attempt).seed for record in ("q1", "q2") for sample in range(3) for attempt in range(1, 4)}
    assert len(seeds) == 18
    assert all(0 <= seed < 2**30 for seed in seeds)
    assert seeded(SAMPLING, "generate", "q1", 0, 1) == seeded(SAMPLING, "generate", "q1", 0, 1)
    assert seeded(SAMPLING, "q1").seed != seeded(SAMPLING.model_copy(update={"seed": 8}), "q1").seed
    unseeded = SAMPLING.model_copy(update={"seed": None})
    assert seeded(unseeded, "generate", "q1", 0, 1) is unseeded


def test_seeds_are_the_same_in_another_process():
    code = "from selflengthen.client import seeded; from selflengthen.config import SamplingConfig; print(seeded(SamplingConfig(seed=7), 'generate', 'q1', 1, 2).seed)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert int(other.stdout.strip()) == seeded(SAMPLING, "generate", "q1", 1, 2).seed


@pytest.mark.integration
async def test_transformers_serve_rejects_the_extensions_once(endpoint_config, recording_proxy):
    """24 concurrent requests to the real server: one is refused for top_k / repetition_penalty."""
    endpoint = endpoint_config.model_copy(update={"base_url": recording_proxy.base_url, "max_concurrency": 8})
    async with GenerationClient(endpoint) as client:
        results = await asyncio.gather(*(client.chat(MESSAGES, SAMPLING.model_copy(update={"max_tokens": 1})) for _ in range(24)))
    assert len(results) == 24
    assert recording_proxy.statuses.count(422) == 1
    assert len(recording_proxy.statuses) == 25


class _RecordingProxy(ThreadingHTTPServer):
    """Forwards every request to ``target`` and records the status of each POST answer."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target.rstrip("/")
        self.statuses: list[int] = []
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _RecordingProxy

    def _forward(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0))) if self.command == "POST" else None
        path = self.path[len("/v1") :] if self.path.startswith("/v1") else self.path
        request = urllib.request.Request(
            self.server.target + path, data=data, method=self.command, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as refused:
            status, body = refused.code, refused.read()
        if self.command == "POST":
            self.server.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recording_proxy(model_server):
    proxy = _RecordingProxy(model_server.base_url)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def test_the_cli_names_a_server_that_answers_html(html_server, tmp_path):
    """A stage against a web page instead of a model server: a clear error, exit 2, no output."""
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"id": "q1", "text": "Write about rivers.", "language": "en"}) + "\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps({"languages": ["en"], "model": {"base": str(tmp_path / "model")}, "serving": {"generator": {"base_url": html_server, "max_retries": 0}}}),
        encoding="utf-8",
    )
    output = tmp_path / "initial"
    command = [sys.executable, "-m", "selflengthen", "generate", "--config", str(config), "--input", str(queries), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    first_error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert f"model server at {html_server}" in first_error and "not an OpenAI response" in first_error
    assert "Traceback" not in result.stderr
    assert not (output / "_manifest.json").exists() and not list(output.glob("part-*"))
