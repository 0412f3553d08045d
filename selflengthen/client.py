"""The one generation code path: an async client for OpenAI-compatible model servers.

Every stage talks to its model through :class:`GenerationClient` (docs/architecture.md, principle 5). The server
is vLLM in production and ``transformers serve`` locally; the client papers over their differences:

- bounded concurrency: one ``asyncio.Semaphore`` of ``endpoint.max_concurrency`` per client, shared by
  every call, so a stage can fire thousands of coroutines without flooding the server;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and lost connections (the
  ``openai`` client's own retries are off); any other 4xx fails at once with the server's message;
- stop strings are enforced client-side too (``transformers serve`` leaves them in the text): a text
  is cut at the first stop string it contains and its finish_reason becomes ``"stop"``;
- ``n > 1`` is emulated with ``n`` requests when the server ignores ``n`` (``server_supports_n`` off,
  or fewer choices came back than were asked for); emulated requests get seeds ``seed + i`` so they
  do not all draw the same sample;
- ``top_k`` and ``repetition_penalty`` travel as vendor extensions (vLLM reads them); a server that
  rejects them by name as unexpected fields (``transformers serve``) gets them no more, with one
  warning.

finish_reason ``"length"`` (the text hit ``max_tokens``) is passed through untouched: the stages
treat such a text as a failure (docs/method.md, step 4), never as a success.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any, Literal

import openai

from selflengthen.config import EndpointConfig, SamplingConfig
from selflengthen.errors import EndpointError

logger = logging.getLogger(__name__)

# Used when the variable named by ``endpoint.api_key_env`` is unset (vLLM without --api-key accepts any).
PLACEHOLDER_API_KEY = "EMPTY"
HEALTH_TIMEOUT_S = 5.0
# Sampling fields outside the OpenAI schema; dropped for a server that rejects them.
SAMPLING_EXTENSIONS = ("top_k", "repetition_penalty")

Kind = Literal["chat", "completion"]
_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


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
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(endpoint.api_key_env) or PLACEHOLDER_API_KEY,
            timeout=endpoint.request_timeout_s,
            max_retries=0,
        )

    async def __aenter__(self) -> GenerationClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

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
        """Raise EndpointError unless the server answers ``GET /models`` within a few seconds."""
        try:
            await self._client.with_options(timeout=HEALTH_TIMEOUT_S).models.list()
        except openai.APIError as error:
            raise EndpointError(f"cannot reach model server at {self.base_url}: {_describe(error)}") from None

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
        create = self._client.chat.completions.create if kind == "chat" else self._client.completions.create
        response = await self._call(create, request, sampling, n, seed_offset)
        choices, usage = response.choices, response.usage
        # Usage covers the whole response: a per-text count only when there is one text.
        tokens = usage.completion_tokens if usage is not None and len(choices) == 1 else None
        completions = []
        for choice in choices:
            text = (choice.message.content if kind == "chat" else choice.text) or ""
            completions.append(_apply_stop(Completion(text, choice.finish_reason, tokens), sampling.stop))
        return completions

    def _params(self, request: dict, sampling: SamplingConfig, n: int, seed_offset: int) -> dict:
        """The keyword arguments of one ``create`` call."""
        params: dict[str, Any] = {
            "model": self.endpoint.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            **{key: value for key, value in request.items() if key != "extra_body"},
        }
        if n > 1:
            params["n"] = n
        if sampling.seed is not None:
            params["seed"] = sampling.seed + seed_offset
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        extensions = {"repetition_penalty": sampling.repetition_penalty}
        if sampling.top_k != -1:
            extensions["top_k"] = sampling.top_k
        extra_body = {key: value for key, value in extensions.items() if key not in self._rejected_extensions}
        extra_body.update(request.get("extra_body", {}))
        if extra_body:
            params["extra_body"] = extra_body
        return params

    # ------------------------------------------------------------------ transport

    async def _call(self, create, request: dict, sampling: SamplingConfig, n: int, seed_offset: int):
        """One logical request: bounded, retried with backoff, errors turned into EndpointError."""
        failures = 0
        while True:
            params = self._params(request, sampling, n, seed_offset)
            try:
                async with self._semaphore:
                    return await create(**params)
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
                if not self._drop_rejected_extensions(error, params):
                    message = f"model server at {self.base_url} refused the request: {_describe(error)}"
                    raise EndpointError(message) from None
            except openai.APIError as error:  # a response that is not an OpenAI one
                raise EndpointError(f"model server at {self.base_url} answered badly: {_describe(error)}") from None

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with "equal jitter": half the step fixed, half random."""
        step = min(self.endpoint.backoff_max_s, self.endpoint.backoff_initial_s * 2 ** (failures - 1))
        return step / 2 + random.uniform(0, step / 2)

    def _drop_rejected_extensions(self, error: openai.APIStatusError, params: dict) -> bool:
        """Stop sending sampling extensions that the server names as unexpected; True if any were."""
        message = _describe(error)
        if error.status_code not in (400, 422) or "unexpected" not in message.lower():
            return False
        sent = params.get("extra_body", {})
        rejected = {name for name in SAMPLING_EXTENSIONS if name in sent and name in message}
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
