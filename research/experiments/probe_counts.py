"""Does the model know how many syllables a word has? A cheap probe for route 4 (visible counting).

Few-shot prompt ("word: autumn = 2\\n..."), then one forward pass per test word; the prediction
is the argmax over the digit tokens 1-6 after "= ". Test words: the most frequent words of the
embedded training poems (minus the few-shot words), gold = the kit's most common count.
Reports accuracy overall and by gold count, and the chance that all ~15 words of a poem are
counted right (accuracy^15), which bounds a count-then-write format without further training.

    python experiments/probe_counts.py [--adapter ADAPTER] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter

import harness as H

SHOTS = [("autumn", 2), ("rain", 1), ("butterfly", 3), ("window", 2), ("moon", 1), ("library", 3)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adapter", default=None)
    p.add_argument("--n", type=int, default=150)
    args = p.parse_args()

    import torch

    from haiku_kit.data.sources import load_embedded
    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.verify.syllables import analyze_line

    freq = Counter()
    gold = {}
    shot_words = {w.lower() for w, _ in SHOTS}
    for row in load_embedded():
        for line in row["haiku"].split("\n"):
            for w in analyze_line(line).words:
                word = w.text.lower().strip("'")
                if re.fullmatch(r"[a-z]+", word) and word not in shot_words and w.source != "symbol":
                    freq[word] += 1
                    gold[word] = w.common
    words = [w for w, _ in freq.most_common(args.n)]
    cfg = H.config("probe")
    model, tok = load_for(cfg, args.adapter, trainable=False)
    prefix = "Syllables per word.\n" + "".join(f"word: {w} = {n}\n" for w, n in SHOTS)
    digit_ids = [tok.encode(str(d), add_special_tokens=False)[-1] for d in range(1, 7)]
    began = time.perf_counter()
    preds = {}
    for start in range(0, len(words), 32):
        batch = words[start : start + 32]
        texts = [prefix + f"word: {w} =" for w in batch]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            logits = model(**enc, logits_to_keep=1).logits[:, -1, :]
        # the next token may be " 2" or " " then "2": score digits after a forced space too
        space = tok.encode(" ", add_special_tokens=False)
        best = logits[:, digit_ids].argmax(-1).tolist()
        if space and logits[:, space[-1]].mean() > logits[:, digit_ids].max(-1).values.mean():
            enc2 = tok([t + " " for t in texts], return_tensors="pt", padding=True)
            with torch.inference_mode():
                best = model(**enc2, logits_to_keep=1).logits[:, -1, digit_ids].argmax(-1).tolist()
        for w, b in zip(batch, best):
            preds[w] = b + 1
    acc = sum(preds[w] == gold[w] for w in words) / len(words)
    weighted = sum(freq[w] * (preds[w] == gold[w]) for w in words) / sum(freq[w] for w in words)
    by_count = {}
    for n in sorted({gold[w] for w in words}):
        ws = [w for w in words if gold[w] == n]
        by_count[n] = (len(ws), sum(preds[w] == n for w in ws) / len(ws))
    wrong = [(w, gold[w], preds[w]) for w in words if preds[w] != gold[w]][:25]
    out = {"adapter": args.adapter, "n_words": len(words), "accuracy": acc, "token_weighted": weighted,
           "all_15_right": weighted ** 15, "by_gold_count": by_count,
           "pred_hist": dict(Counter(preds.values())), "wrong_examples": wrong,
           "seconds": time.perf_counter() - began}
    print(json.dumps(out, indent=1))
    H.log("X1-count-probe", args.adapter or "base", {"n": args.n}, {"s": out["seconds"]}, out)


if __name__ == "__main__":
    main()
