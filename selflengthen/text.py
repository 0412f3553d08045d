"""Text utilities of the method: length counters, the midpoint split, language detection and checks.

Every function here runs on every record of a stage, so each scans a text at memory speed: the
regular expressions match runs (not single characters), character classes are counted on the
UTF-8 bytes with ``bytes.translate`` and ``bytes.count``, and the repeated n-gram check hashes
every n-gram with numpy before it looks at tokens at all (numpy is loaded by the first check, not
by every command that imports this module). The results are those of the plain
definitions given in each docstring (tests/test_text_equivalence.py compares the two on generated
texts).
"""

from __future__ import annotations

import re
from functools import lru_cache

from selflengthen.config import Language, LanguageChecks

# CJK ideographs, CJK symbols and punctuation, full-width forms (docs/method.md, "Counting length").
_WIDE_RANGES = ((0x4E00, 0x9FFF), (0x3000, 0x303F), (0xFF00, 0xFFEF))
_WIDE_CLASS = "".join(f"{chr(low)}-{chr(high)}" for low, high in _WIDE_RANGES)
_WIDE_RUN = re.compile(f"[{_WIDE_CLASS}]+")
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_PARAGRAPH_BREAK = re.compile(r"(\n(?:[ \t]*\n)+)")
_LINE_BREAK = re.compile(r"(\n)")
_CJK_NGRAM_TOKEN = re.compile(f"[{_WIDE_CLASS}]|[\\x21-\\x7e]+")

# The characters str.split() separates at (str.isspace()): ASCII ones, and these others.
_ASCII_SPACES = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
_OTHER_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_ASCII = bytes(range(128))
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = b"0123456789_"


def _byte_map(marked: bytes) -> bytes:
    """A ``bytes.translate`` table sending the bytes ``marked`` to b"x" and every other byte to a space."""
    return bytes(ord("x") if byte in marked else ord(" ") for byte in range(256))


_TOKEN_MAP = _byte_map(bytes(byte for byte in range(256) if byte not in _ASCII_SPACES))
_WORD_MAP = _byte_map(_LETTERS + _DIGITS)  # word characters (\w) among the bytes left
_LATIN_MAP = _byte_map(_LETTERS)

COUNTERS = ("selflengthen", "longbench")


class _Scan:
    """A text with its UTF-8 bytes and its non-ASCII characters (a short string for English text),
    each computed at C speed when first needed, then kept."""

    __slots__ = ("text", "_data", "_extra")

    def __init__(self, text: str) -> None:
        self.text = text
        self._data: bytes | None = None
        self._extra: str | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.text.encode("utf-8")
        return self._data

    @property
    def extra(self) -> str:
        if self._extra is None:
            self._extra = "" if self.text.isascii() else self.data.translate(None, _ASCII).decode("utf-8")
        return self._extra

    def holds(self, pattern: re.Pattern) -> bool:
        """Whether ``pattern`` (of non-ASCII characters) occurs; looks at the start, then at the
        non-ASCII characters only."""
        if self.text.isascii():
            return False
        return bool(pattern.search(self.text, 0, 256) or pattern.search(self.extra))

    def replaced(self, pattern: re.Pattern, replacement: str) -> tuple[_Scan, int]:
        """The text with each run matched by ``pattern`` (of non-ASCII characters) replaced, and
        how many characters were replaced."""
        if not self.holds(pattern):
            return self, 0
        rest, runs = pattern.subn(replacement, self.text)
        return _Scan(rest), len(self.text) - len(rest) + runs * len(replacement)

    def runs(self, table: bytes, delete: bytes = b"") -> int:
        """Maximal runs of the bytes that ``table`` marks (after deleting the bytes ``delete``)."""
        marked = self.data.translate(table, delete)
        return marked.count(b" x") + marked.startswith(b"x")


