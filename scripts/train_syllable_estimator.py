"""Train the linear half of the spelling-only syllable estimator (resources/syllable_model.json;
the estimate averages it with the character CNNs of scripts/train_syllable_cnn.py).

A linear model: each vowel group of a word contributes the summed weights of its context
features (the group with 1-3 letters either side, word edges marked); the word's estimate is
round(bias + sum over groups + word-edge corrections). Fit by ridge least squares on CMUdict
words (refit once towards the valid count nearest the first fit, for words with several
pronunciations), EXCLUDING the gold words list and a fixed held-out CMUdict slice (see
`is_heldout`), so benchmarks are honest; a further slice (hash % 20 == 1) is the validation
set used to pick --damp and --min-count. Needs numpy and scipy (dev only, not at run time).

    python scripts/train_syllable_estimator.py [--gold PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO.parent / "shared" / "data" / "syllable_gold" / "words_syllable.json"
OUT = REPO / "haiku_kit" / "resources" / "syllable_model.json"


def is_heldout(word: str) -> bool:
    """The fixed held-out CMUdict slice: about 5% of words, chosen by a stable hash."""
    return zlib.crc32(word.encode()) % 20 == 0


def cmudict_counts() -> dict[str, frozenset[int]]:
    """Plain a-z CMUdict words -> all counts, plus the first pronunciation's count under key."""
    from haiku_kit.verify.syllables import _dictionary

    return {w: c for w, c in _dictionary().items() if re.fullmatch(r"[a-z]+", w)}


def load_gold(path: Path) -> dict[str, int]:
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import lsqr

    from haiku_kit.verify.estimator import _all_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--gold", type=Path, default=GOLD)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--min-count", type=int, default=3)
    ap.add_argument("--damp", type=float, default=2.0)
    args = ap.parse_args()

    gold = {w.lower() for w in load_gold(args.gold)}
    words = {w: c for w, c in cmudict_counts().items() if w not in gold and not is_heldout(w)}
    valid = {w: c for w, c in words.items() if zlib.crc32(w.encode()) % 20 == 1}
    words = {w: c for w, c in words.items() if w not in valid}  # validation: for tuning only
    feats = {w: _all_features(w) for w in words}
    freq = Counter(f for fs in feats.values() for f in set(fs))
    vocab = {f: k for k, f in enumerate(sorted(f for f, n in freq.items() if n >= args.min_count))}
    rows, cols = [], []
    for r, w in enumerate(words):
        for f in feats[w]:
            if f in vocab:
                rows.append(r)
                cols.append(vocab[f])
    x = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(words), len(vocab)))
    y = np.array([c[0] for c in words.values()], dtype=float)
    bias = 0.0
    weights = lsqr(x, y - bias, damp=args.damp, iter_lim=3000)[0]
    # Words with several pronunciations: refit towards the valid count nearest the first fit.
    first = x @ weights + bias
    y = np.array([min(c, key=lambda n: abs(n - p)) for c, p in zip(words.values(), first)])
    weights = lsqr(x, y - bias, damp=args.damp, iter_lim=3000, x0=weights)[0]
    pred = np.maximum(1, np.rint(x @ weights + bias))
    ok = np.mean([p in c for p, c in zip(pred, words.values())])
    print(f"train words {len(words)}, features {len(vocab)}, train accuracy {ok:.4f}")
    wv = {f: v for f, v in zip(sorted(vocab, key=vocab.get), weights)}
    hits = [
        max(1, round(bias + sum(wv.get(f, 0) for f in _all_features(w)))) in c
        for w, c in valid.items()
    ]
    print(f"validation words {len(valid)}, accuracy {sum(hits) / len(hits):.4f}")
    names = sorted(vocab, key=vocab.get)
    model = {
        "about": "haiku_kit spelling-only syllable estimator; see scripts/train_syllable_estimator.py",
        "bias": bias,
        "weights": {f: round(float(v), 4) for f, v in zip(names, weights) if abs(v) >= 5e-4},
    }
    args.out.write_text(json.dumps(model, separators=(",", ":"), sort_keys=True))
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {len(model['weights'])} weights)"
    )


if __name__ == "__main__":
    main()
