"""Judge rubrics, lenient reading of judge answers, retries, unscored counts and aggregate scores."""

import asyncio
import json

import pytest
from fastapi import HTTPException

from selflengthen.config import SamplingConfig
from selflengthen.evaluation.benchmarks import JudgeInput
from selflengthen.evaluation.judge import RUBRICS, UnreadableAnswer, Verdict, extract_scores, judge_all, summarize_quality

LBW = RUBRICS["longbench-write"]
SL = RUBRICS["self-lengthen"]
SCORES_A = {"Relevance": 5, "Accuracy": 4, "Coherence": 4, "Clarity": 3, "Breadth and Depth": 2, "Reading Experience": 4}
SCORES_B = {"Relevance": 3, "Accuracy": 4, "Coherence": 2, "Clarity": 5, "Breadth and Depth": 4, "Reading Experience": 4}
SCORES_C = dict.fromkeys(LBW.dimensions, 4)


def as_floats(scores: dict) -> dict:
    return {key: float(value) for key, value in scores.items()}


# ----------------------------------------------------------------------------- reading answers


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps({"Analysis": "Solid.", **SCORES_A}),
        "Here is my evaluation:\n```json\n" + json.dumps({"Analysis": "Solid.\nReally.", **SCORES_A}, indent=1) + "\n```\nDone.",
        '{"Analysis": "multi\nline", "Relevance": 5, "Accuracy": 4, "Coherence": 4, "Clarity": 3, '
        '"Breadth and Depth": 2, "Reading Experience": 4,}',  # raw newline in a string, trailing comma
        "{'Analysis': \"it's fine\", 'Relevance': 5, 'Accuracy': 4, 'Coherence': 4, 'Clarity': 3, "
        "'Breadth and Depth': 2, 'Reading Experience': 4}",  # Python quoting
        '{"relevance": "5", "ACCURACY": "4/5", "coherence": 4.0, "clarity": "3 out of 5", '
        '"Breadth & Depth": 2, "reading_experience": 4}',  # numeric strings, loose key names
        '{"Analysis": "x", "scores": ' + json.dumps(SCORES_A) + "}",  # nested
        json.dumps({"Relevance": 1}) + " then the full verdict " + json.dumps(SCORES_A),  # last complete object wins
    ],
)
def test_scores_are_read_leniently(answer):
    assert extract_scores(answer, LBW) == as_floats(SCORES_A)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("The response is good.", "no JSON object in the answer"),
        ('{"Relevance": 5, "Accuracy": 4}', "no score for Coherence, Clarity, Breadth and Depth, Reading Experience"),
        (json.dumps({**SCORES_A, "Clarity": 7}), "Clarity is 7, not a number from 1 to 5"),
        (json.dumps({**SCORES_A, "Clarity": 0}), "Clarity is 0, not a number from 1 to 5"),
        (json.dumps({**SCORES_A, "Clarity": True}), "Clarity is True, not a number from 1 to 5"),
        (json.dumps({**SCORES_A, "Clarity": "good"}), "Clarity is 'good', not a number from 1 to 5"),
        (json.dumps({**SCORES_A, "Clarity": None}), "Clarity is None, not a number from 1 to 5"),
    ],
)
def test_unreadable_answers_say_why(answer, problem):
    with pytest.raises(UnreadableAnswer) as error:
        extract_scores(answer, LBW)
    assert str(error.value) == problem


@pytest.mark.parametrize("rubric", [LBW, SL])
def test_a_judge_echoing_its_prompt_is_not_scored(rubric):
    with pytest.raises(UnreadableAnswer):
        extract_scores(rubric.prompt("Write {a} story.", "Once upon a time {x}."), rubric)


def test_prompts_hold_the_request_and_response_and_the_rubric_dimensions():
    prompt = SL.prompt("Write about {rivers}.", "Rivers flow.")
    assert "Write about {rivers}." in prompt and "Rivers flow." in prompt
    assert all(dimension in prompt for dimension in SL.dimensions)
    assert "1 to 5" in LBW.retry_prompt("no JSON object in the answer")


# ----------------------------------------------------------------------------- aggregation


def item(response: str = "text", length: int | None = None) -> JudgeInput:
    return JudgeInput(prompt="Write.", response=response, length=length)


def test_longbench_write_summary_by_hand():
    verdicts = [Verdict(as_floats(SCORES_A), 1), Verdict(as_floats(SCORES_B), 1), Verdict(None, 4, "unreadable", "x")]
    summary = summarize_quality(LBW, [item(), item(), item()], verdicts)
    # Relevance (5+3)/2=4 -> 75; Accuracy 4 -> 75; Coherence 3 -> 50; Clarity 4 -> 75; Breadth 3 -> 50; Reading 4 -> 75
    assert summary["dimensions"] == pytest.approx(
        {"Relevance": 75, "Accuracy": 75, "Coherence": 50, "Clarity": 75, "Breadth and Depth": 50, "Reading Experience": 75}
    )
    assert summary["S_q"] == pytest.approx(400 / 6)
    assert summary["overall"] == pytest.approx(400 / 6)  # no required lengths: no S_l
    assert "S_l" not in summary
    assert (summary["count"], summary["scored"], summary["unscored"]) == (3, 2, 1)
    assert summary["unscored_reasons"] == {"unreadable": 1}


