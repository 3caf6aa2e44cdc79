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

What each token of a tokenizer is, for syllable-constrained decoding: its decoded piece and
whether it holds a newline or may never appear in a poem (special, markup, partial UTF-8).
Facts are computed the first time a token is a candidate and cached per tokenizer.

How likely the model finds a written answer: mean log-probability per completion token.

The constrained decoder can draw several valid drafts of one poem; the draft the model itself
finds most likely is the one least bent by the constraint (fewer lines cut mid-phrase). Only the
completion's positions go through the 262k-token head (`logits_to_keep`), and each log-prob is
the gathered logit minus the row's logsumexp, so no full log-softmax copy is made.

Generate poems that are valid by construction: the syllable processor, then check as judge.

`constrained_generate` samples with `SyllableLogitsProcessor` and judges every answer
with `haiku.check` on the poem `haiku.extract_poem` finds (what evaluation scores). A sample that
hit a dead end (no candidate fits, or the token limit) or that check rejects is resampled from
its last good line, a bounded number of times; then the closest poem comes back with check's
diagnosis. `is_valid` is always check's verdict, never the processor's.

With candidates > 1 each poem is drawn that many times and the draft kept is, among the valid
ones, the one the model finds most likely (mean log-prob per token, mean_logprobs below, its end
token included): the draft the constraint bent least, e.g. not one whose last line stops
mid-phrase.
"""

from __future__ import annotations

import copy
import re
import string
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from haiku_kit.model.chat import encode, prompt_strings, stop_token_ids, text_tokenizer
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.estimator import _rules
from haiku_kit.verify.judge import (
    BRACKETS,
    DETERMINERS,
    FILLER_LEADS,
    QUOTE,
    ends_unfinished,
    fluency_problems,
    line_end_problem,
    stray_apostrophe,
)
from haiku_kit.verify.syllables import _QUOTES, _lookup, analyze_line

__all__ = ['FORBIDDEN', 'NEWLINE', 'PLAIN', 'ConstrainedResult', 'LineState', 'PoemTracker', 'SyllableLogitsProcessor', 'TokenTable', 'constrained_generate', 'mean_logprobs', 'text_mask', 'token_table', 'word_prefixes']

# Characters that extract_poem strips or reads as structure (titles, bold, fences, tags): a poem
# line holding them would be judged on different text than the processor counted.
_FORBIDDEN_CHARS = frozenset("#*`<>[]{}|\\_~\r")


def _is_line_break(ch: str) -> bool:
    """Characters str.splitlines() breaks on (haiku.split_lines uses it)."""
    return len(f"a{ch}b".splitlines()) > 1


PLAIN, NEWLINE, FORBIDDEN = 0, 1, 2


class TokenTable:
    """Per-token facts of one tokenizer (decoded piece, kind, whitespace split), each computed
    the first time a token is a candidate and cached: a run meets a few thousand of 262k."""

    def __init__(self, tokenizer):
        tok = getattr(tokenizer, "tokenizer", tokenizer)  # Unsloth may hand back a processor
        self._tok = tok
        self.size = len(tok)
        # Pieces are read after an anchor token so decoders that strip a lone token's leading
        # space still show it.
        anchor = tok.convert_tokens_to_ids("a")
        if anchor is None or anchor == tok.unk_token_id:
            anchor = tok("a", add_special_tokens=False).input_ids[0]
        self._anchor = anchor
        self._head = self._decode([anchor])
        self._pieces: dict[int, str] = {}
        self._kinds: dict[int, int] = {}
        self._split: dict[int, tuple[bool, str, str]] = {}
        special = set(tok.all_special_ids)
        added = set(getattr(tok, "get_added_vocab", dict)().values())
        # Added tokens are atomic markup (<start_of_turn>, html tags) except whitespace runs.
        self._special = special | {i for i in added - special if self.piece(i).strip()}
        newline = tok("\n", add_special_tokens=False).input_ids
        self.newline_id = newline[0] if len(newline) == 1 and self.kind(newline[0]) == NEWLINE \
            else None

    def __len__(self) -> int:
        return self.size

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def piece(self, token: int) -> str:
        got = self._pieces.get(token)
        if got is None:
            text = self._decode([self._anchor, token])
            got = text[len(self._head) :] if text.startswith(self._head) else "\ufffd"
            self._pieces[token] = got
        return got

    def kind(self, token: int) -> int:
        got = self._kinds.get(token)
        if got is None:
            if not 0 <= token < self.size or token in self._special:
                got = FORBIDDEN
            else:
                got = _piece_kind(self.piece(token))
            self._kinds[token] = got
        return got

    def split(self, token: int) -> tuple[bool, str, str]:
        """(starts with whitespace, text up to its first whitespace, the rest), cached."""
        got = self._split.get(token)
        if got is None:
            piece = self.piece(token)
            seen = piece.translate(_QUOTES)
            cut = next((i for i, ch in enumerate(seen) if ch.isspace()), len(seen))
            got = (cut == 0 and bool(seen), piece[:cut], piece[cut:])
            self._split[token] = got
        return got


def _piece_kind(piece: str) -> int:
    if not piece or "\ufffd" in piece or any(c in _FORBIDDEN_CHARS for c in piece):
        return FORBIDDEN
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in piece):
        return FORBIDDEN  # a control character ("tarps\x17") is no part of a poem
    if any(_is_line_break(c) and c != "\n" for c in piece):
        return FORBIDDEN
    return NEWLINE if "\n" in piece else PLAIN


_TABLES: dict[int, tuple[object, TokenTable]] = {}


def token_table(tokenizer) -> TokenTable:
    """The TokenTable of a tokenizer object, shared by every call with that tokenizer."""
    got = _TABLES.get(id(tokenizer))
    if got is None or got[0] is not tokenizer:
        if len(_TABLES) >= 4:
            _TABLES.pop(next(iter(_TABLES)))
        got = (tokenizer, TokenTable(tokenizer))
        _TABLES[id(tokenizer)] = got
    return got[1]


# -------------------- constrained --------------------

# Tokens a line may take while already on target (",", "ed" in "jump|ed"), before the break is
# the only choice left.
MAX_EXTRA_ON_TARGET = 3
MAX_NUMBER_DIGITS = 4
# Words that ask for the next one: under clean_line_ends no line may end on them. 52-65% of the
# poems of one-syllable rounds had a line ending so, to fill a count (research/log.md CE1).
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
_CUT_WORD = re.compile(r"[A-Za-z]-\s*$")
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
    """Does `text` end on a DANGLING_WORDS word (punctuation after it does not help), on a
    determiner right after a function word ("lost in her", "then the"), where a noun must
    follow ("on the firefly's", "in the early": the judge's dangling_determiner and no_noun
    rules, verify.judge, so no line the decoder closes fails them), or on a word cut at a
    hyphen ("half-")?"""
    if _CUT_WORD.search(text):
        return True  # "the person contemplates in- /": a word cut at a hyphen
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return False
    if words[-1] in DANGLING_WORDS:
        return True
    if len(words) >= 2 and words[-1] in DETERMINERS and words[-2] in FILLER_LEADS:
        return True
    return line_end_problem(text) is not None  # "on the firefly's", "in the early"


_LETTER_RUN = re.compile(r"[a-z]+(?:'[a-z]+)*")


def known_word(word: str) -> bool:
    """Does the pronouncing dictionary know every run of letters in `word` ("lightf,lights" is
    two runs, "half-moon" two, a possessive is read by its stem)? Accents are read without their
    marks ("café" as "cafe"), so "child'sthé" is a splice; "one'" is no word; a word with other
    letters outside ASCII is not judged here (True)."""
    if stray_apostrophe(word) is not None:
        return False  # "one'": an apostrophe that owns or drops nothing (the judge's `garbled`)
    word = word.translate(_QUOTES).lower()
    word = "".join(ch for ch in unicodedata.normalize("NFKD", word) if not unicodedata.combining(ch))
    if any(ch.isalpha() and not ch.isascii() for ch in word):
        return True
    return all(_lookup(p) or (p.endswith("'s") and _lookup(p[:-2]))
               for p in _LETTER_RUN.findall(word))


def _glued_after(glued: int, tail: str, piece: str) -> int:
    """How many tokens built the word in progress after `piece` is appended, given `glued` for
    the word in progress `tail` before it."""
    if not piece:
        return glued
    head, rest = _split_tail(piece)
    if not head:  # no whitespace in the piece: it extends the word (or starts one)
        return glued + 1 if tail else 1
    return 1 if rest else 0


# --------------------------------------------------------------------------- tracking


@dataclass
class LineState:
    """Where one sequence stands: lines done, the line in progress, and how it ended."""

    line: int = 0
    text: str = ""
    lines: list[str] = field(default_factory=list)
    extra: int = 0  # tokens taken while the line already sat on target
    gap: bool = False  # the last token was a newline run at the start of a line
    glued: int = 0  # tokens that built the word in progress ("soft" + "i": 2)
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


BRACKET_MARKS = "".join(BRACKETS) + QUOTE  # the judge's `garbled` rule fails a poem with a stray one


class PoemTracker:
    """The rules: which tokens a LineState may take next under a pattern, and taking them."""

    def __init__(self, table: TokenTable, pattern: Sequence[int] = (5, 7, 5),
                 strict: bool = False, end_ids: Iterable[int] = (), max_word_syllables: int = 0,
                 clean_line_ends: bool = False):
        self.table = table
        self.clean_line_ends = bool(clean_line_ends)  # no line ends on a DANGLING_WORDS word
        # > 0: no word may need more syllables (1: one-syllable words only, so a line's count
        # is its word count; self-distillation data in that style, research/log.md S1)
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
        """May the line in progress end now: on target, and under clean_line_ends not on a
        dangling word, nor (the last line) where the judge would call the poem cut off ("...
        the moon,", "..., then", "... like"); such a line must grow on target, or dies and is
        resampled."""
        if not self.on_target(state):
            return False
        return not (self.clean_line_ends and (self._unclosable(state, state.text)
                                              or self._bad_glue(state)))

    def _unclosable(self, state: LineState, text: str) -> bool:
        """Would `text`, as the line in progress, be refused by closes() for its ending?"""
        if ends_dangling(text):
            return True
        return state.line == len(self.pattern) - 1 and ends_unfinished(text)

    def _bad_glue(self, state: LineState) -> bool:
        """Under clean_line_ends, is the word in progress a sub-word splice ("soft"+"i" ->
        "softi", "tarps"+"a")? A word built from two or more tokens must be a word the
        dictionary knows before it may end; one token stays free (names, rare words). 5% of the
        demo's constrained poems held such a splice, which the judge cannot tell from a rare
        word (research/log.md J6)."""
        if not self.clean_line_ends or state.glued < 2:
            return False
        return not known_word(state.masks(self.strict)[2])

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
        new = LineState(state.line, state.text + parts[0], list(state.lines), gap=state.gap,
                        glued=_glued_after(state.glued, state.masks(self.strict)[2], parts[0]))
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
        piece = self.table.piece(token)
        if (piece[:1].isupper() or piece[:1].isdigit()) and state.text[-1:].isalpha():
            return False  # a capital or digit glued onto a word ("ballJ", "soft9"): not a word
        if self.table.split(token)[0] and self._bad_glue(state):
            return False  # the token starts a new word after a spliced one
        if any(mark in piece for mark in BRACKET_MARKS):
            return False  # human haiku have none; the decoder used ")" and '"' as free tokens
        if piece[:1].isalpha() and re.search(r"[A-Za-z]['\u2019]s$", state.text):
            return False  # letters glued after a possessive ("child's" + "thé"): not a word
        if not self._words_fit(state, token):
            return False
        target = self.pattern[state.line]
        after = self._after_plain(state, token)
        if self.clean_line_ends and _lowest(after) >= target and \
                self._unclosable(state, state.text + self.table.piece(token)):
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
            state.extra, state.glued = 0, int(bool(new.text.strip()))
            return
        if self.on_target(state):
            state.extra += 1
        piece = self.table.piece(token)
        state.glued = _glued_after(state.glued, state.masks(self.strict)[2], piece)
        state.text += piece
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


# -------------------- likelihood --------------------

def mean_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                  batch_size: int = 8) -> list[float]:
    """Mean log p(token | prompt, earlier tokens) over each completion's tokens.

    prompts are formatted model input (as model.chat.prompt_strings returns); a completion that
    adds no token scores -inf. The model is put in eval mode and restored.
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"mean_logprobs: {len(prompts)} prompts but {len(completions)} completions")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            heads = list(prompts[start : start + batch_size])
            tails = list(completions[start : start + batch_size])
            full = encode(tokenizer, [h + t for h, t in zip(heads, tails)]).to(model.device)
            new = [int(n) - len(encode(tokenizer, [h])["input_ids"][0])
                   for h, n in zip(heads, full["attention_mask"].sum(1))]
            keep = max(max(new), 1)
            with torch.inference_mode():
                # Left padding puts every completion at the right edge: keep+1 positions suffice.
                logits = model(**full, logits_to_keep=keep + 1).logits[:, :-1].float()
                targets = full["input_ids"][:, -keep:]
                picked = logits.gather(-1, targets[..., None]).squeeze(-1)
                token_lp = picked - torch.logsumexp(logits, dim=-1)
            for row, n in enumerate(new):
                scores.append(float(token_lp[row, keep - n :].mean()) if n > 0 else float("-inf"))
    finally:
        model.train(was_training)
    return scores


