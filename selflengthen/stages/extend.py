"""docs/method.md, step 3: two-stage, multi-round extension of initial responses by the Extender."""

from __future__ import annotations

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import RunConfig
from selflengthen.context_window import PROMPT_TOO_LONG, REFUSED
from selflengthen.errors import RequestRefused
from selflengthen.prompts import render_prompt
from selflengthen.records import ExtensionRound, Failure, Response, stable_id
from selflengthen.fingerprint import checks_sections
from selflengthen.stages.common import StageResult, run_stage
from selflengthen.text import check_text, count_words, keep_leading_fraction, split_halves

STAGE = "extend"
REFUSALS = (PROMPT_TOO_LONG, REFUSED)


async def extend_round(
    client: GenerationClient, config: RunConfig, response: Response, current: str, attempt: int, round_index: int
) -> ExtensionRound:
    """One round: stage 1 enriches the first half, stage 2 continues from its kept part.

    A request refused for its prompt (it outgrew the model's context) ends the round with the
    refusal's reason (``prompt_too_long``, ``refused``) instead of failing the response."""
    try:
        return await _extend_round(client, config, response, current, attempt, round_index)
    except RequestRefused as error:
        return ExtensionRound(attempt=attempt, round=round_index, reason=error.reason)


async def _extend_round(
    client: GenerationClient, config: RunConfig, response: Response, current: str, attempt: int, round_index: int
) -> ExtensionRound:
    settings = config.extend
    checks = config.checks.for_language(response.language)
    record = ExtensionRound(attempt=attempt, round=round_index)
    first_half, _ = split_halves(current)
    if not first_half.strip():
        record.reason = "too_short_to_split"
        return record
    stage1_prompt = render_prompt("extend", response.language, query=response.query, response=first_half)
    sampling = {step: seeded(settings.sampling, STAGE, response.id, attempt, round_index, step) for step in (1, 2)}
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
            record = await extend_round(client, config, response, best_text, attempt, round_index)
            if record.reason is None and record.words <= best_words:
                record.reason = "not_longer"
            record.accepted = record.reason is None
            history.append(record)
            if record.accepted:
                best_text, best_words = record.text, record.words
            elif record.reason in REFUSALS:
                break
        if best_words > settings.min_ratio * response.words:
            extended = Response(
                id=stable_id(response.id, "extended"),
                query_id=response.query_id,
                query=response.query,
                language=response.language,
                kind="extended",
                sample_index=response.sample_index,
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
            return [extended], []
    reasons = sorted({r.reason for r in history if r.reason})
    failure = Failure(
        id=stable_id(response.id, STAGE, "failure"),
        stage=STAGE,
        query_id=response.query_id,
        reason="below_min_ratio",
        attempts=settings.attempts,
        detail=f"round rejections: {', '.join(reasons) or 'none'}",
    )
    return [], [failure]


def extend_metrics(outputs: list[Response], failures: list[Failure]) -> dict:
    """Acceptance and round-level rejection counts of the stage."""
    rounds = [r for response in outputs for r in response.rounds]
    rejected: dict[str, int] = {}
    for record in rounds:
        if record.reason:
            rejected[record.reason] = rejected.get(record.reason, 0) + 1
    ratios = [o.words / o.initial_words for o in outputs if o.initial_words]
    return {
        "extended": len(outputs),
        "failed": len(failures),
        "round_rejections_of_accepted": rejected,
        "mean_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
    }


def run_extend(config: RunConfig, *, responses: str, output: str) -> StageResult:
    """Extend every initial response in dataset ``responses``; write the extended ones to ``output``."""
    return run_stage(
        config,
        stage=STAGE,
        role="extender",
        input_uri=responses,
        input_model=Response,
        output_uri=output,
        output_model=Response,
        work=extend_response,
        metrics=extend_metrics,
        sections=["extend", *checks_sections(config)],
    )
