"""docs/method.md, step 2: initial responses by the Generator (also the final Generator's collection)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from selflengthen.client import GenerationClient, seeded
from selflengthen.config import RunConfig
from selflengthen.records import Failure, Query, Response, stable_id
from selflengthen.fingerprint import checks_sections
from selflengthen.stages.common import StageResult, run_stage
from selflengthen.text import check_text, count_words

STAGE = "generate"


async def sample_response(
    client: GenerationClient, config: RunConfig, query: Query, sample_index: int, kind: str
) -> Response | Failure:
    """One sample, retried while it fails the checks; given up (a Failure) after max_retries.

    Each attempt draws with its own seed (from the configured one, the query, the sample and the attempt)."""
    settings = config.generate
    checks = config.checks.for_language(query.language)
    reasons: Counter[str] = Counter()
    messages = [{"role": "user", "content": query.text}]
    for attempt in range(1, settings.max_retries + 2):
        (completion,) = await client.chat(messages, seeded(settings.sampling, STAGE, kind, query.id, sample_index, attempt))
        reason = check_text(completion.text, checks, completion.finish_reason)
        if reason is None:
            return Response(
                id=stable_id(query.id, kind, sample_index),
                query_id=query.id,
                query=query.text,
                language=query.language,
                kind=kind,
                sample_index=sample_index,
                iteration=query.iteration,
                text=completion.text.strip(),
                words=count_words(completion.text),
                finish_reason=completion.finish_reason,
                attempts=attempt,
            )
        reasons[reason] += 1
    return Failure(
        id=stable_id(query.id, kind, sample_index, "failure"),
        stage=STAGE,
        query_id=query.id,
        reason=reasons.most_common(1)[0][0],
        attempts=settings.max_retries + 1,
        detail=", ".join(f"{k}={v}" for k, v in sorted(reasons.items())),
    )


def answer_query(kind: str):
    """A unit worker answering one query with ``samples_per_query`` independent samples."""

    async def work(client: GenerationClient, config: RunConfig, query: Query) -> tuple[list[Response], list[Failure]]:
        results = await asyncio.gather(
            *(sample_response(client, config, query, i, kind) for i in range(config.generate.samples_per_query))
        )
        return [r for r in results if isinstance(r, Response)], [r for r in results if isinstance(r, Failure)]

    return work


class GenerateMetrics:
    """Responses, samples given up, the requests they took (acceptance rate) and why samples were given up."""

    def __init__(self) -> None:
        self.responses = self.attempts = 0

    def add(self, response: Response) -> None:
        self.responses += 1
        self.attempts += response.attempts

    def result(self, failures: Sequence[Failure]) -> dict:
        attempts = self.attempts + sum(f.attempts for f in failures)
        return {
            "responses": self.responses,
            "given_up": len(failures),
            "requests": attempts,
            "acceptance_rate": round(self.responses / attempts, 4) if attempts else None,
            "given_up_reasons": dict(Counter(f.reason for f in failures)),
        }


def run_generate(config: RunConfig, *, queries: str, output: str, kind: str = "initial") -> StageResult:
    """Answer every query of dataset ``queries`` with the Generator; write responses to ``output``."""
    return run_stage(
        config,
        stage=STAGE if kind == "initial" else f"{STAGE}-{kind}",
        role="generator",
        input_uri=queries,
        input_model=Query,
        output_uri=output,
        output_model=Response,
        work=answer_query(kind),
        metrics=GenerateMetrics,
        sections=["generate", *checks_sections(config)],
    )
