"""Syllable-constrained decoding: a LogitsProcessor that only lets a poem grow toward its pattern.

Per sequence it tracks the line being written and lets through only candidate tokens after which
the line can still land on its target under some valid pronunciation (strict: the most common
one). The line break is allowed only when the line is exactly on target, and then forced (after
a few punctuation-like tokens that keep it on target); end-of-turn/EOS only after the last line.

Counting is `syllables.analyze_line`, the function `haiku.check` runs on every line, so a line
the processor closes is a line check accepts. Pieces split at whitespace count independently in
analyze_line, so a line is scored as (completed part) + (word in progress): the word in progress
is estimated as if it ended now, and re-scored exactly with each token that extends it.

Only the top candidates of each step are examined (64 by default, widened once when none fits),
and every per-token fact (decoded piece, newline, forbidden) is computed once per tokenizer and
cached, so the cost stays small next to the forward pass. Works with any `model.generate` that
takes `logits_processor` (transformers, peft, Unsloth): nothing here is device-specific.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from haiku_kit.constrained_tokens import FORBIDDEN, NEWLINE, TokenTable, token_table
from haiku_kit.estimator import _rules
from haiku_kit.syllables import _QUOTES, _lookup, analyze_line

__all__ = [
    "LineState",
    "PoemTracker",
    "SyllableLogitsProcessor",
    "TokenTable",
    "text_mask",
    "token_table",
    "word_prefixes",
]

# Tokens a line may take while already on target (",", "ed" in "jump|ed"), before the break is
# the only choice left.
MAX_EXTRA_ON_TARGET = 3
MAX_NUMBER_DIGITS = 4
# Words that ask for the next one: under clean_line_ends no line may end on them. 52-65% of the
# poems of one-syllable rounds had a line ending so, to fill a count (docs/experiments.md CE1).
DANGLING_WORDS = frozenset({
    "a", "an", "the", "of", "to", "at", "by", "for", "from", "with", "into", "onto", "and", "or",
    "but", "nor", "than", "as", "if", "my", "your", "its", "our", "their",
})


# --------------------------------------------------------------------------- counting


@lru_cache(maxsize=1 << 18)
def text_mask(text: str, strict: bool = False) -> int:
    """Bit n set when `text` (one line or part of one) can have n syllables, as check counts."""
    analysis = analyze_line(text)
    if strict:
        return 1 << analysis.common
    mask = 0
    for n in analysis.totals:
        mask |= 1 << n
    return mask


@lru_cache(maxsize=1 << 18)
def word_mask(text: str, strict: bool = False) -> int:
    """Like text_mask for a word still being written: a plain word CMUdict lacks gets the quick
    vowel-group rule instead of the learned estimator (about 1 ms), which check applies, and this
    processor too (text_mask), once the word has ended."""
    word = text.strip()
    if word.isascii() and word.isalpha() and not (len(word) > 1 and word.isupper()):
        found = _lookup(word.lower())
        if not found:
            return 1 << _rules(word.lower())
        return 1 << found[0] if strict else sum(1 << n for n in set(found))
    return text_mask(text, strict)


def add_masks(a: int, b: int) -> int:
    """Every sum of one count from a and one from b."""
    out = 0
    while b:
        low = b & -b
        out |= a * low
        b ^= low
    return out


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _split_tail(text: str) -> tuple[str, str]:
    """(completed part, word in progress): the split at the last whitespace as check sees it."""
    seen = text.translate(_QUOTES)
    cut = len(seen)
    while cut and not seen[cut - 1].isspace():
        cut -= 1
    return text[:cut], text[cut:]


_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_EDGES = string.punctuation + "\u2018\u2019\u201c\u201d"


def word_prefixes(text: str) -> frozenset[str]:
    """Every prefix of every word of `text`, lowercased: the words (as they grow) that
    max_word_syllables lets through whatever their length, e.g. a poem's own topic words."""
    return frozenset(w[:n] for w in _WORD.findall(text.lower()) for n in range(1, len(w) + 1))


def _number_in_progress(word: str) -> bool:
    """A short digit run still being written (longer runs get no benefit of the doubt)."""
    digits = len(word) - len(word.rstrip("0123456789"))
    return 0 < digits <= MAX_NUMBER_DIGITS


def ends_dangling(text: str) -> bool:
    """Does `text` end on a DANGLING_WORDS word (punctuation after it does not help)?"""
    words = _WORD.findall(text)
    return bool(words) and words[-1].lower() in DANGLING_WORDS


# --------------------------------------------------------------------------- tracking


@dataclass
class LineState:
    """Where one sequence stands: lines done, the line in progress, and how it ended."""

    line: int = 0
    text: str = ""
    lines: list[str] = field(default_factory=list)
    extra: int = 0  # tokens taken while the line already sat on target
    gap: bool = False  # the last token was a newline run at the start of a line
    finished: bool = False  # an end token was taken after the last line
    dead: bool = False  # no candidate could continue; ended by force
    free: frozenset[str] = frozenset()  # word prefixes exempt from max_word_syllables
    _masks: tuple[str, int, int, str] | None = None

    def masks(self, strict: bool) -> tuple[int, int, str]:
        """(whole line, completed part, word in progress) for the current text, cached."""
        if self._masks is None or self._masks[0] != self.text:
            head, tail = _split_tail(self.text)
            self._masks = (self.text, text_mask(self.text, strict), text_mask(head, strict), tail)
        return self._masks[1:]