# -------------------- constrained generate --------------------

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 64}


@dataclass
class ConstrainedResult:
    """One constrained answer: the poem, check's verdict on it and how it was reached."""

    text: str  # the poem (extract_poem of the completion)
    completion: str  # the answer as generated: kept lines plus the last sample
    is_valid: bool  # check(text, pattern, strict).is_haiku
    check: hk.HaikuCheck
    tries: int  # samples drawn for this answer (1 = first try)
    dead_ends: int = 0  # tries that ended with no allowed token or at the token limit
    num_tokens: int = 0  # new tokens generated over all tries
    hit_limit: bool = False  # the returned sample never produced an end token
    end_text: str = ""  # the end token the sample stopped with, as text ("" at the limit)
    logprob: float | None = None  # mean log-prob per token, when drafts were compared
    drafts: int = 1  # drafts this poem was chosen from
    clean: bool = True  # it ended where the rules allow, not forced at a dead end

    @property
    def reason(self) -> str:
        return self.check.reason


@dataclass
class _Job:
    prompt: str
    free: frozenset[str] = frozenset()
    kept: list[str] = field(default_factory=list)
    tries: int = 0
    dead_ends: int = 0
    failed_depth: int = -1  # lines kept when the previous try failed
    tokens: int = 0
    best: ConstrainedResult | None = None


