"""Syllables of one word from its spelling alone, never the dictionary.

`estimate(word)` is the rounded weighted mean of a linear model over the vowel groups of the
spelling and small character CNNs (one nucleus score per letter, summed), all learned from
CMUdict (minus the gold words and a held-out slice; see scripts/train_syllable_estimator.py
and scripts/train_syllable_cnn.py), shipped as JSON data and run in numpy. Words over
MAX_ESTIMATE_LETTERS letters count their vowel groups: linear time, constant memory (no English
word comes close). Only short words are memoised.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

__all__ = ["MAX_ESTIMATE_LETTERS", "VOWELS", "ascii_letters", "estimate"]

VOWELS = "aeiouy"
MAX_ESTIMATE_LETTERS = 64  # the longest English words have about 45 letters
_MEMO_MAX_CHARS = 64  # longer words are computed each time, so the cache stays small


@lru_cache(maxsize=1)
def _model() -> dict:
    path = resources.files("haiku_kit") / "resources" / "syllable_model.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


_GROUP = re.compile(r"[aeiou]+|y(?![aeiou])")


def _groups(word: str) -> list[tuple[int, int]]:
    """Vowel groups; 'y' counts as a vowel unless a vowel follows it (yes, beyond, arroyo)."""
    spans: list[tuple[int, int]] = []
    for m in _GROUP.finditer(word):
        if spans and spans[-1][1] == m.start():  # 'ay', 'ey', 'oy' stay one group
            spans[-1] = (spans[-1][0], m.end())
        else:
            spans.append(m.span())
    return spans


def _features(word: str, i: int, j: int) -> list[str]:
    w = f"^^^{word}$$$"
    i, j = i + 3, j + 3
    g = w[i:j]
    return [
        "g" + g,
        "l" + w[i - 1] + g,
        "r" + g + w[j],
        "lr" + w[i - 1] + g + w[j],
        "r2" + g + w[j : j + 2],
        "l2" + w[i - 2 : i] + g,
        "l2r2" + w[i - 2 : i] + g + w[j : j + 2],
        "r3" + g + w[j : j + 3],
        "l3" + w[i - 3 : i] + g,
        "l1r3" + w[i - 1] + g + w[j : j + 3],
        "l3r1" + w[i - 3 : i] + g + w[j],
    ]


def _word_features(word: str) -> list[str]:
    """Whole-word corrections by ending and beginning (-ed, -es, -ism, re-, pre-...)."""
    return [f"S{word[-k:]}$" for k in range(1, 6)] + [f"P^{word[:k]}" for k in range(2, 5)]


def _all_features(word: str) -> list[str]:
    return [f for i, j in _groups(word) for f in _features(word, i, j)] + _word_features(word)


def _rules(word: str) -> int:
    """Fallback when no learned model is shipped: vowel groups with the usual corrections."""
    n = len(_groups(word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and n > 1:
        n -= 1
    elif word.endswith("le") and len(word) > 2 and word[-3] not in VOWELS and n == 1:
        n += 1
    if word.endswith("ed") and len(word) > 3 and word[-3] not in "td" and n > 1:
        n -= 1
    n += len(re.findall(r"[aeiou]a|i[ou]|eo|ua|uo", word))
    return max(n, 1)


@lru_cache(maxsize=1)
def _cnns() -> tuple[list[dict], float]:
    """The character CNNs as numpy arrays (numpy imported lazily), and their share."""
    import numpy as np

    path = resources.files("haiku_kit") / "resources" / "syllable_cnn.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], 0.0
    nets = []
    for net in data["nets"]:
        convs = []
        for conv in net["convs"]:
            w = np.asarray(conv["w"], dtype=np.float32)  # (width, in, out)
            convs.append((w.reshape(-1, w.shape[2]), np.asarray(conv["b"], np.float32), len(w)))
        nets.append(
            {
                "index": {c: k + 1 for k, c in enumerate(net["alphabet"])},
                "pad": net["pad"],
                "embedding": np.asarray(net["embedding"], dtype=np.float32),
                "convs": convs,
                "out_w": np.asarray(net["out_w"], dtype=np.float32),
                "out_b": float(net["out_b"]),
            }
        )
    return nets, float(data["share"])


def _cnn_score(net: dict, word: str):
    """Sum over letters of the net's syllable-nucleus probability (residual ReLU convs)."""
    import numpy as np

    pad = net["pad"]
    h = net["embedding"][[net["index"][c] for c in "^" * pad + word + "$" * pad]]
    n, dim = h.shape
    for w, b, width in net["convs"]:
        r = width // 2
        padded = np.zeros((n + 2 * r, dim), dtype=h.dtype)  # zero padding, as torch's Conv1d
        padded[r : r + n] = h
        window = np.lib.stride_tricks.sliding_window_view(padded, (width, dim))
        h = h + np.maximum(window.reshape(n, width * dim) @ w + b, 0.0)
    z = h[pad : pad + len(word)] @ net["out_w"] + net["out_b"]
    return float((1.0 / (1.0 + np.exp(-z))).sum())


def estimate(word: str) -> int:
    """Syllables of one word from its spelling alone (never the dictionary); at least 1.

    Words over MAX_ESTIMATE_LETTERS letters count their vowel groups (bounded time and memory)."""
    return _estimate_memo(word) if len(word) <= _MEMO_MAX_CHARS else _estimate(word)


@lru_cache(maxsize=65536)
def _estimate_memo(word: str) -> int:
    return _estimate(word)


def _estimate(word: str) -> int:
    w = ascii_letters(word)
    if not w:
        return 0
    if len(w) > MAX_ESTIMATE_LETTERS:
        return _count_groups(w)
    weights = _model().get("weights")
    if not weights:
        return _rules(w)
    total = _model().get("bias", 0.0) + sum(weights.get(f, 0.0) for f in _all_features(w))
    nets, share = _cnns()
    if nets:  # the CNNs' mean score, mixed in by the share picked on validation words
        cnn = sum(_cnn_score(net, w) for net in nets) / len(nets)
        total = (1 - share) * total + share * cnn
    return max(1, round(total))


def _count_groups(word: str) -> int:
    """len(_groups(word)), at least 1, without building the list."""
    n, end = 0, -1
    for m in _GROUP.finditer(word):
        n += m.start() != end
        end = m.end()
    return max(n, 1)


def ascii_letters(word: str) -> str:
    """word lower-cased, accents dropped, only a-z kept."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if "a" <= c <= "z")