class PoemTracker:
    """The rules: which tokens a LineState may take next under a pattern, and taking them."""

    def __init__(self, table: TokenTable, pattern: Sequence[int] = (5, 7, 5),
                 strict: bool = False, end_ids: Iterable[int] = (), max_word_syllables: int = 0,
                 clean_line_ends: bool = False):
        self.table = table
        self.clean_line_ends = bool(clean_line_ends)  # no line ends on a DANGLING_WORDS word
        # > 0: no word may need more syllables (1: one-syllable words only, so a line's count
        # is its word count; self-distillation data in that style, docs/experiments.md S1)
        self.max_word_syllables = int(max_word_syllables)
        self.pattern = tuple(int(n) for n in pattern)
        if not self.pattern or any(n <= 0 for n in self.pattern):
            raise ValueError(f"pattern must be positive syllable counts, got {pattern!r}")
        self.strict = bool(strict)
        self.end_ids = [i for i in dict.fromkeys(end_ids) if 0 <= i]

    def start(self, lines_done: Sequence[str] = (), free: frozenset[str] = frozenset()) -> LineState:
        """A state after `lines_done` complete lines (a resampled poem keeps its good lines);
        `free`: word prefixes (word_prefixes) exempt from max_word_syllables."""
        return LineState(line=len(lines_done), lines=list(lines_done), free=free)

    def on_target(self, state: LineState) -> bool:
        if state.line >= len(self.pattern):
            return False
        return bool(state.masks(self.strict)[0] >> self.pattern[state.line] & 1)

    def closes(self, state: LineState) -> bool:
        """May the line in progress end now: on target, and not on a dangling word when
        clean_line_ends (then it must grow on target, or dies and is resampled)."""
        return self.on_target(state) and not (self.clean_line_ends and ends_dangling(state.text))

    def can_end(self, state: LineState) -> bool:
        """May an end token come now: the poem is complete, or its last line is on target."""
        if state.finished or state.dead:
            return True
        last = len(self.pattern) - 1
        return state.line > last or (state.line == last and self.closes(state))

    def _after_plain(self, state: LineState, token: int) -> int:
        """Syllable mask of the line after a newline-free token (its last word estimated)."""
        whole, head, tail = state.masks(self.strict)
        starts_ws, first, rest = self.table.split(token)
        piece = self.table.piece(token)
        if starts_ws or not tail:
            return add_masks(whole, word_mask(piece, self.strict))
        word = word_mask(tail + first, self.strict)
        if _number_in_progress(tail + first):
            word |= 2  # "199" may yet be "1999": a digit run's count is no bound on the number's
        return add_masks(add_masks(head, word), text_mask(rest, self.strict) if rest else 1)

    def _words_fit(self, state: LineState, token: int) -> bool:
        """Every word the token writes or extends can have at most max_word_syllables (a word
        CMUdict lacks by the quick vowel-group rule, as word_mask counts words in progress),
        or is (the start of) one of the state's free words."""
        if self.max_word_syllables <= 0:
            return True
        starts_ws, first, rest = self.table.split(token)
        tail = "" if starts_ws else state.masks(self.strict)[2]
        limit = (1 << (self.max_word_syllables + 1)) - 1
        return all(word_mask(word, self.strict) & limit or word.strip(_EDGES).lower() in state.free
                   for word in [tail + first, *rest.split()] if word.strip())

    def _after_newline(self, state: LineState, token: int) -> LineState | None:
        """The state after a token holding newlines, or None when it breaks a rule."""
        parts = self.table.piece(token).split("\n")
        new = LineState(state.line, state.text + parts[0], list(state.lines), gap=state.gap)
        for segment in parts[1:]:
            if not new.text.strip():  # a blank line: only as a gap right after a line ended
                if new.line == 0 or new.gap:
                    return None
                new.gap = True
            elif not self.closes(new):
                return None
            else:
                new.lines.append(new.text.strip())
                new.line, new.gap = new.line + 1, False
            new.text = segment
        if new.text.strip():
            if new.line >= len(self.pattern):
                return None
            if _lowest(new.masks(self.strict)[0]) > self.pattern[new.line]:
                return None
        return new

    def allows(self, state: LineState, token: int) -> bool:
        """May `token` come next?"""
        if token in self.end_ids:
            return self.can_end(state)
        if state.finished or state.dead or not 0 <= token < len(self.table):
            return False
        kind = self.table.kind(token)
        if kind == FORBIDDEN:
            return False
        if kind == NEWLINE:
            return self._after_newline(state, token) is not None
        if state.line >= len(self.pattern):  # the poem is done: only an end token
            return False
        if not self._words_fit(state, token):
            return False
        target = self.pattern[state.line]
        after = self._after_plain(state, token)
        if self.clean_line_ends and _lowest(after) >= target and \
                ends_dangling(state.text + self.table.piece(token)):
            return False  # a full line ending on "the" could not close: refuse it, not die
        if self.on_target(state):
            return state.extra < MAX_EXTRA_ON_TARGET and bool(after >> target & 1)
        return _lowest(after) <= target

    def allowed(self, state: LineState, candidates: Iterable[int]) -> list[int]:
        """The allowed candidates, plus the forced break or end token when the line is done."""
        out = [t for t in candidates if self.allows(state, t)]
        if self.can_end(state):
            out += [t for t in self.end_ids if t not in out]
        elif self.closes(state) and self.table.newline_id not in (None, *out):
            out.append(self.table.newline_id)
        return out

    def advance(self, state: LineState, token: int) -> None:
        """Take `token` (already chosen) into the state."""
        if state.finished or state.dead:
            return
        if token in self.end_ids:
            if self.can_end(state):
                if state.line < len(self.pattern) and state.text.strip():
                    state.lines.append(state.text.strip())
                    state.line, state.text = state.line + 1, ""
                state.finished = True
            else:
                state.dead = True
            return
        if not 0 <= token < len(self.table) or self.table.kind(token) == FORBIDDEN:
            state.dead = True
            return
        if self.table.kind(token) == NEWLINE:
            new = self._after_newline(state, token)
            if new is None:
                state.dead = True
                return
            state.line, state.text, state.lines, state.gap = new.line, new.text, new.lines, new.gap
            state.extra = 0
            return
        if self.on_target(state):
            state.extra += 1
        state.text += self.table.piece(token)
        state.gap = False


