"""SFT examples to token ids: the model's chat template, loss on the response only.

An example is rendered twice through the chat template: the prompt (every message but the last,
with the generation prompt appended) and the whole conversation. The response part is the text
the whole conversation adds after the prompt, so the prompt tokens are exactly the tokens the
model sees at inference before it starts answering; they get the label ``IGNORE_INDEX`` and carry
no loss. The response tokens (the answer, the end-of-turn token and whatever the template puts
after it) carry the loss.

Examples longer than ``max_length`` are dropped and counted, or, when the configuration says so
(``training.truncate_overlong``), cut at ``max_length`` inside the response and counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from selflengthen.errors import TrainingError
from selflengthen.records import SftExample

IGNORE_INDEX = -100
_TOKENIZE_BATCH = 256


@dataclass(frozen=True)
class TokenizedExample:
    """One example as ids; ``labels`` is ``IGNORE_INDEX`` on prompt tokens."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class TokenizationReport:
    """What tokenisation kept, dropped and cut; goes into the run's metrics."""

    examples: int
    kept: int
    dropped_overlong: int
    truncated: int
    max_length: int
    longest_tokens: int
    prompt_tokens: int
    response_tokens: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def validate_examples(examples: Sequence[SftExample], role: str, source: str) -> None:
    """Refuse an empty dataset, examples of another role and examples without a response."""
    if not examples:
        raise TrainingError(f"training data {source} holds no examples")
    for example in examples:
        if example.role != role:
            raise TrainingError(f"training data {source}: record {example.id} is for role {example.role}, not {role}")
        last = example.messages[-1]
        if last.role != "assistant" or not last.content.strip():
            raise TrainingError(
                f"training data {source}: record {example.id} has no response "
                "(its last message must be a non-empty assistant message)"
            )


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def split_prompt_response(tokenizer: Any, example: SftExample) -> tuple[str, str]:
    """(prompt text, response text) of one example as the chat template renders them."""
    messages = [message.model_dump() for message in example.messages]
    prompt = _render(tokenizer, messages[:-1], add_generation_prompt=True)
    whole = _render(tokenizer, messages, add_generation_prompt=False)
    if not whole.startswith(prompt):
        raise TrainingError(
            f"record {example.id}: the chat template does not render the prompt as a prefix of the "
            "whole conversation, so prompt and response tokens cannot be told apart"
        )
    return prompt, whole[len(prompt):]


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts (templates render their own special tokens, so none are added)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        ids.extend(tokenizer(texts[start : start + _TOKENIZE_BATCH], add_special_tokens=False)["input_ids"])
    return ids


def tokenize_examples(
    tokenizer: Any, examples: Sequence[SftExample], *, max_length: int, truncate_overlong: bool
) -> tuple[list[TokenizedExample], TokenizationReport]:
    """Tokenise ``examples`` with response-only labels; over-long ones are dropped or cut, and counted."""
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError("the base model's tokenizer has no chat template")
    pairs = [split_prompt_response(tokenizer, example) for example in examples]
    prompt_ids = _ids(tokenizer, [prompt for prompt, _ in pairs])
    response_ids = _ids(tokenizer, [response for _, response in pairs])

    kept: list[TokenizedExample] = []
    dropped = truncated = longest = prompt_tokens = response_tokens = 0
    for prompt, response in zip(prompt_ids, response_ids):
        if not prompt:
            raise TrainingError("the chat template rendered an empty prompt; the first token must carry no loss")
        length = len(prompt) + len(response)
        longest = max(longest, length)
        if length > max_length:
            # Cutting only makes sense while some of the response survives.
            if not truncate_overlong or len(prompt) >= max_length:
                dropped += 1
                continue
            response = response[: max_length - len(prompt)]
            truncated += 1
        kept.append(TokenizedExample(input_ids=prompt + response, labels=[IGNORE_INDEX] * len(prompt) + response))
        prompt_tokens += len(prompt)
        response_tokens += len(response)

    report = TokenizationReport(
        examples=len(examples),
        kept=len(kept),
        dropped_overlong=dropped,
        truncated=truncated,
        max_length=max_length,
        longest_tokens=longest,
        prompt_tokens=prompt_tokens,
        response_tokens=response_tokens,
    )
    if not kept:
        raise TrainingError(
            f"all {len(examples)} examples exceed training.max_length={max_length} tokens "
            f"(longest {longest}); raise max_length or set training.truncate_overlong"
        )
    return kept, report
