import pytest

from selflengthen.config import ChecksConfig
from selflengthen.text import (
    check_text,
    count_words,
    detect_language,
    find_meta_commentary,
    find_repeated_ngram,
    keep_leading_fraction,
    split_halves,
    split_pieces,
)

CHECKS = ChecksConfig()


class TestCountWords:
    def test_selflengthen_english_counts_whitespace_tokens(self):
        assert count_words("The quick brown fox, it's 12 feet.") == 7

    def test_selflengthen_chinese_counts_each_character_and_punctuation(self):
        # 4 ideographs + full-width comma + full-width full stop = 6, no other tokens
        assert count_words("你好世界，。") == 6

    def test_selflengthen_mixed_adds_tokens_left_after_replacing_wide_characters(self):
        # 中,文,， count 3; the rest "abc def 12" gives 3 tokens
        assert count_words("中文，abc def 12") == 6
        # a token glued to ideographs is split off by the replacement
        assert count_words("中文abc") == 3

    def test_selflengthen_fullwidth_forms_and_cjk_symbols(self):
        assert count_words("ＡＢ　「x」") == 6  # Ａ Ｂ ideographic space 「 」 + token x

    def test_longbench_counts_han_and_ascii_words_only(self):
        assert count_words("it's 12 apples", counter="longbench") == 3  # it, s, apples; numbers do not count
        assert count_words("你好，world！", counter="longbench") == 3
        assert count_words("Ｈｅｌｌｏ。", counter="longbench") == 0

    def test_longbench_word_glued_to_han_is_not_a_word(self):
        # Python's \b is Unicode-aware: no boundary between 文 and a
        assert count_words("中文abc", counter="longbench") == 2

    def test_empty(self):
        assert count_words("") == 0
        assert count_words("", counter="longbench") == 0

    def test_unknown_counter(self):
        with pytest.raises(ValueError, match="unknown counter 'words'"):
            count_words("x", counter="words")


class TestSplitHalves:
    def test_paragraph_midpoint(self):
        text = "p1\n\np2\n\np3\n\np4\n\np5"
        first, second = split_halves(text)
        assert (first, second) == ("p1\n\np2", "p3\n\np4\n\np5")
        assert first + "\n\n" + second == text

    def test_even_count(self):
        assert split_halves("a\n\nb\n\nc\n\nd") == ("a\n\nb", "c\n\nd")

    def test_falls_back_to_lines_with_two_paragraphs(self):
        text = "l1\nl2\n\nl3\nl4"
        first, second = split_halves(text)
        assert first + "\n" + second == text
        assert first == "l1\nl2"

    def test_three_paragraphs_use_paragraphs(self):
        assert split_halves("a\nx\n\nb\n\nc") == ("a\nx", "b\n\nc")

    def test_single_line_has_empty_first_half(self):
        assert split_halves("only one line") == ("", "only one line")

    def test_blank_lines_with_spaces_and_runs_are_one_break(self):
        text = "a\n  \nb\n\n\nc\n\nd"
        first, second = split_halves(text)
        assert first == "a\n  \nb"
        assert text == first + "\n\n\n" + second

    @pytest.mark.parametrize(
        "text",
        ["a\n\nb\n\nc", "x\ny\nz", "one\ntwo", "h\n\n\n\ni\n\nj\n\nk\n\nl\n\nm", "# T\n\nbody.\n\nmore.\n\nend."],
    )
    def test_reproduces_text_with_original_separator(self, text):
        first, second = split_halves(text)
        assert text.startswith(first) and text.endswith(second)
        separator = text[len(first) : len(text) - len(second)]
        assert separator.strip() == "" and "\n" in separator

    def test_pieces_and_keep_fraction(self):
        text = "a\n\nb\n\nc\n\nd\n\ne\n\nf"
        assert split_pieces(text) == list("abcdef")
        assert keep_leading_fraction(text, 2 / 3) == "a\n\nb\n\nc\n\nd"
        assert keep_leading_fraction("single", 2 / 3) == "single"


class TestLanguage:
    def test_detects(self):
        assert detect_language("This is an English sentence.") == "en"
        assert detect_language("这是一个中文句子，包含一些English单词。") == "zh"

    def test_empty_raises(self):
        with pytest.raises(ValueError):
            detect_language("  ")


class TestChecks:
    def test_ending_punctuation_language_aware(self):
        assert check_text("A complete sentence.", CHECKS.en) is None
        assert check_text("没有结束", CHECKS.zh) == "no_final_punctuation"
        # reference defect fixed: ASCII '.' ends a Chinese text too
        assert check_text("中文句子.", CHECKS.zh) is None
        assert check_text("引用的话。”", CHECKS.zh) is None
        assert check_text("He said \"go.\"", CHECKS.en) is None
        assert check_text("no ending", CHECKS.en) == "no_final_punctuation"

    def test_truncated_and_empty(self):
        assert check_text("Fine text.", CHECKS.en, finish_reason="length") == "truncated"
        assert check_text("   ", CHECKS.en) == "empty"

    def test_repeated_english_10gram(self):
        ten = "one two three four five six seven eight nine ten"
        assert check_text(f"{ten} and then {ten} again.", CHECKS.en) == "repeated_ngram"
        nine = "one two three four five six seven eight nine"
        assert check_text(f"{nine} a {nine} b.", CHECKS.en) is None
        assert find_repeated_ngram(f"{ten} x {ten}", 10, "whitespace") == tuple(ten.split())

    def test_repeated_chinese_13gram(self):
        thirteen = "一二三四五六七八九十甲乙丙"
        assert check_text(f"{thirteen}，{thirteen}。", CHECKS.zh) == "repeated_ngram"
        assert check_text(f"{thirteen[:12]}，{thirteen[:12]}。", CHECKS.zh) is None

    def test_meta_commentary_in_head_or_tail_only(self):
        body = "\n".join(f"Line {i} says something new." for i in range(10))
        assert check_text("Here is the revised text.\n" + body, CHECKS.en) == "meta_commentary"
        assert check_text(body + "\nThis version is longer.", CHECKS.en) == "meta_commentary"
        middle = body.split("\n")
        middle.insert(5, "A paragraph about rivers.")
        assert check_text("\n".join(middle), CHECKS.en) is None
        assert find_meta_commentary("Paragraphs everywhere.", ["paragraph"], 2, 3) is None  # whole words only
