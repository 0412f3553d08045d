import pytest

from selflengthen.prompts import PROMPT_NAMES, is_affirmative, packaged_seeds, render_prompt, self_instruct_prompt


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_every_template_exists_for_both_languages(name, language):
    fields = {"min_words": 2000, "examples": "E", "index": 1, "text": "T", "instruction": "I", "query": "Q", "response": "R", "constraint": "C"}
    assert render_prompt(name, language, **fields).strip()


def test_missing_field_is_named():
    with pytest.raises(KeyError, match="needs field 'response'"):
        render_prompt("extend", "en", query="q")


def test_extend_prompt_holds_query_and_text():
    prompt = render_prompt("extend", "en", query="Write about rivers.", response="Rivers flow.")
    assert "Write about rivers." in prompt and prompt.rstrip().endswith("Rivers flow.")
    assert "repeat" in prompt  # forbids repetition and padding
    assert "{" not in prompt


@pytest.mark.parametrize(("language", "open_label", "stop"), [("en", "Instruction 3: ", "Instruction 4"), ("zh", "指令3：", "指令4")])
def test_self_instruct_prompt_ends_with_open_label(language, open_label, stop):
    prompt, stop_marker = self_instruct_prompt(["first seed", "second seed"], language, 2000)
    assert prompt.endswith(open_label)
    assert stop_marker == stop
    assert "first seed" in prompt and "second seed" in prompt
    assert "2000" in prompt


def test_judge_answers():
    assert is_affirmative("Yes, it is.", "en") and not is_affirmative("No.", "en")
    assert is_affirmative("是的", "zh") and not is_affirmative("否", "zh")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_packaged_seeds(language):
    seeds = packaged_seeds(language)
    assert len(seeds) >= 10 and len(set(seeds)) == len(seeds)
