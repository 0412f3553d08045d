"""docs/method.md, step 3: two-stage, multi-round extension of initial responses by the Extender.

Each initial response runs ``extend.chains`` independent chains (reference: two, each its own
record, as in QwenLM/Self-Lengthen ``qwen/step2_ext_responses.py``); a chain retries up to
``extend.attempts`` attempts until one passes ``min_ratio``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import RunConfig
from selflengthen.context_window import PROMPT_TOO_LONG, REFUSED
from selflengthen.errors import RequestRefused
from selflengthen.prompts import render_prompt
from selflengthen.records import ExtensionRound, Failure, Response, stable_id
from selflengthen.fingerprint import checks_sections
from selflengthen.stages.common import StageResult, run_stage
from selflengthen.stages.select import length_biased_ids, lengths
from selflengthen.text import check_text, count_words, keep_leading_fraction, split_halves

STAGE = "extend"
REFUSALS = (PROMPT_TOO_LONG, REFUSED)


async def extend_round(
    client: GenerationClient, config: RunConfig, response: Response, current: str, step: tuple[int, int, int]
) -> ExtensionRound:
    """One round: stage 1 enriches the first half, stage 2 continues from its kept part.

    A request refused for its prompt (it outgrew the model's context) ends the round with the
    refusal's reason (``prompt_too_long``, ``refused``) instead of failing the response."""
    chain, attempt, round_index = step
    try:
        return await _extend_round(client, config, response, current, step)
    except RequestRefused as error:
        return ExtensionRound(chain=chain, attempt=attempt, round=round_index, reason=error.reason)


async def _extend_round(
    client: GenerationClient, config: RunConfig, response: Response, current: str, step: tuple[int, int, int]
) -> ExtensionRound:
    settings = config.extend
    checks = config.checks.for_language(response.language)
    chain, attempt, round_index = step
    record = ExtensionRound(chain=chain, attempt=attempt, round=round_index)
    first_half, _ = split_halves(current)
    if not first_half.strip():
        record.reason = "too_short_to_split"
        return record
    stage1_prompt = render_prompt("extend", response.language, query=response.query, response=first_half)
    sampling = {part: seeded(settings.sampling, STAGE, response.id, *step, part) for part in (1, 2)}
    (stage1,) = await client.chat([{"role": "user", "content": stage1_prompt}], sampling[1])
    if stage1.finish_reason == "length":
        record.reason = "stage1_truncated"
        return record
    kept = keep_leading_fraction(stage1.text, settings.keep_fraction)
    if not kept:
        record.reason = "stage1_empty"
        return record
    record.stage1_text = kept
    stage2_prompt = render_prompt("extend", response.language, query=response.query, response=current)
    prefill = kept + settings.prefill_separator
    (stage2,) = await client.continue_chat([{"role": "user", "content": stage2_prompt}], prefill, sampling[2])
    record.continuation = stage2.text
    record.finish_reason = stage2.finish_reason
    record.text = (prefill + stage2.text.lstrip()).strip()
    record.words = count_words(record.text)
    record.reason = check_text(record.text, checks, stage2.finish_reason)
    return record


async def extend_response(client: GenerationClient, config: RunConfig, response: Response) -> tuple[list[Response], list[Failure]]:
    """``chains`` independent extension chains of one initial response; each successful chain is
    its own extended record, each chain that never succeeds its own failure."""
    results = await asyncio.gather(*(extend_chain(client, config, response, chain) for chain in range(config.extend.chains)))
    return [r for r in results if isinstance(r, Response)], [r for r in results if isinstance(r, Failure)]


async def extend_chain(client: GenerationClient, config: RunConfig, response: Response, chain: int) -> Response | Failure:
    """Up to ``attempts`` attempts of up to ``rounds`` compounding rounds; the first attempt whose
    final text is longer than ``min_ratio`` x the initial length wins.

    A round whose prompt the server refuses (the text outgrew the context: ``prompt_too_long``) ends
    its attempt with the best text so far, as if the remaining rounds had failed their checks: the
    attempt is judged on what its earlier rounds achieved, and the unit's earlier work is kept."""
    settings = config.extend
    history: list[ExtensionRound] = []
    for attempt in range(1, settings.attempts + 1):
        best_text, best_words = response.text, response.words
        for round_index in range(1, settings.rounds + 1):
            record = await extend_round(client, config, response, best_text, (chain, attempt, round_index))
            if record.reason is None and record.words <= best_words:
                record.reason = "not_longer"
            record.accepted = record.reason is None
            history.append(record)
            if record.accepted:
                best_text, best_words = record.text, record.words
            elif record.reason in REFUSALS:
                break
        if best_words > settings.min_ratio * response.words:
            return Response(
                id=stable_id(response.id, "extended", chain),
                query_id=response.query_id,
                query=response.query,
                language=response.language,
                kind="extended",
                sample_index=response.sample_index,
                chain=chain,
                iteration=response.iteration,
                text=best_text,
                words=best_words,
                finish_reason="stop",
                attempts=attempt,
                initial_id=response.id,
                initial_text=response.text,
                initial_words=response.words,
                rounds=history,
            )
    reasons = sorted({r.reason for r in history if r.reason})
    return Failure(
        id=stable_id(response.id, STAGE, chain, "failure"),
        stage=STAGE,
        query_id=response.query_id,
        reason="below_min_ratio",
        attempts=settings.attempts,
        detail=f"chain {chain}; round rejections: {', '.join(reasons) or 'none'}",
    )


class ExtendMetrics:
    """Acceptance (per chain: an initial response gives up to ``chains`` records), the rounds'
    rejection reasons within accepted chains, and the mean lengthening ratio."""

    def __init__(self) -> None:
        self.extended = self.ratios = 0
        self.ratio_sum = 0.0
        self.rejected: Counter[str] = Counter()

    def add(self, response: Response) -> None:
        self.extended += 1
        self.rejected.update(record.reason for record in response.rounds if record.reason)
        if response.initial_words:
            self.ratios += 1
            self.ratio_sum += response.words / response.initial_words

    def result(self, failures: Sequence[Failure]) -> dict:
        return {
            "extended": self.extended,
            "failed": len(failures),
            "round_rejections_of_accepted": dict(self.rejected),
            "mean_ratio": round(self.ratio_sum / self.ratios, 4) if self.ratios else None,
        }


def run_extend(config: RunConfig, *, responses: str, output: str) -> StageResult:
    """Extend the initial responses in dataset ``responses``; write the extended ones to ``output``.

    With ``select.length_biased_initial`` only the initial responses that survive length-biased
    sampling (docs/method.md, step 5) are extended; the metrics count the others (``input_not_kept``)."""
    sample = config.select.length_biased_initial
    return run_stage(
        config,
        stage=STAGE,
        role="extender",
        input_uri=responses,
        input_model=Response,
        output_uri=output,
        output_model=Response,
        work=extend_response,
        metrics=ExtendMetrics,
        sections=["extend", *(["select", "seed"] if sample else []), *checks_sections(config)],
        keep=(lambda records: length_biased_ids(lengths(records), config.select, config.seed)) if sample else None,
    )
