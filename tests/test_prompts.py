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
    assert "repeat" in prompt and "as long, rich and engaging as you can" in prompt  # the reference's intent
    assert "{" not in prompt


@pytest.mark.parametrize(("language", "open_label", "stop"), [("en", "Instruction 3: ", "\nInstruction 4"), ("zh", "指令3：", "\n指令4")])
def test_self_instruct_prefill_ends_with_open_label_and_the_task_demands_no_length(language, open_label, stop):
    task, prefill, stop_marker = self_instruct_prompt(["first seed", "second seed"], language)
    assert prefill.endswith(open_label) and prefill.count("\n") == 2
    assert stop_marker == stop
    assert "first seed" in prefill and "second seed" in prefill
    assert not any(character.isdigit() for character in task)  # no length demand to copy into queries


def test_judge_answers():
    assert is_affirmative(" Yes\n", "en") and is_affirmative("是", "zh")
    assert not is_affirmative("Yes, it is.", "en") and not is_affirmative("是的", "zh")  # exact, as the reference
    assert is_affirmative("Yes, it is.", "en", "lenient") and not is_affirmative("No.", "en", "lenient")
    assert is_affirmative("是的", "zh", "lenient") and not is_affirmative("否", "zh", "lenient")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_packaged_seeds(language):
    seeds = packaged_seeds(language)
    assert len(seeds) >= 10 and len(set(seeds)) == len(seeds)