def count_words(text: str, counter: str = "selflengthen") -> int:
    """Length of ``text``: words for English, characters for Chinese.

    ``selflengthen``: each CJK ideograph, CJK punctuation or full-width form counts one; those
    characters are then replaced by spaces and the whitespace-separated tokens are added.
    ``longbench``: CJK ideographs plus matches of ``\\b[a-zA-Z]+\\b``.
    """
    if counter == "selflengthen":
        scan, wide = _Scan(text).replaced(_WIDE_RUN, " ")
        return wide + _whitespace_token_count(scan)
    if counter == "longbench":
        return _longbench_count(text)
    raise ValueError(f"unknown counter {counter!r}; expected one of {', '.join(COUNTERS)}")


def _whitespace_token_count(scan: _Scan) -> int:
    """``len(text.split())``."""
    if scan.holds(_OTHER_SPACE):
        scan = _Scan(_OTHER_SPACE.sub(" ", scan.text))
    return scan.runs(_TOKEN_MAP)


def _longbench_count(text: str) -> int:
    """CJK ideographs plus ``\\b[a-zA-Z]+\\b`` matches: maximal runs of word characters (``\\w``,
    Unicode-aware: str.isalnum() or "_") made of ASCII letters only."""
    scan, han = _Scan(text).replaced(_HAN_RUN, "0")  # an ideograph is a word character, not a letter
    others = {char for char in set(scan.extra) if char.isalnum()}
    if others:  # other scripts' letters and digits: word characters too
        scan = _Scan(re.sub("[" + "".join(map(re.escape, sorted(others))) + "]", "0", scan.text))
    # Non-ASCII bytes left are not word characters. Runs holding a digit, "_" or one of those stay
    # runs when the letters are deleted; runs of letters only vanish.
    return han + scan.runs(_WORD_MAP) - scan.runs(_WORD_MAP, delete=_LETTERS)


def _pieces(text: str) -> list[str]:
    """Alternating [piece, separator, piece, ...]: blank-line paragraphs, else single lines."""
    parts = _PARAGRAPH_BREAK.split(text)
    if len(parts) // 2 + 1 <= 2:
        parts = _LINE_BREAK.split(text)
    return parts


def split_halves(text: str) -> tuple[str, str]:
    """Split at the paragraph-count midpoint: the first half holds the first floor(n/2) pieces.

    Pieces are blank-line-separated paragraphs, or single lines when there are 2 or fewer
    paragraphs. ``first + separator + second == text`` where separator is the original break
    between the halves (empty when the first half is empty).
    """
    parts = _pieces(text)
    count = len(parts) // 2 + 1
    half = count // 2
    if half == 0:
        return "", text
    cut = 2 * half - 1  # index of the separator after the half-th piece
    return "".join(parts[:cut]), "".join(parts[cut + 1 :])


def split_pieces(text: str) -> list[str]:
    """The pieces (paragraphs, or lines as fallback) of ``text``, separators dropped."""
    return _pieces(text)[::2]


def keep_leading_fraction(text: str, fraction: float) -> str:
    """The first ``fraction`` of the pieces of ``text`` (at least one), original separators kept."""
    parts = _pieces(text.strip())
    count = len(parts) // 2 + 1
    keep = max(1, int(count * fraction))
    return "".join(parts[: 2 * keep - 1]).strip()


def detect_language(text: str) -> Language:
    """``zh`` when Chinese ideographs (U+4E00-U+9FFF) outnumber Latin words (maximal runs of
    A-Z/a-z), else ``en``. No network, no model."""
    if not text or text.isspace():
        raise ValueError("cannot detect the language of empty text")
    scan = _Scan(text)
    han = scan.replaced(_HAN_RUN, "")[1]
    latin = scan.runs(_LATIN_MAP)
    return "zh" if han > latin else "en"


# ---------------------------------------------------------------------------- checks (docs/method.md, step 4)

REASONS = ("empty", "truncated", "no_final_punctuation", "repeated_ngram", "meta_commentary")


def check_ending(text: str, enders: str) -> str | None:
    stripped = text.rstrip()
    if not stripped:
        return "empty"
    return None if stripped[-1] in enders else "no_final_punctuation"


