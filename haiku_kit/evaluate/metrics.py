"""Measures and statistics behind the evaluation: the reference's pyphen counter, the
train-overlap index, bootstrap confidence intervals and pass@k.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from haiku_kit.verify.text import PATTERN, normalize

NEAR_DUPLICATE_RATIO = 0.9
N_BOOT = 1000
# The reference called pyphen.Pyphen(lang="en"), which pyphen resolves to its en_GB dictionary:
# with it all 1,774 haiku of the reference's pyphen-filtered train_haiku.csv pass, with en_US
# only 1,414 do. "en" therefore reproduces the reference's counter.
PYPHEN_LANG = "en"


@functools.lru_cache(maxsize=1)
def _pyphen():
    import pyphen

    return pyphen.Pyphen(lang=PYPHEN_LANG)


def pyphen_counts(text: str) -> list[int]:
    """The reference's per-line syllable counts: non-blank lines split on newlines; a word
    counts as its number of pyphen hyphenation pieces (hyphens already in the word count too)."""
    dic = _pyphen()
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    return [sum(dic.inserted(w).count("-") + 1 for w in line.split()) for line in lines]


def pyphen_is_haiku(text: str, pattern: Sequence[int] = PATTERN) -> bool:
    """The reference's is_haiku: exactly len(pattern) lines whose pyphen counts equal it."""
    return pyphen_counts(text) == list(pattern)


class TrainIndex:
    """Training answers, for the exact (reference) and near-duplicate overlap checks."""

    def __init__(self, answers: Sequence[str] = ()):
        self.exact = {str(a).strip() for a in answers}
        self.normalized = sorted({normalize(str(a)) for a in answers} - {""})
        self._normalized_set = set(self.normalized)

    def __len__(self) -> int:
        return len(self.exact)

    def is_exact(self, text: str) -> bool:
        return text.strip() in self.exact

    def is_near(self, text: str, ratio: float = NEAR_DUPLICATE_RATIO) -> bool:
        norm = normalize(text)
        if not norm:
            return False
        if norm in self._normalized_set:
            return True
        return bool(difflib.get_close_matches(norm, self.normalized, n=1, cutoff=ratio))


def bootstrap_ci(
    values: Sequence[float],
    groups: Sequence[int] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values`.

    With `groups` (prompt index per value) whole prompts are resampled, so k samples of one
    prompt are not counted as k independent observations.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    g = np.arange(x.size) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    sums = np.bincount(g, weights=x)
    counts = np.bincount(g).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def per_prompt(records: list[dict], key: str = "is_haiku") -> list[tuple[int, int]]:
    """(samples, successes) per prompt."""
    n: Counter = Counter()
    c: Counter = Counter()
    for r in records:
        n[r["prompt_index"]] += 1
        c[r["prompt_index"]] += bool(r[key])
    return [(n[p], c[p]) for p in sorted(n)]


def pass_at_k_table(records: list[dict]) -> dict[int, float]:
    counts = per_prompt(records)
    if not counts:
        return {}
    n_min = min(n for n, _ in counts)
    ks = sorted({2**i for i in range(n_min.bit_length()) if 2**i <= n_min} | {n_min})
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


def best_of_k_rate(result, k: int, key: str = "is_haiku") -> float:
    """Share of prompts with a valid haiku (key="good": a good one) among k samples (unbiased
    pass@k on the samples).

    This is the valid rate of write_haiku(k=...) on the same prompts: it returns a valid poem
    exactly when one of its k candidates is valid, and a good one when one is good by the
    judge's parts it ranks by (write.pick_best). Needs >= k samples per prompt.
    """
    records = getattr(result, "records", result)
    counts = per_prompt(records, key)
    if not counts:
        raise ValueError("best_of_k_rate: no records")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
