"""The one generation code path: an async client for OpenAI-compatible model servers.

Every stage talks to its model through :class:`GenerationClient` (docs/architecture.md, principle 5). The server
is vLLM in production and ``transformers serve`` locally; the client papers over their differences:

- bounded concurrency: one ``asyncio.Semaphore`` of ``endpoint.max_concurrency`` per client, shared by
  every call, so a stage can fire thousands of coroutines without flooding the server;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and lost connections (the
  ``openai`` client's own retries are off); retries run out: EndpointError (the stage fails: the
  server, not the record, is at fault);
- a request refused for what it holds (any other 4xx but 401/403/404, which say the endpoint is
  wrong) raises :class:`~selflengthen.errors.RequestRefused` at once with the server's message and a
  reason (``prompt_too_long``, ``refused``): the stages record it as that record's failure;
- ``max_tokens`` is capped to the context the prompt leaves, and a prompt that leaves none is refused
  before it is sent (:mod:`selflengthen.context_window`);
- an answer that is not an OpenAI response (an HTML page with status 200) is an EndpointError naming
  the server;
- stop strings are enforced client-side too (``transformers serve`` leaves them in the text): a text
  is cut at the first stop string it contains and its finish_reason becomes ``"stop"``;
- ``n > 1`` is emulated with ``n`` requests when the server ignores ``n`` (``server_supports_n`` off,
  or fewer choices came back than were asked for); emulated request ``i`` gets seed ``seed + i``,
  which is what vLLM gives the i-th of ``n`` samples of one seeded request (``ParentRequest.
  _get_child_sampling_params`` in vllm/v1/engine/parallel_sampling.py: child ``i`` samples with
  ``seed + index``), so the ``n`` samples differ and are the same whichever way they were drawn.
  The stages make the seed itself differ per record, sample and attempt (:func:`seeded`);
- ``top_k`` and ``repetition_penalty`` travel as vendor extensions (vLLM reads them); whether the
  server takes them is learned by the client's first request while the others wait, so a server
  that rejects them by name as unexpected fields (``transformers serve``: HTTP 422) costs one
  rejected request per client, with one warning, and gets them no more.

finish_reason ``"length"`` (the text hit ``max_tokens``) is passed through untouched: the stages
treat such a text as a failure (docs/method.md, step 4), never as a success.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any

import httpx
import openai

from selflengthen.config import EndpointConfig, SamplingConfig
from selflengthen.context_window import PROMPT_TOO_LONG, REFUSED, ContextWindow, Kind, is_context_overflow
from selflengthen.errors import EndpointError, RequestRefused

logger = logging.getLogger(__name__)

# Used when the variable named by ``endpoint.api_key_env`` is unset (vLLM without --api-key accepts any).
PLACEHOLDER_API_KEY = "EMPTY"
HEALTH_TIMEOUT_S = 5.0
# Sampling fields outside the OpenAI schema; dropped for a server that rejects them.
SAMPLING_EXTENSIONS = ("top_k", "repetition_penalty")
# Refusals that say the endpoint is wrong (credentials, model name, path), not the request: the stage fails.
_ENDPOINT_STATUSES = (401, 403, 404)
# Derived seeds are 30-bit, so seed + i of n samples stays a 31-bit integer.
_SEED_MASK = 2**30 - 1

_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
_PATHS: dict[Kind, str] = {"chat": "/chat/completions", "completion": "/completions"}


def seeded(sampling: SamplingConfig, *parts: object) -> SamplingConfig:
    """``sampling`` with a seed of its own for one request, derived from the configured seed and
    ``parts`` (the stage, the record id, the sample index, the attempt...); unchanged without a seed.

    A stable hash (sha256, not Python's per-process ``hash``), so two runs with the same seed send the
    same seeds, while different samples and retries of one query draw different texts.
    """
    if sampling.seed is None:
        return sampling
    digest = hashlib.sha256("\x1f".join(str(part) for part in (sampling.seed, *parts)).encode("utf-8")).digest()
    return sampling.model_copy(update={"seed": int.from_bytes(digest[:8], "big") & _SEED_MASK})


@dataclass
class Completion:
    """One generated text. ``finish_reason`` "length" means truncated (a failure for the stages)."""

    text: str
    finish_reason: str | None
    completion_tokens: int | None = None


class GenerationClient:
    """Async client of one OpenAI-compatible endpoint; use as ``async with GenerationClient(...)``.

    ``tokenizer`` (a Hugging Face tokenizer with a chat template) is needed only by
    :meth:`continue_chat` when ``endpoint.chat_template_continuation`` is off. ``role`` names the
    endpoint's config section in error messages (``serving.<role>``).
    """

    def __init__(self, endpoint: EndpointConfig, *, tokenizer: Any = None, role: str = "<role>") -> None:
        if not endpoint.base_url:
            raise EndpointError(f"serving.{role}.base_url is not set: no model server to send requests to")
        self.endpoint = endpoint
        self.base_url = endpoint.base_url.rstrip("/")
        self._tokenizer = tokenizer
        self._semaphore = asyncio.Semaphore(endpoint.max_concurrency)
        self._rejected_extensions: set[str] = set()
        # Whether the server takes the sampling extensions is learned by one request at a time.
        self._extensions_known = False
        self._extensions_probe = asyncio.Lock()
        api_key = os.environ.get(endpoint.api_key_env) or PLACEHOLDER_API_KEY
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, timeout=endpoint.request_timeout_s, max_retries=0
        )
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}"}, timeout=endpoint.request_timeout_s
        )
        self._context = ContextWindow(self._http, self.base_url, endpoint.model, tokenizer) if endpoint.fit_context else None

    async def __aenter__(self) -> GenerationClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    # ------------------------------------------------------------------ public calls

    async def chat(self, messages: list[dict], sampling: SamplingConfig, n: int = 1) -> list[Completion]:
        """``n`` answers of the model to a conversation (a chat completion request)."""
        return await self._sample("chat", {"messages": messages}, sampling, n)

    async def complete(self, prompt: str, sampling: SamplingConfig, n: int = 1) -> list[Completion]:
        """``n`` raw continuations of ``prompt`` (``/v1/completions``, no chat template)."""
        return await self._sample("completion", {"prompt": prompt}, sampling, n)

    async def continue_chat(
        self, messages: list[dict], prefill: str, sampling: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        """Continue an assistant turn that starts with ``prefill``; returns only the continuation.

        With ``chat_template_continuation`` the server renders the template and continues the final
        assistant message (vLLM's ``continue_final_message``); otherwise the prompt is rendered here
        with the tokenizer's chat template and sent as a raw completion.
        """
        conversation = [*messages, {"role": "assistant", "content": prefill}]
        if self.endpoint.chat_template_continuation:
            request = {
                "messages": conversation,
                "extra_body": {"continue_final_message": True, "add_generation_prompt": False},
            }
            return await self._sample("chat", request, sampling, n)
        if self._tokenizer is None:
            raise EndpointError(
                f"continuing a chat at {self.base_url} by raw completion (chat_template_continuation: false) "
                "needs the model's tokenizer to render its chat template"
            )
        prompt = self._tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        return await self.complete(prompt, sampling, n)

    async def check_health(self) -> None:
        """Raise EndpointError unless the server answers ``GET /models`` with an OpenAI model list
        within a few seconds."""
        try:
            response = await self._http.get(f"{self.base_url}/models", timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as error:
            raise EndpointError(f"cannot reach model server at {self.base_url}: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            raise EndpointError(f"cannot reach model server at {self.base_url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            listing = response.json()
        except ValueError:
            listing = None
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            raise EndpointError(self._not_openai(response.text))

    def _not_openai(self, answer: object) -> str:
        return f"model server at {self.base_url} answered with something that is not an OpenAI response: {str(answer)[:200]!r}"

    # ------------------------------------------------------------------ sampling

    async def _sample(self, kind: Kind, request: dict, sampling: SamplingConfig, n: int) -> list[Completion]:
        """``n`` completions: one request asking for ``n``, topped up by single requests if short."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if n == 1 or not self.endpoint.server_supports_n:
            batches = await asyncio.gather(*(self._once(kind, request, sampling, 1, i) for i in range(n)))
            return [completion for batch in batches for completion in batch]
        completions = await self._once(kind, request, sampling, n, 0)
        missing = range(len(completions), n)
        extra = await asyncio.gather(*(self._once(kind, request, sampling, 1, i) for i in missing))
        return completions[:n] + [completion for batch in extra for completion in batch]

    async def _once(
        self, kind: Kind, request: dict, sampling: SamplingConfig, n: int, seed_offset: int
    ) -> list[Completion]:
        """One request (retried as needed) and its choices as Completions, stop strings applied."""
        if self._context is not None:
            max_tokens = await self._context.max_tokens(kind, request, sampling.max_tokens)
            if max_tokens != sampling.max_tokens:  # a copy only when capped: most requests leave it as asked
                sampling = sampling.model_copy(update={"max_tokens": max_tokens})
        answer = await self._call(_PATHS[kind], request, sampling, n, seed_offset)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not all(isinstance(choice, dict) and "finish_reason" in choice for choice in choices):
            raise EndpointError(self._not_openai(answer))
        # Usage covers the whole response: a per-text count only when there is one text.
        usage = answer.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) and len(choices) == 1 else None
        completions = []
        for choice in choices:
            text = ((choice.get("message") or {}).get("content") if kind == "chat" else choice.get("text")) or ""
            completions.append(_apply_stop(Completion(text, choice["finish_reason"], tokens), sampling.stop))
        return completions

    def _body(self, request: dict, sampling: SamplingConfig, n: int, seed_offset: int) -> dict:
        """The JSON body of one request: the sampling settings, the request's messages or prompt,
        the vendor extensions the server takes, and the request's own extra fields."""
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            **{key: value for key, value in request.items() if key != "extra_body"},
        }
        if n > 1:
            body["n"] = n
        if sampling.seed is not None:
            body["seed"] = sampling.seed + seed_offset
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if "repetition_penalty" not in self._rejected_extensions:
            body["repetition_penalty"] = sampling.repetition_penalty
        if sampling.top_k != -1 and "top_k" not in self._rejected_extensions:
            body["top_k"] = sampling.top_k
        body.update(request.get("extra_body", {}))
        return body

    # ------------------------------------------------------------------ transport

    async def _call(self, path: str, request: dict, sampling: SamplingConfig, n: int, seed_offset: int) -> Any:
        """One logical request. Until the server has answered one request, requests go one at a time:
        the first answer tells whether it takes the sampling extensions, before the rest go out."""
        if not self._extensions_known:
            async with self._extensions_probe:
                if not self._extensions_known:
                    answer = await self._send(path, request, sampling, n, seed_offset)
                    self._extensions_known = True
                    return answer
        return await self._send(path, request, sampling, n, seed_offset)

    async def _send(self, path: str, request: dict, sampling: SamplingConfig, n: int, seed_offset: int) -> Any:
        """One logical request, its answer's JSON: bounded, retried with backoff, errors turned into
        EndpointError (RequestRefused when the server refuses this request for what it holds).

        The body goes out by the openai client's own ``post`` (its connection pool, headers, timeout
        and errors) as JSON already built, and the answer comes back as bytes read with json.loads:
        ``chat.completions.create`` would walk the body through its typed-dict transforms and build
        pydantic models of the answer, 0.5-1 ms of CPU a request here (bench/client_overhead.py); the
        openai-python README ("Making custom/undocumented requests") documents ``client.post``."""
        failures = 0
        while True:
            body = self._body(request, sampling, n, seed_offset)
            try:
                async with self._semaphore:
                    content = await self._client.post(path, cast_to=bytes, body=body)
                try:
                    return json.loads(content)
                except ValueError:
                    raise EndpointError(self._not_openai(content.decode("utf-8", "replace"))) from None
            except _RETRYABLE as error:
                failures += 1
                reason = _describe(error)
                if failures > self.endpoint.max_retries:
                    message = f"model server at {self.base_url} failed after {failures} attempts; last error: {reason}"
                    raise EndpointError(message) from None
                delay = self._backoff(failures)
                logger.info("request to %s failed: %s; retry %d in %.2fs", self.base_url, reason, failures, delay)
                await asyncio.sleep(delay)
            except openai.APIStatusError as error:
                if not self._drop_rejected_extensions(error, body):
                    reason = _describe(error)
                    message = f"model server at {self.base_url} refused the request: {reason}"
                    if error.status_code in _ENDPOINT_STATUSES:
                        raise EndpointError(message) from None
                    raise RequestRefused(PROMPT_TOO_LONG if is_context_overflow(reason) else REFUSED, message) from None
            except openai.APIError as error:  # a response that is not an OpenAI one
                raise EndpointError(f"model server at {self.base_url} answered badly: {_describe(error)}") from None

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with "equal jitter": half the step fixed, half random."""
        step = min(self.endpoint.backoff_max_s, self.endpoint.backoff_initial_s * 2 ** (failures - 1))
        return step / 2 + random.uniform(0, step / 2)

    def _drop_rejected_extensions(self, error: openai.APIStatusError, body: dict) -> bool:
        """Stop sending sampling extensions that the server names as unexpected; True if any were."""
        message = _describe(error)
        if error.status_code not in (400, 422) or "unexpected" not in message.lower():
            return False
        rejected = {name for name in SAMPLING_EXTENSIONS if name in body and name in message}
        if not rejected:
            return False
        if rejected - self._rejected_extensions:  # concurrent requests learn it together: warn once
            names = ", ".join(sorted(rejected))
            logger.warning("model server at %s does not accept %s; sending requests without them", self.base_url, names)
        self._rejected_extensions |= rejected
        return True


def _apply_stop(completion: Completion, stop: list[str]) -> Completion:
    """Cut the text at the first occurrence of any stop string (the stop string itself excluded)."""
    cuts = [index for index in (completion.text.find(s) for s in stop if s) if index >= 0]
    if not cuts:
        return completion
    return replace(completion, text=completion.text[: min(cuts)], finish_reason="stop")


def _describe(error: openai.APIError) -> str:
    """The server's own message (HTTP status and body) or the transport error, for error messages."""
    if isinstance(error, openai.APIStatusError):
        body = error.body
        if isinstance(body, dict):
            body = body.get("message") or body.get("detail") or body
        return f"HTTP {error.status_code}: {body}"
    cause = error.__cause__
    return f"{error.message} ({type(cause).__name__}: {cause})" if cause else error.message