def test_longbench_write_headline_is_the_mean_of_s_l_and_s_q():
    items = [item("one two", length=2), item("one", length=2)]  # S_l 100 and 50
    summary = summarize_quality(LBW, items, [Verdict(as_floats(SCORES_C), 1), Verdict(as_floats(SCORES_C), 1)])
    assert summary["S_l"] == pytest.approx(75.0)
    assert summary["S_q"] == pytest.approx(75.0)
    assert summary["overall"] == pytest.approx(75.0)
    summary = summarize_quality(LBW, items, [Verdict(as_floats(SCORES_A), 1), Verdict(None, 1, "request_failed")])
    assert summary["S_q"] == pytest.approx((100 + 75 + 75 + 50 + 25 + 75) / 6)
    assert summary["overall"] == pytest.approx((75.0 + 400 / 6) / 2)


def test_self_lengthen_summary_is_on_the_1_to_10_scale():
    first = dict(zip(SL.dimensions, [10.0, 8, 6, 4, 2, 1, 5]))
    second = dict(zip(SL.dimensions, [8.0, 8, 6, 6, 2, 3, 5]))
    summary = summarize_quality(SL, [item(length=10), item(length=10)], [Verdict(first, 1), Verdict(second, 2)])
    assert summary["dimensions"] == pytest.approx(dict(zip(SL.dimensions, [9, 8, 6, 5, 2, 2, 5])))
    assert summary["overall"] == summary["S_q"] == pytest.approx(37 / 7)
    assert "S_l" not in summary


def test_nothing_scored_gives_no_score_rather_than_a_default():
    summary = summarize_quality(LBW, [item(length=5)], [Verdict(None, 4, "unreadable", "no JSON object in the answer")])
    assert summary["S_q"] is None and summary["overall"] is None
    assert set(summary["dimensions"].values()) == {None}
    assert summary["unscored"] == 1


# ----------------------------------------------------------------------------- against a scripted judge


def scripted_judge(messages: list[dict]) -> str:
    """Answers by the response under judgement; a retry request has the failed answer and a reminder."""
    response = messages[0]["content"].split("<Response>")[1].split("</Response>")[0].strip()
    retry = len(messages) == 3
    if response == "GOOD-A":
        return json.dumps({"Analysis": "Clear.", **SCORES_A})
    if response == "GOOD-B":
        return "Analysis first.\n```json\n" + json.dumps(SCORES_B) + "\n```"
    if response == "RETRY":
        return json.dumps(SCORES_C) if retry else "It reads well, I would say four."
    if response == "REFUSE":
        raise HTTPException(status_code=400, detail="prompt is longer than the context")
    return "no idea"


def test_judging_against_a_scripted_server(scripted_server):
    server = scripted_server(scripted_judge)
    items = [item(response, length=2) for response in ["GOOD-A", "GOOD-B", "RETRY", "NEVER", "REFUSE"]]
    sampling = SamplingConfig(temperature=0.0, max_tokens=64)
    verdicts = asyncio.run(judge_all(server.endpoint(), LBW, items, sampling, retries=2))

    assert [v.attempts for v in verdicts] == [1, 1, 2, 3, 1]
    assert [v.reason for v in verdicts] == [None, None, None, "unreadable", "refused"]
    assert verdicts[3].detail == "no JSON object in the answer" and verdicts[3].answer == "no idea"
    assert "prompt is longer than the context" in verdicts[4].detail
    failed_answers = [r["messages"][1] for r in server.requests if len(r["messages"]) == 3]
    assert {"role": "assistant", "content": "It reads well, I would say four."} in failed_answers
    assert len(server.requests) == 1 + 1 + 2 + 3 + 1

    summary = summarize_quality(LBW, items, verdicts)
    # A, B and C scored: Relevance 4, Accuracy 4, Coherence 10/3, Clarity 4, Breadth 10/3, Reading 4
    s_q = (4 * 75 + 2 * (10 / 3 - 1) * 25) / 6
    s_l = (100 + 100 + 50 + 50 + 50) / 5  # "GOOD-A" counts two words, "RETRY" one, against 2 required
    assert summary["S_q"] == pytest.approx(s_q)
    assert summary["S_l"] == pytest.approx(s_l)
    assert summary["overall"] == pytest.approx((s_q + s_l) / 2)
    assert summary["unscored_reasons"] == {"unreadable": 1, "refused": 1}