def _sampling_kwargs(sampling: Any) -> dict[str, Any]:
    if sampling is None:
        return dict(DEFAULT_SAMPLING)
    if hasattr(sampling, "generate_kwargs"):
        return dict(sampling.generate_kwargs())
    return {**DEFAULT_SAMPLING, **dict(sampling)}


def _judge(completion: str, pattern: tuple[int, ...], strict: bool) -> tuple[str, hk.HaikuCheck]:
    poem = hk.extract_poem(completion).poem
    return poem, hk.check(poem, pattern, strict=strict)


def _better(new: ConstrainedResult, old: ConstrainedResult | None) -> bool:
    return old is None or ((new.is_valid, new.clean, -new.check.distance)
                           > (old.is_valid, old.clean, -old.check.distance))


def _replay(tracker: PoemTracker, kept: list[str], tokens: list[int], stop: set[int]):
    """The tracker's state after the sampled tokens, and the tokens up to the end token."""
    state: LineState = tracker.start(kept)
    for n, token in enumerate(tokens):
        tracker.advance(state, token)
        if token in stop:
            return state, tokens[:n], False
    return state, tokens, True


def _next_kept(job: _Job, state: LineState, finished_clean: bool) -> list[str]:
    """Lines to keep for the next try: the good lines before the one that failed, one fewer
    when a try already failed at that line, none when a complete poem was rejected."""
    if finished_clean:
        return []
    kept = list(state.lines)
    if kept and len(kept) <= job.failed_depth:
        kept = kept[:-1]
    return kept


