"""Get the poem out of a model answer and check it against a syllable pattern (5-7-5).

Caps, so both run in bounded time and memory on any input (a reward loop or a data filter may be
fed megabytes): `check` and `extract_poem` read texts of at most MAX_TEXT_CHARS characters (a
longer text is not a haiku, and has no poem); `check` does not count lines over MAX_LINE_CHARS
(the line gets no count and the reason says so), and words over MAX_ESTIMATE_LETTERS letters are
counted by their vowel groups (see syllables). Real poems are far inside all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from haiku_kit.verify.syllables import MAX_ESTIMATE_LETTERS, MAX_LINE_CHARS, analyze_line

__all__ = [
    "LINE_COUNT_PENALTY",
    "MAX_ESTIMATE_LETTERS",
    "MAX_LINE_CHARS",
    "MAX_TEXT_CHARS",
    "Extraction",
    "HaikuCheck",
    "check",
    "extract_poem",
    "parse_pattern",
    "split_lines",
]

# Distance added per missing or extra line: about one short line's worth of syllables, so a
# 2-line answer is never closer than a 3-line answer that is a few syllables off.
LINE_COUNT_PENALTY = 5
MAX_TEXT_CHARS = 20_000  # a model answer of 1,000 tokens has about 5,000
_MEMO_MAX_CHARS = 1_000  # longer texts are checked each time, so the cache stays small


# (?<!\s) makes a match start only at the first space of a run: linear time on long blank runs.
_SLASH = re.compile(r"(?<!\s)\s+/\s+")


def split_lines(text: str) -> list[str]:
    """Lines of a poem: newlines, or ' / ' when the text is a single line. Stripped, no blanks."""
    text = text.strip()
    parts = text.splitlines() if "\n" in text or "\r" in text else _SLASH.split(text)
    return [p.strip() for p in parts if p.strip()]


# --------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class Extraction:
    poem: str
    stripped: tuple[str, ...] = ()  # kinds: think preamble signoff fence bold bullet quotes title

    @property
    def clean(self) -> bool:
        """Nothing but a think block had to be removed."""
        return all(kind == "think" for kind in self.stripped)


# Interjections only count as chat when punctuated ("Sure!", "Of course,"): unpunctuated they
# start real poem lines ("of course my parents", "Alright I can see").
_INTERJECTION = r"(?:sure|certainly|of course|absolutely|okay|ok|alright|great|gladly)"
_PREAMBLE = re.compile(
    rf"^({_INTERJECTION}(?:\s*[!,.:;]|\s*$)|happy to|here(?:'s| is| are)\b|below is"
    r"|this is a haiku|i(?:'ve| have) written|i(?:'ll| will) write|a haiku about"
    r"|haiku about|(?:my|your) haiku)",
    re.IGNORECASE,
)
_SIGNOFF = re.compile(
    r"^(i hope (?:you|this|that|it)\b|hope you|let me know|feel free|enjoy[!.]"
    r"|enjoy (?:it|this|the poem|the haiku|your)"
    r"|this haiku|the haiku|in this haiku|this poem|would you like|if you(?:'d| would) like"
    r"|want me to|i can also|i could also|note:|explanation|syllables?[: ]|\(?\d+-\d+-\d+\)?"
    r"|\(\d+ syllables|-{3,}|\*{3,}|_{3,})",
    re.IGNORECASE,
)
# Talk about the poem itself: the one kind of chat line stripped even from a 3-line answer.
_ABOUT_POEM = re.compile(r"\b(?:haikus?|poems?|syllables?)\b", re.IGNORECASE)
VERSE_LINES = 3
MAX_VERSE_WORDS = 12
_BULLET = re.compile(r"^(?:[-*•+>]|\d{1,2}[.)]|line \d+:)\s+", re.IGNORECASE)
_EMPHASIS = re.compile(r"(\*\*\*|\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1")
_TITLE_PREFIX = re.compile(r"^(?:title|haiku)\s*:\s*", re.IGNORECASE)
_QUOTE_PAIRS = {'"': '"', "\u201c": "\u201d", "'": "'", "\u2018": "\u2019", "\u00ab": "\u00bb"}


_THINK_OPEN = re.compile(re.escape("<think>"), re.IGNORECASE)
_THINK_CLOSE = re.compile(re.escape("</think>"), re.IGNORECASE)


def _drop_think(text: str, kinds: list[str]) -> str:
    """Drop <think>...</think> blocks (searched left to right: linear time)."""
    parts, pos = [], 0
    while (opened := _THINK_OPEN.search(text, pos)) and (
        closed := _THINK_CLOSE.search(text, opened.end())
    ):
        parts.append(text[pos : opened.start()])
        pos = closed.end()
    out = "".join(parts) + text[pos:]
    if opened := _THINK_OPEN.search(out):  # an unclosed think block: the model never answered
        out = out[: opened.start()]
    if last := _last(_THINK_CLOSE, out):  # the opening tag was in the prompt
        out = out[last.end() :]
    if out != text:
        kinds.append("think")
    return out


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # the last match is the one wanted
        pass
    return found


def _drop_fence(text: str, kinds: list[str]) -> str:
    m = re.search(r"```[^\n`]*\n(.*?)(?:```|$)", text, flags=re.DOTALL)
    if not m:
        return text
    kinds.append("fence")
    if text[: m.start()].strip():
        kinds.append("preamble")
    if text[m.end() :].strip():
        kinds.append("signoff")
    return m.group(1)


# Straight or curly single quotes are also apostrophes: "'tis", "goin'" are not wrapping quotes.
_ELISION_START = re.compile(r"^(?:tis|twas|til|till|cause|cos|em|round|bout|n|s)\b", re.IGNORECASE)


def _wrapped(text: str) -> str | None:
    """text without the matching quote pair around all of it, or None when it has none."""
    close = _QUOTE_PAIRS.get(text[:1])
    if not close or len(text) < 2 or not text.endswith(close):
        return None
    inner = text[1 : -len(close)]
    if text[0] in "'\u2018":
        dropped_g = inner.lower().endswith("in")  # goin'
        if _ELISION_START.match(inner) or dropped_g or "\u2018" in inner:
            return None
    elif text[0] in inner or close in inner:  # "a," she said, "b": two quotes, not one wrap
        return None
    return inner


def _unquote(lines: list[str], kinds: list[str]) -> list[str]:
    inner = _wrapped("\n".join(lines))
    if inner is not None and inner.strip():
        kinds.append("quotes")
        return [line.strip() for line in inner.splitlines()]
    unwrapped = [_wrapped(line) for line in lines]
    if len(lines) > 1 and all(x is not None and x.strip() for x in unwrapped):
        kinds.append("quotes")
        return [x.strip() for x in unwrapped]  # type: ignore[union-attr]
    return lines


def _is_verse(raw: list[str]) -> bool:
    """Exactly 3 short lines, none ending in ':' - the shape of a poem with nothing around it."""
    lines = [line for line in raw if line]
    return len(lines) == VERSE_LINES and all(
        len(line.split()) <= MAX_VERSE_WORDS and not line.endswith(":") for line in lines
    )


def _chat(line: str, pattern: re.Pattern[str], verse: bool) -> bool:
    """Is this line chat? In a bare 3-line verse only talk about the poem itself counts."""
    plain = _plain(line)
    if verse:
        return bool(pattern.match(plain) and _ABOUT_POEM.search(plain))
    return bool(pattern.match(plain) or (pattern is _PREAMBLE and line.endswith(":")))


def _is_title(lines: list[str], blank_after_first: bool, first_bold: bool, others_bold: bool):
    """A short first line set apart (bold alone, or followed by a blank line) above 3+ lines."""
    first = lines[0]
    short = len(first.split()) <= 6 and not first.endswith((",", ";"))
    return len(lines) >= 4 and short and ((first_bold and not others_bold) or blank_after_first)


def extract_poem(completion: str) -> Extraction:
    """The poem in a model answer, and which kinds of wrapping were stripped to find it.

    An answer over MAX_TEXT_CHARS characters has no poem (stripped: "oversize")."""
    if completion and len(completion) > MAX_TEXT_CHARS:
        return Extraction("", ("oversize",))
    kinds: list[str] = []
    text = _drop_fence(_drop_think(completion or "", kinds), kinds)
    raw = [line.strip() for line in text.strip().splitlines()]
    verse = _is_verse(raw)
    # The poem starts at the first line that is not chat; chat after it ends the poem.
    while raw and (not raw[0] or _chat(raw[0], _PREAMBLE, verse)):
        line = raw.pop(0)
        if line:
            kinds.append("preamble")
            after = line.split(":", 1)[1].strip() if ":" in line else ""
            if after and not _PREAMBLE.match(_plain(after)) and len(after.split()) >= 2:
                raw.insert(0, after)
                break
    for i, line in enumerate(raw):
        if i and _chat(line, _SIGNOFF, verse):
            kinds.append("signoff")
            raw = raw[:i]
            break
    if not raw:
        return Extraction("", _unique(kinds))
    if _TITLE_PREFIX.match(raw[0]):
        raw[0] = _TITLE_PREFIX.sub("", raw[0])
        if len([x for x in raw if x]) > 3 or not raw[0]:
            kinds.append("title")
            raw = raw[1:]
    blank_after_first = len(raw) > 1 and raw[1] == ""
    lines = [line for line in raw if line]
    if lines and lines[0].startswith("#"):
        kinds.append("title")
        lines = lines[1:]
    lines, bold = _strip_markup(lines, kinds)
    if lines and _is_title(lines, blank_after_first, bold[0], any(bold[1:])):
        kinds.append("title")
        lines = lines[1:]
    if lines:
        lines = _unquote(lines, kinds)
    return Extraction("\n".join(x for x in lines if x), _unique(kinds))


def _plain(line: str) -> str:
    return _unemphasized(_BULLET.sub("", line)).strip("*_\"' ")


def _unemphasized(line: str) -> str:
    """line without **bold**/_italic_ marks; a line over MAX_LINE_CHARS, which is no verse line,
    is left as it is (the emphasis pattern can take quadratic time on a long line)."""
    return line if len(line) > MAX_LINE_CHARS else _EMPHASIS.sub(r"\2", line)


def _strip_markup(lines: list[str], kinds: list[str]) -> tuple[list[str], list[bool]]:
    out, bold = [], []
    for line in lines:
        stripped = _BULLET.sub("", line)
        if stripped != line:
            kinds.append("bullet")
        plain = _unemphasized(stripped)
        whole = bool(re.fullmatch(r"(\*\*\*|\*\*|__|\*|_)(.+)\1", stripped))
        if plain != stripped:
            kinds.append("bold")
        out.append(plain.strip())
        bold.append(whole)
    return out, bold


def _unique(kinds: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(kinds))


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class HaikuCheck:
    lines: tuple[str, ...]
    counts: tuple[frozenset[int], ...]
    pattern: tuple[int, ...]
    is_haiku: bool
    distance: int
    line_errors: tuple[int, ...]  # signed error of the closest count, lines with a target only
    reason: str
    symbols: tuple[str, ...] = ()


def check(text: str, pattern=(5, 7, 5), strict: bool = False) -> HaikuCheck:
    """Check text as given (no extraction) against a syllable pattern. Never raises.

    A text over MAX_TEXT_CHARS characters is not read: not a haiku, as far off as an empty one."""
    try:
        target = tuple(int(n) for n in pattern)
        text = text if isinstance(text, str) else str(text)
        if len(text) > MAX_TEXT_CHARS:
            reason = f"text has {len(text)} characters, over the {MAX_TEXT_CHARS} checked"
            return HaikuCheck((), (), target, False, LINE_COUNT_PENALTY * len(target), (), reason)
        if len(text) > _MEMO_MAX_CHARS:
            return _check(text, target, bool(strict))
        return _check_memo(text, target, bool(strict))
    except Exception as exc:  # noqa: BLE001 - a verifier in a reward loop must not crash training
        return HaikuCheck(
            (),
            (),
            tuple(pattern) if _hashable(pattern) else (),
            False,
            LINE_COUNT_PENALTY * 3,
            (),
            f"could not check: {exc}",
        )


def _hashable(pattern) -> bool:
    try:
        return all(isinstance(n, int) for n in pattern)
    except TypeError:
        return False


@lru_cache(maxsize=65536)
def _check_memo(text: str, pattern: tuple[int, ...], strict: bool) -> HaikuCheck:
    return _check(text, pattern, strict)


def _check(text: str, pattern: tuple[int, ...], strict: bool) -> HaikuCheck:
    lines = tuple(split_lines(text))
    analyses = [analyze_line(line) for line in lines]
    counts = tuple(frozenset({a.common}) if strict else a.totals for a in analyses)
    symbols = tuple(s for a in analyses for s in a.symbols)
    errors = tuple(min((n - t for n in c), key=abs, default=-t) for c, t in zip(counts, pattern))
    missing = abs(len(lines) - len(pattern))
    distance = sum(abs(e) for e in errors) + LINE_COUNT_PENALTY * missing
    problems = []
    if not lines:
        problems.append("empty")
    elif missing:
        problems.append(f"{len(lines)} line{'s' * (len(lines) != 1)}, needs {len(pattern)}")
    for i, (c, t, e) in enumerate(zip(counts, pattern, errors), 1):
        if analyses[i - 1].over_cap:
            problems.append(
                f"line {i} has {len(lines[i - 1])} characters, over the {MAX_LINE_CHARS} counted"
            )
        elif e:
            has = " or ".join(str(n) for n in sorted(c)[:4]) or "0"
            plural = "s" * (has != "1")
            problems.append(f"line {i} has {has} syllable{plural}, needs {t}")
    is_haiku = not problems
    reason = "ok" if is_haiku else "; ".join(problems)
    return HaikuCheck(lines, counts, pattern, is_haiku, distance, errors, reason, symbols)


# --------------------------------------------------------------------------- CLI


PATTERN_RE = re.compile(r"\d{1,6}(?:\s*[-,/]\s*\d{1,6}|\s+\d{1,6})*")
MAX_PATTERN_LINES = 100
MAX_PATTERN_SYLLABLES = 1000


def parse_pattern(text: str) -> tuple[int, ...]:
    """'5-7-5' -> (5, 7, 5): whole numbers from 1 to MAX_PATTERN_SYLLABLES, one separator
    (- , / or spaces) between them, at most MAX_PATTERN_LINES of them."""
    if not isinstance(text, str) or not PATTERN_RE.fullmatch(text.strip()):
        shown = repr(text) if isinstance(text, str) else "(none given)"  # argparse eats "--"
        raise ValueError(f"--pattern {shown}: expected numbers like 5-7-5")
    pattern = tuple(int(p) for p in re.split(r"\s*[-,/]\s*|\s+", text.strip()))
    if len(pattern) > MAX_PATTERN_LINES or not all(0 < n <= MAX_PATTERN_SYLLABLES for n in pattern):
        raise ValueError(f"--pattern {text!r}: expected at most {MAX_PATTERN_LINES} lines of 1 to "
                         f"{MAX_PATTERN_SYLLABLES} syllables, like 5-7-5")
    return pattern
