"""How many new tokens a request may ask for: the model's context less the prompt's tokens.

A prompt plus ``max_tokens`` longer than the model's context is refused by vLLM with HTTP 400
("This model's maximum context length is N tokens. However, you requested M tokens (P in the
messages, C in the completion). Please reduce the length of the messages or completion." —
``OpenAIServing._validate_prompt_and_tokenize`` in vllm/entrypoints/openai/serving_engine.py), and
the extension prompt grows with the text, so a fixed ``max_tokens`` would sink later iterations.
The client therefore caps ``max_tokens`` to the room left, and refuses before sending a prompt that
leaves none (:class:`~selflengthen.errors.RequestRefused`, reason ``prompt_too_long``).

Where the numbers come from:

- the context length: ``max_model_len`` of the model's card in ``GET /v1/models`` (vLLM's
  ``ModelCard.max_model_len``, filled by ``show_available_models``), for a LoRA adapter that of the
  base model its card names as ``parent``; else the tokenizer's
  ``model_max_length`` when the client has the model's tokenizer; else unknown and nothing is capped
  (``transformers serve`` reports no context length);
- the prompt's tokens: the client's tokenizer (the chat template rendered as the server renders it),
  else vLLM's ``POST /tokenize`` at the server root (vllm/entrypoints/openai/api_server.py), which
  takes ``{"model", "messages", "add_generation_prompt", "continue_final_message"}`` for a chat or
  ``{"model", "prompt"}`` for a completion and answers ``{"count", "max_model_len", "tokens"}``
  (``TokenizeChatRequest`` / ``TokenizeCompletionRequest`` / ``TokenizeResponse`` in vLLM's
  protocol.py); a server without it (404) is not asked again and nothing is capped.

Each distinct prompt is counted once (samples and retries of one query share the count). No
character-count shortcut skips the count: a chat prompt's tokens include what the chat template adds
(role markers, a default system prompt) that the client cannot see from the messages, so the
messages' byte length is not an upper bound of the prompt's tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any, Literal

import httpx

from selflengthen.errors import RequestRefused

logger = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"
REFUSED = "refused"
# transformers' stand-in for "no limit recorded" in a tokenizer's model_max_length is int(1e30).
_UNSET_MODEL_MAX_LENGTH = 10**9
# The wording of a context overflow in vLLM's refusals (serving_engine.py, see above).
_OVERFLOW_PHRASES = ("maximum context length", "maximum model length")

Kind = Literal["chat", "completion"]


def is_context_overflow(message: str) -> bool:
    """Whether a server's refusal says the prompt (plus max_tokens) exceeds the model's context."""
    lowered = message.lower()
    return any(phrase in lowered for phrase in _OVERFLOW_PHRASES)


class ContextWindow:
    """The context length of one served model and the token counts of the prompts sent to it."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, model: str, tokenizer: Any = None) -> None:
        self._http = http
        self._base_url = base_url
        self._root_url = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
        self._model = model
        self._tokenizer = tokenizer
        self._limit: asyncio.Task[int | None] | None = None
        self._counts: dict[str, asyncio.Task[int | None]] = {}
        self._server_counts = True

    async def max_tokens(self, kind: Kind, request: dict, wanted: int) -> int:
        """``wanted`` capped to the room the prompt leaves; RequestRefused when it leaves none."""
        if self._limit is None:
            self._limit = asyncio.ensure_future(self._context_length())
        limit = await self._limit
        if limit is None:
            return wanted
        key = hashlib.sha256(json.dumps([kind, request], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if key not in self._counts:
            self._counts[key] = asyncio.ensure_future(self._count(kind, request))
        tokens = await self._counts[key]
        if tokens is None:
            return wanted
        if tokens >= limit:
            raise RequestRefused(
                PROMPT_TOO_LONG,
                f"prompt of {tokens} tokens leaves no room for an answer: the model at {self._base_url} "
                f"takes {limit} tokens (prompt plus answer); not sent",
            )
        return min(wanted, limit - tokens)

    async def _context_length(self) -> int | None:
        try:
            response = await self._http.get(f"{self._base_url}/models")
            cards = response.json().get("data", []) if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            cards = []
        by_id = {card["id"]: card for card in cards if isinstance(card, dict) and "id" in card} if isinstance(cards, list) else {}
        card, seen = by_id.get(self._model), set()
        while card is not None and card["id"] not in seen:
            if isinstance(card.get("max_model_len"), int):
                return card["max_model_len"]
            # A LoRA adapter's card gives no length but names its base model as ``parent`` (vLLM's
            # ModelCard, show_available_models): the adapter runs in the base model's context.
            seen.add(card["id"])
            card = by_id.get(card.get("parent"))
        length = getattr(self._tokenizer, "model_max_length", None)
        if isinstance(length, int) and 0 < length < _UNSET_MODEL_MAX_LENGTH:
            return length
        return None

    async def _count(self, kind: Kind, request: dict) -> int | None:
        """The prompt's tokens as the server will count them; None when nothing can count them."""
        continued = bool(request.get("extra_body", {}).get("continue_final_message"))
        if self._tokenizer is not None:
            return await asyncio.to_thread(self._count_locally, kind, request, continued)
        if not self._server_counts:
            return None
        if kind == "chat":
            body = {"messages": request["messages"], "add_generation_prompt": not continued, "continue_final_message": continued}
        else:
            body = {"prompt": request["prompt"]}
        try:
            response = await self._http.post(f"{self._root_url}/tokenize", json={"model": self._model, **body})
        except httpx.HTTPError as error:
            logger.info("could not count a prompt's tokens at %s/tokenize: %s", self._root_url, error)
            return None
        if response.status_code in (404, 405):
            logger.info("model server at %s has no /tokenize: max_tokens is not capped", self._root_url)
            self._server_counts = False
            return None
        if response.status_code == 400 and is_context_overflow(response.text):
            raise RequestRefused(PROMPT_TOO_LONG, f"model server at {self._base_url} refused to tokenize the prompt: {response.text}")
        try:
            count = response.json()["count"] if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            count = None
        return count if isinstance(count, int) else None

    def _count_locally(self, kind: Kind, request: dict, continued: bool) -> int:
        if kind == "chat":
            text = self._tokenizer.apply_chat_template(
                request["messages"], tokenize=False, add_generation_prompt=not continued, continue_final_message=continued
            )
            # The rendered template carries its special tokens (vLLM tokenizes it without adding more).
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(self._tokenizer(request["prompt"])["input_ids"])