def constrained_generate(
    model,
    tokenizer,
    prompts: Sequence[Any],
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    k: int = 1,
    seed: int = 0,
    sampling: Any = None,
    max_new_tokens: int = 64,
    retries: int = 8,  # a failing line is resampled alone; 4 left 1.6% of base-model poems invalid
    batch_size: int = 8,
    top_candidates: int = 64,
    candidates: int = 1,
    max_word_syllables: int = 0,
    free_words: Sequence[str] | None = None,
    clean_line_ends: bool = False,
) -> list[list[ConstrainedResult]]:
    """k constrained poems per prompt (chat message lists or formatted strings, as generate).

    sampling: a SamplingSettings, a dict of generate kwargs, or None (T=1, top-p 0.95, top-k 64).
    Each try reseeds torch (seed, round, batch), so the same arguments give the same poems.
    Retries always sample (a greedy retry would repeat the failure).
    candidates: drafts per poem; the valid draft with the highest mean log-prob is kept (when
    none is valid, the closest, then the most likely).
    max_word_syllables > 0: no word may need more syllables (1: one-syllable words only).
    free_words[i]: text whose words prompt i may use whatever their length (its topic).
    clean_line_ends: no line may end on an article, preposition or conjunction ("the", "of"),
    nor the poem where the judge would call it cut off (a comma, ", then", "like").
    """
    pattern = tuple(int(n) for n in pattern)
    if min(k, batch_size, max_new_tokens, candidates) < 1 or retries < 0:
        raise ValueError("k, batch_size, max_new_tokens and candidates must be >= 1, retries >= 0")
    texts = prompt_strings(tokenizer, prompts)
    if free_words is not None and len(free_words) != len(texts):
        raise ValueError(f"free_words has {len(free_words)} entries for {len(texts)} prompts")
    free = [word_prefixes(w) for w in free_words] if free_words else [frozenset()] * len(texts)
    stop = stop_token_ids(model, tokenizer)
    tracker = PoemTracker(token_table(tokenizer), pattern, strict, end_ids=stop,
                          max_word_syllables=max_word_syllables, clean_line_ends=clean_line_ends)
    first = copy.deepcopy(model.generation_config)
    first.update(max_new_tokens=max_new_tokens, eos_token_id=stop,
                 pad_token_id=tokenizer.pad_token_id, **_sampling_kwargs(sampling))
    again = copy.deepcopy(first)
    if not again.do_sample:
        again.update(**DEFAULT_SAMPLING)
    jobs = [_Job(t, f) for t, f in zip(texts, free) for _ in range(k * candidates)]
    pending = list(range(len(jobs)))
    was_training = model.training
    model.eval()
    try:
        for round_no in range(retries + 1):
            if not pending:
                break
            failed: list[int] = []
            for b, start in enumerate(range(0, len(pending), batch_size)):
                batch = pending[start : start + batch_size]
                config = first if round_no == 0 else again
                processor = SyllableLogitsProcessor(
                    tracker, top_candidates=max(top_candidates, int(config.top_k or 0)),
                    start_lines=[jobs[i].kept for i in batch], free=[jobs[i].free for i in batch])
                failed += _run_batch(model, tokenizer, processor, [jobs[i] for i in batch],
                                     batch, config, set(stop), seed + 100_003 * round_no + b,
                                     round_no == retries)
            pending = failed
    finally:
        model.train(was_training)
    results: list[ConstrainedResult] = [job.best for job in jobs]  # type: ignore[misc]
    if candidates > 1:
        results = _most_likely(model, tokenizer, jobs, results, candidates, batch_size)
    return [results[i * k : (i + 1) * k] for i in range(len(texts))]


