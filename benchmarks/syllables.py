"""Syllable counting benchmark: word accuracy of the dictionary path, the spelling-only
estimator and pyphen (baseline), on the gold words list and the held-out CMUdict slice; then
`check` throughput on short lines (one core, warm cache).

    python benchmarks/syllables.py
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_syllable_estimator import GOLD, cmudict_counts, is_heldout, load_gold

from haiku_kit.verify.haiku import check
from haiku_kit.verify.syllables import counts, estimate


def vowel_groups(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouy]+", word.lower())))


def accuracy(items: list[tuple[str, frozenset[int]]], method) -> float:
    return sum(method(w) in gold for w, gold in items) / len(items)


def main() -> None:
    import pyphen

    hyph = pyphen.Pyphen(lang="en_US")
    methods = {
        "dictionary path (gold in counts)": None,
        "estimator alone": estimate,
        "pyphen en_US (baseline)": lambda w: len(hyph.inserted(w).split("-")),
        "vowel-group regex (baseline)": vowel_groups,
    }
    gold = load_gold(GOLD)
    heldout = [(w, c) for w, c in cmudict_counts().items() if is_heldout(w) and w not in gold]
    sets = {}
    if gold:
        sets[f"gold words list ({len(gold)} words)"] = [
            (w, frozenset({n})) for w, n in gold.items()
        ]
    else:
        print(f"gold words list not found at {GOLD}: skipped")
    sets[f"held-out CMUdict slice ({len(heldout)} words; any listed count)"] = [
        (w, frozenset(c)) for w, c in heldout
    ]
    for name, items in sets.items():
        print(f"\n{name}")
        for label, method in methods.items():
            if method is None:
                acc = sum(bool(g & counts(w)) for w, g in items) / len(items)
            else:
                acc = accuracy(items, method)
            print(f"  {label:<36} {acc:7.2%}")

    lines = short_lines()
    for line in lines:  # warm the caches
        check(line)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        for line in lines:
            check(line)
        n += len(lines)
    rate = n / (time.perf_counter() - start)
    print(f"\ncheck() on {len(lines)} distinct 3-line short poems, one core, warm cache:")
    print(f"  {rate:,.0f} checks/s = {3 * rate:,.0f} lines/s")
    cold_lines = short_lines(10_000, seed=1)
    start = time.perf_counter()
    for line in cold_lines:
        check(line)
    cold = len(cold_lines) / (time.perf_counter() - start)
    print(f"check() on {len(cold_lines)} new poems (only the word cache warm):")
    print(f"  {cold:,.0f} checks/s = {3 * cold:,.0f} lines/s")


def short_lines(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [
        "golden",
        "leaves",
        "descend",
        "car",
        "turns",
        "a",
        "sudden",
        "swift",
        "shift",
        "autumn's",
        "quiet",
        "grace",
        "river",
        "moon",
        "cherry",
        "blossom",
        "falls",
        "silent",
        "pond",
        "frog",
        "jumps",
        "water",
        "sound",
        "winter",
        "wind",
        "evening",
    ]
    return [
        " / ".join(" ".join(rng.choices(vocab, k=rng.randint(2, 5))) for _ in range(3))
        for _ in range(n)
    ]


if __name__ == "__main__":
    main()