def ngram_tokens(text: str, unit: str) -> list[str]:
    """The n-gram tokens: whitespace-separated, or (``cjk``) each CJK character and each run of
    non-space printable ASCII."""
    if unit == "whitespace":
        return text.split()
    if unit == "cjk":
        return _CJK_NGRAM_TOKEN.findall(text)
    raise ValueError(f"unknown n-gram unit {unit!r}")


def find_repeated_ngram(text: str, n: int, unit: str) -> tuple[str, ...] | None:
    """The first n-gram (in order of its second occurrence) that occurs twice, or None.

    Every n-gram is hashed first (:func:`_may_repeat`); the tokens are compared only when two
    hashes are equal, which in a text that passes is (all but) never."""
    if unit not in ("whitespace", "cjk"):
        raise ValueError(f"unknown n-gram unit {unit!r}")
    if not text or not _may_repeat(text, n, unit):
        return None
    tokens = ngram_tokens(text, unit)
    seen: set[tuple[str, ...]] = set()
    for start in range(len(tokens) - n + 1):
        gram = tuple(tokens[start : start + n])
        if gram in seen:
            return gram
        seen.add(gram)
    return None


# ---------------------------------------------------------------------------- n-gram hashes
#
# Building a tuple of tokens per position costs about 300 ns a token; hashing every n-gram costs a
# few numpy passes over the text. Distinct hashes prove that no n-gram repeats; equal ones send the
# caller to compare the tokens themselves. A token's hash (whitespace unit: of its UTF-8 bytes; cjk
# unit: of an ASCII run) mixes its length, its first 8 and its last 8 bytes, so equal tokens hash
# equally wherever they stand (tokens that differ only inside a long one are told apart by the
# comparison); a CJK character's hash is its code point (ASCII runs' hashes have the top bit set,
# so the two never meet). An n-gram's hash is sum(token_hash[i + k] * Q ** (n - 1 - k)) modulo
# 2 ** 64, built by doubling (2-grams from 1-grams, 4-grams from 2-grams...).

_K1, _K2, _Q = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x100000001B3
_ZERO_SEPARATORS = bytes.maketrans(_ASCII_SPACES, bytes(len(_ASCII_SPACES)))
_RUN_BIT = 1 << 63
_ALL_ONES = (1 << 64) - 1


def _numpy():
    import numpy

    return numpy


def _may_repeat(text: str, n: int, unit: str) -> bool:
    """False when no n-gram of ``text``'s ``unit`` tokens occurs twice; True when one may."""
    hashes = _whitespace_token_hashes(text) if unit == "whitespace" else _cjk_token_hashes(text)
    if len(hashes) - n + 1 < 2:
        return False
    grams = _gram_hashes(hashes, n)
    grams.sort()
    return bool((grams[1:] == grams[:-1]).any())


def _gram_hashes(hashes, n: int):
    """The hash of every n-gram of the token hashes ``hashes``."""
    np = _numpy()
    total = len(hashes)
    grams, length = None, 0
    block, span = hashes, 1  # hashes of every span-gram
    while True:
        if n & span:  # append a span-gram to the grams built so far
            if grams is None:
                grams, length = block, span
            else:
                count = total - length - span + 1
                grams = grams[:count] * np.uint64(pow(_Q, span, 1 << 64)) + block[length : length + count]
                length += span
        if 2 * span > n:
            return grams
        count = total - 2 * span + 1
        block = block[:count] * np.uint64(pow(_Q, span, 1 << 64)) + block[span : span + count]
        span *= 2