# --------------------------------------------------------------------------- processor


class SyllableLogitsProcessor:
    """transformers LogitsProcessor: masks every token but the allowed ones, per sequence.

    Put it in `model.generate(..., logits_processor=LogitsProcessorList([proc]))`: transformers
    runs custom processors before temperature/top-k/top-p, so sampling draws among allowed
    tokens only. One instance serves one `generate` call (it remembers the prompt length).
    `start_lines[i]`: lines of row i already written into its prompt (resampling a later line);
    `free[i]`: row i's word prefixes exempt from the tracker's max_word_syllables.
    """

    def __init__(self, tracker: PoemTracker, top_candidates: int = 64, widen_to: int = 1024,
                 start_lines: Sequence[Sequence[str]] | None = None,
                 free: Sequence[frozenset[str]] | None = None):
        self.tracker = tracker
        self.top_candidates = max(1, int(top_candidates))
        self.widen_to = max(self.top_candidates, int(widen_to))
        self.start_lines = start_lines
        self.free = free
        self.states: list[LineState] | None = None
        self.seen = 0  # tokens of input_ids already taken into the states
        self.seconds = 0.0  # time spent in this processor (the decoding overhead)
        self.calls = 0

    def __call__(self, input_ids, scores):
        started = time.perf_counter()
        try:
            return self._mask(input_ids, scores)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def _mask(self, input_ids, scores):
        import torch

        if self.states is None:
            rows = input_ids.shape[0]
            starts = self.start_lines or [()] * rows
            free = self.free or [frozenset()] * rows
            if len(starts) != rows or len(free) != rows:
                raise ValueError(f"start_lines has {len(starts)} rows and free {len(free)}, "
                                 f"the batch {rows}")
            self.states = [self.tracker.start(lines, words) for lines, words in zip(starts, free)]
            self.seen = input_ids.shape[1]  # the prompt
        elif input_ids.shape[1] > self.seen:
            for state, tokens in zip(self.states, input_ids[:, self.seen :].tolist()):
                for token in tokens:
                    self.tracker.advance(state, token)
            self.seen = input_ids.shape[1]
        vocab = scores.shape[-1]
        top = torch.topk(scores, min(self.top_candidates, vocab), dim=-1)
        top_ids, top_vals = top.indices.tolist(), top.values.tolist()
        keep_rows: list[int] = []
        keep_cols: list[int] = []
        for row, state in enumerate(self.states):
            finite = [t for t, v in zip(top_ids[row], top_vals[row]) if v > float("-inf")]
            allowed = self.tracker.allowed(state, finite)
            if not allowed:
                wide = torch.topk(scores[row], min(self.widen_to, vocab)).indices.tolist()
                allowed = self.tracker.allowed(state, wide[len(top_ids[row]):]) or allowed
            if not allowed:  # a dead end: end the sequence, the caller resamples the line
                state.dead = True
                allowed = list(self.tracker.end_ids) or [int(top_ids[row][0])]
            allowed = [t for t in allowed if t < vocab]
            keep_rows += [row] * len(allowed)
            keep_cols += allowed
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[keep_rows, keep_cols] = True
        out = scores.masked_fill(~keep, float("-inf"))
        # A forced token whose logit was -inf would leave nothing to sample from.
        empty = torch.isinf(out).all(dim=-1) & keep.any(dim=-1)
        if empty.any():
            out[empty] = torch.where(keep[empty], 0.0, float("-inf")).to(out.dtype)
        return out