def _most_likely(model, tokenizer, jobs, results, candidates, batch_size):
    """One result per run of `candidates` drafts: valid first, then those the judge's rules
    read as English (verify.judge.fluency_problems: no filler), then closest, then most likely.
    Likelihood alone prefers filler: function words are cheap to predict (docs/judge.md)."""
    scores = mean_logprobs(model, tokenizer, [job.prompt for job in jobs],
                           [r.completion + r.end_text for r in results], batch_size=batch_size)
    chosen = []
    for start in range(0, len(results), candidates):
        group = range(start, start + candidates)
        for i in group:
            results[i].logprob, results[i].drafts = scores[i], candidates
        best = max(group, key=lambda i: (results[i].is_valid, results[i].clean,
                                         not fluency_problems(results[i].text),
                                         -results[i].check.distance, scores[i]))
        chosen.append(results[best])
    return chosen


def _run_batch(model, tokenizer, processor, jobs, ids, config, stop, seed, last_round):
    """One generate call over jobs; returns the ids of the jobs to try again."""
    import torch
    from transformers import LogitsProcessorList

    tracker = processor.tracker
    inputs = [job.prompt + "".join(line + "\n" for line in job.kept) for job in jobs]
    enc = encode(tokenizer, inputs).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config,
                             logits_processor=LogitsProcessorList([processor]))
    again = []
    for job, job_id, row in zip(jobs, ids, out[:, enc["input_ids"].shape[1] :].tolist()):
        state, tokens, hit_limit = _replay(tracker, job.kept, row, stop)
        job.tries += 1
        job.tokens += len(tokens) + (not hit_limit)
        dead = state.dead or hit_limit or not state.finished
        job.dead_ends += dead
        prefix = "".join(line + "\n" for line in job.kept)
        completion = prefix + tokenizer.decode(tokens, skip_special_tokens=True)
        poem, verdict = _judge(completion, tracker.pattern, tracker.strict)
        end_text = "" if hit_limit else text_tokenizer(tokenizer).convert_ids_to_tokens(
            row[len(tokens)])
        # Under clean_line_ends a try forced to end at a dead end broke the rules even when its
        # text counts 5-7-5 (a line closed on "tarpsa", whose splice the rules refused): it is
        # tried again, and kept only when no clean try was found.
        clean = not (dead and tracker.clean_line_ends)
        result = ConstrainedResult(poem, completion.strip(), verdict.is_haiku, verdict, job.tries,
                                   job.dead_ends, job.tokens, hit_limit, end_text=end_text,
                                   clean=clean)
        if _better(result, job.best):
            job.best = result
        job.best.tries, job.best.dead_ends, job.best.num_tokens = (
            job.tries, job.dead_ends, job.tokens)
        if (verdict.is_haiku and clean) or last_round:
            continue
        job.kept = _next_kept(job, state, finished_clean=not dead)
        job.failed_depth = len(state.lines)
        again.append(job_id)
    return again
