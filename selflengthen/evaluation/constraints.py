"""Length constraints: "about 3000 words", "2000字至4000字", "不少于三千五百字", "under 4k words".

``find_constraint`` reads the constraint out of a constraint field or out of free query text (both
languages; Arabic digits with thousands separators and ``k``/``千``/``万`` multipliers; Chinese
numerals); ``parse_constraint`` is the same but raises ``ConstraintNotFound`` when there is none.

How a text is read:
- a number is a length when a unit follows it (words, characters, 字) or a word-count label (字数,
  word count, length) comes shortly before it;
- a length preceded by another number and a range separator (``-``, ``to``, ``and``, ``至``, ``到``)
  is a range ("between 2000 and 4000 words", "2000字至3000字");
- otherwise the cue nearest before the number decides (about/约, more than/不少于, under/不超过 ...),
  then a cue right after it (左右, 以上, 以内, or more ...), and a bare length ("a 2000-word story",
  "写一篇3000字的文章") means about that length;
- when a text states several lengths, the largest is the constraint (the total, not a per-part limit).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from selflengthen.errors import DataError

ConstraintType = Literal["about", "range", "above", "below"]
CONSTRAINT_TYPES: tuple[ConstraintType, ...] = ("about", "range", "above", "below")

# The interval [a, b] of each type as multiples of the target T (docs/method.md, "Evaluation", LonGen).
SPANS: dict[str, tuple[float, float]] = {"about": (0.8, 1.2), "above": (1.0, 1.5), "below": (0.5, 1.0)}


class ConstraintNotFound(DataError, ValueError):
    """The text states no length constraint that the parser can read (a ValueError too, so a
    pydantic validator reports it with the row's line)."""


@dataclass(frozen=True)
class LengthConstraint:
    """A length requirement: ``target`` is T (about/above/below) or the lower bound of a range."""

    type: ConstraintType
    target: int
    upper: int | None = None

    def interval(self) -> tuple[float, float]:
        """The interval [a, b] of lengths that score 1."""
        if self.upper is not None:
            return float(self.target), float(self.upper)
        low, high = SPANS[self.type]
        return low * self.target, high * self.target

    @property
    def largest(self) -> int:
        return self.target if self.upper is None else self.upper


# ----------------------------------------------------------------------------- numbers

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_MYRIAD = 10_000
_MULTIPLIERS = {"k": 1000, "千": 1000, "万": _CN_MYRIAD}


def _chinese_section(text: str, outer_unit: int | None) -> int:
    """A numeral below 万. ``outer_unit`` is the unit just before it (万), for the short form 一万二."""
    value = 0
    digit: int | None = None
    last_unit = outer_unit
    after_zero = False
    for char in text:
        if char in _CN_DIGITS:
            if digit:  # two digits in a row (二三)
                raise ValueError(text)
            digit = _CN_DIGITS[char]
            after_zero = after_zero or digit == 0
        else:
            unit = _CN_UNITS[char]
            if last_unit is not None and unit >= last_unit:  # units must fall (百百, 十百)
                raise ValueError(text)
            value += (1 if digit is None else digit) * unit
            digit, last_unit, after_zero = None, unit, False
    if digit:  # a trailing digit right after a unit is the colloquial short form: 三千五 = 3500
        value += digit * last_unit // 10 if last_unit is not None and not after_zero else digit
    return value


def chinese_numeral(text: str) -> int:
    """The value of a Chinese numeral: 三千五百 -> 3500, 两万 -> 20000, 十五 -> 15, 三千五 -> 3500.

    A trailing digit right after a unit is the colloquial short form (一万二 -> 12000), except after
    零 (一千零五 -> 1005). Raises ValueError on anything malformed (二三, 百百, 万万).
    """
    if not text or any(char not in _CN_DIGITS and char not in _CN_UNITS and char != "万" for char in text):
        raise ValueError(f"not a Chinese numeral: {text!r}")
    high, myriad, low = text.partition("万")
    if "万" in low:
        raise ValueError(f"malformed Chinese numeral: {text!r}")
    if not myriad:
        return _chinese_section(text, None)
    return (_chinese_section(high, None) if high else 1) * _CN_MYRIAD + _chinese_section(low, _CN_MYRIAD)


def _number(token: str) -> int:
    """The value of one number token: 4,000 / 2.5k / 1.5万 / 三千五百."""
    token = token.strip()
    if not token[0].isdigit():
        return chinese_numeral(token)
    multiplier = _MULTIPLIERS.get(token[-1].lower(), 1)
    return round(float(token.rstrip("kK千万").strip().replace(",", "")) * multiplier)


# ----------------------------------------------------------------------------- patterns

_NUMBER = r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?)(?:\s*[kK](?![a-zA-Z])|[千万])?|[零〇一二两三四五六七八九十百千万]+)"
_UNIT = r"\s*-?\s*(?:words?\b|characters?\b|个?汉?字(?![母节]))"
_MENTION = re.compile(rf"(?<![\d.,])(?P<number>{_NUMBER})(?P<plus>\s*\+)?(?P<unit>{_UNIT})?", re.IGNORECASE)
_RANGE_START = re.compile(rf"(?<![\d.,])(?P<low>{_NUMBER})(?:{_UNIT})?\s*(?:-|–|—|~|〜|to\b|and\b|至|到)\s*$", re.IGNORECASE)
_LABEL = re.compile(r"(?:字数|篇幅|word\s*count|word\s*limit|length)[^\d\n]{0,12}$", re.IGNORECASE)
_WINDOW = 40

