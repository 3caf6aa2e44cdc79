"""What each token of a tokenizer is, for syllable-constrained decoding: its decoded piece and
whether it holds a newline or may never appear in a poem (special, markup, partial UTF-8).
Facts are computed the first time a token is a candidate and cached per tokenizer."""

from __future__ import annotations

from haiku_kit.syllables import _QUOTES

__all__ = ["FORBIDDEN", "NEWLINE", "PLAIN", "TokenTable", "token_table"]

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
