"""The tiny model's corpus: deterministic, mixed as documented, every text passes the checks."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from selflengthen import tiny_corpus
from selflengthen.config import ChecksConfig
from selflengthen.prompts import render_prompt, self_instruct_prompt
from selflengthen.text import check_text, count_words, split_pieces

CHECKS = ChecksConfig()
LANGUAGES = ("en", "zh")


@pytest.fixture(scope="module")
def stream() -> list[tiny_corpus.Example]:
    return list(itertools.islice(tiny_corpus.examples(0), 600))


def of_kind(stream: list[tiny_corpus.Example], kind: str, language: str) -> list[tiny_corpus.Example]:
    return [example for example in stream if example.kind == kind and example.language == language]


def test_stream_is_deterministic_per_seed():
    first = list(itertools.islice(tiny_corpus.examples(7), 40))
    assert first == list(itertools.islice(tiny_corpus.examples(7), 40))
    assert first != list(itertools.islice(tiny_corpus.examples(8), 40))


def test_stream_follows_the_documented_mix(stream):
    kinds = Counter(example.kind for example in stream)
    languages = Counter(example.language for example in stream)
    for kind, share in tiny_corpus.MIX.items():
        assert abs(kinds[kind] / len(stream) - share) < 0.06, kind
    for language, share in tiny_corpus.LANGUAGE_SHARE.items():
        assert abs(languages[language] / len(stream) - share) < 0.06, language


@pytest.mark.parametrize("language", LANGUAGES)
def test_essays_pass_the_checks_within_the_length_bounds(stream, language):
    essays = of_kind(stream, "essay", language)
    low, high = tiny_corpus.ESSAY_LENGTH[language]
    assert len(essays) > 20
    for example in essays:
        assert check_text(example.completion, CHECKS.for_language(language)) is None, example.completion
        assert low <= count_words(example.completion) <= high
        assert all(piece.startswith("## ") or piece[-1] in CHECKS.en.enders for piece in split_pieces(example.completion))


@pytest.mark.parametrize("language", LANGUAGES)
def test_essays_are_varied(stream, language):
    essays = [example.completion for example in of_kind(stream, "essay", language)]
    sentences = Counter(
        sentence
        for essay in essays
        for sentence in essay.replace("\n", " ").replace("。", "。|").replace(". ", ".|").split("|")
        if sentence.strip() and not sentence.startswith("## ")
    )
    assert len({essay.split("\n\n")[0] for essay in essays}) == len(essays)
    assert len(sentences) / sum(sentences.values()) > 0.9  # sentences are filled templates, not fixed text


@pytest.mark.parametrize("language", LANGUAGES)
def test_extensions_keep_the_draft_in_order_and_lengthen_it(stream, language):
    extensions = of_kind(stream, "extend", language)
    assert len(extensions) > 20
    for example in extensions:
        draft = example.fields["draft"]
        assert example.prompt == render_prompt("extend", language, query=example.fields["query"], response=draft)
        assert check_text(example.completion, CHECKS.for_language(language)) is None
        assert count_words(example.completion) >= tiny_corpus.EXTEND_RATIO[0] * count_words(draft)
        pieces = example.completion.split("\n\n")
        positions = [pieces.index(piece) for piece in draft.split("\n\n")]
        assert positions[0] == 0 and positions == sorted(positions)


@pytest.mark.parametrize("language", LANGUAGES)
def test_extensions_cover_both_stages(stream, language):
    """Stage-1 drafts are the first half of an essay (no conclusion); stage-2 drafts are whole."""
    conclusions = tiny_corpus.LEXICONS[language].conclusion
    markers = tuple(template.split("，" if language == "zh" else ",")[0] for template in conclusions)
    ends = Counter(
        example.fields["draft"].split("\n\n")[-1].startswith(markers) for example in of_kind(stream, "extend", language)
    )
    assert ends[True] > 5 and ends[False] > 5


@pytest.mark.parametrize("language", LANGUAGES)
def test_self_instruct_completions_continue_with_the_next_label(stream, language):
    for example in of_kind(stream, "self_instruct", language):
        shots = example.fields["examples"].split("\n")
        count = len(shots)
        task, prefill, _ = self_instruct_prompt(shots, language)
        assert example.chat and example.prompt == task
        assert example.completion.startswith(prefill) and prefill == example.fields["prefill"]
        first, second = example.completion[len(prefill):].split("\n")[:2]
        assert 3 <= count_words(first) <= 500
        assert second.startswith(render_prompt("self_instruct_item", language, index=count + 2, text=""))


@pytest.mark.parametrize("language", LANGUAGES)
def test_judge_answers_yes_to_writing_requests_and_no_to_short_questions(stream, language):
    judged = of_kind(stream, "judge", language)
    yes, no = tiny_corpus.LEXICONS[language].judge_answers
    assert {example.completion for example in judged} == {yes, no}
    for example in judged:
        assert example.fields["instruction"] in example.prompt


@pytest.mark.parametrize("language", LANGUAGES)
def test_rewrites_carry_the_constraint(stream, language):
    for example in of_kind(stream, "rewrite", language):
        assert example.prompt == render_prompt("length_rewrite", language, **example.fields)
        assert example.fields["constraint"] in example.completion
        assert example.fields["query"].rstrip(".。") in example.completion


def test_fill_draws_distinct_values_for_numbered_fields():
    rng = random.Random(0)
    for _ in range(50):
        first, second = tiny_corpus.fill("{abstract}|{abstract2}", rng, tiny_corpus.EN, "kites").split("|")
        assert first != second