# Cues per type. Negated forms (不超过, no more than) start earlier than the cue they contain
# (超过, more than), so the leftmost match that reaches the number picks them.
_NOT = r"不[得能可要应宜]?"
_BEFORE_CUES = {
    "below": (
        r"less than|fewer than|shorter than|no more than|not more than|no longer than|not longer than|not to exceed|"
        r"not exceed(?:ing)?|at most|up to|under|below|within|max(?:imum)?(?: of)?|"
        rf"{_NOT}(?:超过|超出|多于|大于|高于)|小于|少于|低于|最多|至多"
    ),
    "above": (
        r"more than|greater than|longer than|no less than|not less than|no fewer than|not fewer than|at least|"
        r"over|beyond|exceed(?:s|ing)?|in excess of|upwards of|min(?:imum)?(?: of)?|"
        rf"{_NOT}(?:少于|低于|小于)|大于|多于|超过|超出|高于|至少|最少|起码"
    ),
    "about": r"about|around|approximately|approx\.?|roughly|nearly|close to|circa|some|~|大约|大概|大致|约|差不多|将近|接近",
}
_AFTER_CUES = {
    "below": r"or less|or fewer|or under|at most|max(?:imum)?|以内|之内|以下|内(?!容)",
    "above": r"or more|or longer|and above|at least|min(?:imum)?|以上|起",
    "about": r"or so|左右|上下",
}
_FILLER = r"(?:\s+|[为是在达:]|\b(?:a|an|the|of|just|only)\b)*"


def _cue_pattern(cues: dict[str, str], before: bool) -> re.Pattern[str]:
    groups = "|".join(f"(?P<{kind}>{alternatives})" for kind, alternatives in cues.items())
    if before:
        return re.compile(rf"(?<![a-z])(?:{groups}){_FILLER}$", re.IGNORECASE)
    return re.compile(rf"^\s*(?:{groups})(?![a-z])", re.IGNORECASE)


_BEFORE = _cue_pattern(_BEFORE_CUES, before=True)
_AFTER = _cue_pattern(_AFTER_CUES, before=False)


def _cue(pattern: re.Pattern[str], window: str) -> ConstraintType | None:
    match = pattern.search(window)
    return match.lastgroup if match else None  # type: ignore[return-value]


def _read_mention(text: str, match: re.Match[str]) -> LengthConstraint | None:
    """The constraint one number of ``text`` states, or None when it is not a length."""
    before = text[max(0, match.start() - _WINDOW) : match.start()]
    range_start = _RANGE_START.search(before)
    label_window = before[: range_start.start()] if range_start else before
    if not match["unit"] and not _LABEL.search(label_window):
        return None
    try:
        value = _number(match["number"])
        low = _number(range_start["low"]) if range_start else None
    except ValueError:
        return None
    if low is not None:
        return LengthConstraint("range", *sorted((low, value)))
    if match["plus"]:
        return LengthConstraint("above", value)
    kind = _cue(_BEFORE, before) or _cue(_AFTER, text[match.end() : match.end() + _WINDOW]) or "about"
    return LengthConstraint(kind, value)


def find_constraint(text: str) -> LengthConstraint | None:
    """The length constraint stated in ``text`` (a constraint field or a whole query), or None."""
    text = unicodedata.normalize("NFKC", text)
    found = [c for m in _MENTION.finditer(text) if (c := _read_mention(text, m)) is not None and c.target > 0]
    return max(found, key=lambda c: c.largest, default=None)


def parse_constraint(text: str) -> LengthConstraint:
    """Like ``find_constraint`` but raises ConstraintNotFound, quoting the text, when there is none."""
    constraint = find_constraint(text)
    if constraint is None:
        preview = text if len(text) <= 80 else text[:77] + "..."
        raise ConstraintNotFound(f"no length constraint (like 'about 3000 words' or '不少于3000字') found in {preview!r}")
    return constraint