def _run_hashes(marked):
    """Where each run of non-zero bytes of the uint8 array ``marked`` begins, and each run's hash
    (of its length, its first 8 and its last 8 bytes: equal runs hash equally)."""
    np = _numpy()
    padded = np.concatenate((np.zeros(8, np.uint8), marked, np.zeros(8, np.uint8)))
    inside = padded != 0
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1  # a run's first byte, the byte after its last, ...
    starts, ends = edges[0::2], edges[1::2]
    octets = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # the 8 bytes from each offset
    lengths = (ends - starts).astype(np.uint64)
    short = lengths < 8
    head = octets[starts] & np.where(short, (np.uint64(1) << (np.minimum(lengths, 7) * np.uint64(8))) - np.uint64(1), np.uint64(_ALL_ONES))
    tail = np.where(short, np.uint64(0), octets[ends - 8])
    return starts - 8, head * np.uint64(_K1) + tail * np.uint64(_K2) + lengths


def _whitespace_token_hashes(text: str):
    np = _numpy()
    scan = _Scan(text)
    if scan.holds(_OTHER_SPACE):
        scan = _Scan(_OTHER_SPACE.sub(" ", text))
    return _run_hashes(np.frombuffer(scan.data.translate(_ZERO_SEPARATORS), dtype=np.uint8))[1]


def _cjk_token_hashes(text: str):
    np = _numpy()
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    token = np.zeros(len(points), dtype=bool)  # where a token begins: a CJK character or an ASCII run
    for low, high in _WIDE_RANGES:
        token |= (points >= low) & (points <= high)
    hashes = points.astype(np.uint64)
    ascii_run = (points >= 0x21) & (points <= 0x7E)
    if ascii_run.any():
        starts, run_hashes = _run_hashes(np.where(ascii_run, points, 0).astype(np.uint8))
        hashes[starts] = run_hashes | np.uint64(_RUN_BIT)
        token[starts] = True
    return hashes[token]


@lru_cache(maxsize=64)
def _meta_matcher(words: tuple[str, ...]) -> tuple[re.Pattern, tuple[str, ...] | None]:
    """The meta words' pattern, and the words in lower case when all are ASCII: then an ASCII line
    holds a match only if its lower-case form holds one of them (str.find is far faster than a
    case-insensitive alternation); None when a word has other characters (re.IGNORECASE lets "ſ"
    match "s", "K" match "k"...)."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    return pattern, tuple(w.lower() for w in words) if all(w.isascii() for w in words) else None


def _edge_lines(text: str, count: int, from_end: bool) -> list[str]:
    """The first (or last) ``count`` non-empty lines of ``text`` (lines as str.splitlines() cuts
    them), read from a growing slice of the text's start (or end) rather than from all its lines."""
    size = 1024
    while True:
        whole = size >= len(text)
        chunk = text if whole else (text[-size:] if from_end else text[:size])
        lines = chunk.splitlines()
        if not whole:  # the line cut by the slice may be partial
            lines = lines[1:] if from_end else lines[:-1]
        lines = [line for line in lines if line.strip()]
        if whole or len(lines) >= count:
            return lines[-count:] if from_end else lines[:count]
        size *= 4


def find_meta_commentary(text: str, words: list[str], head: int, tail: int) -> str | None:
    """A meta word (whole word, any case) found in the first ``head`` or last ``tail`` non-empty
    lines, or None."""
    if not words:
        return None
    window = (_edge_lines(text, head, from_end=False) if head else []) + (_edge_lines(text, tail, from_end=True) if tail else [])
    pattern, lowered_words = _meta_matcher(tuple(words))
    for line in window:
        if lowered_words is not None and line.isascii():
            lowered = line.lower()
            if not any(word in lowered for word in lowered_words):
                continue
        match = pattern.search(line)
        if match:
            return match.group(1)
    return None


def check_text(text: str, checks: LanguageChecks, finish_reason: str | None = None) -> str | None:
    """The reason ``text`` fails the checks (one of REASONS), or None when it passes."""
    if not text or text.isspace():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if checks.check_ending and check_ending(text, checks.enders):
        return "no_final_punctuation"
    if checks.check_repetition and find_repeated_ngram(text, checks.ngram_n, checks.ngram_unit):
        return "repeated_ngram"
    if checks.check_meta and find_meta_commentary(text, checks.meta_words, checks.meta_head_lines, checks.meta_tail_lines):
        return "meta_commentary"
    return None
