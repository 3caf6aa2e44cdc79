"""Train the spelling-only syllable estimator shipped as haiku_kit/resources/syllable_model.json.

Small character CNNs: letters (word edges marked) -> embeddings -> residual 1-D convolutions
-> one "syllable nucleus" score per letter in [0, 1]; the net's score is the sum. The shipped estimate mixes the nets' mean score with the linear
model's (scripts/train_syllable_estimator.py, trained first) and rounds; the CNN share is
picked on the validation slice.
Trained with torch on CPU by squared error between that sum and the CMUdict count (the valid
count nearest the current prediction, for words with several pronunciations), EXCLUDING the
gold words list and the fixed held-out CMUdict slice (hash % 20 == 0), so benchmarks are
honest; the validation slice (hash % 20 == 1) picks each net's epoch. One net per
--members entry (conv width:seed), about 8 minutes each on one CPU thread. Weights are
exported as JSON (haiku_kit/resources/syllable_cnn.json) and run at inference in numpy
(haiku_kit.verify.syllables). Needs torch (dev only, not at run time).

    python scripts/train_syllable_cnn.py [--members 5:0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from train_syllable_estimator import GOLD, cmudict_counts, is_heldout, load_gold

ALPHABET = "^$abcdefghijklmnopqrstuvwxyz"  # index 0 is padding
PAD = 3  # edge markers on each side
OUT = Path(__file__).resolve().parents[1] / "haiku_kit" / "resources" / "syllable_cnn.json"


def encode(word: str) -> list[int]:
    return [1 + ALPHABET.index(c) for c in "^" * PAD + word + "$" * PAD]


class Net(nn.Module):
    def __init__(self, dim: int, layers: int, width: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(len(ALPHABET) + 1, dim, padding_idx=0)
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, width, padding=width // 2) for _ in range(layers)
        )
        self.out = nn.Conv1d(dim, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x).transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(h))
        return torch.sigmoid(self.out(h)).squeeze(1)  # (batch, length)


def batches(items, size, rng):
    items = items[:]
    rng.shuffle(items)
    for k in range(0, len(items), size):
        yield items[k : k + size]


def tensors(chunk):
    n = max(len(w) for w, _ in chunk) + 2 * PAD
    x = torch.zeros(len(chunk), n, dtype=torch.long)
    mask = torch.zeros(len(chunk), n)
    for r, (w, _) in enumerate(chunk):
        ids = encode(w)
        x[r, : len(ids)] = torch.tensor(ids)
        mask[r, PAD : PAD + len(w)] = 1.0
    return x, mask


def predict(net, items, size=2048):
    out = []
    with torch.no_grad():
        for k in range(0, len(items), size):
            x, mask = tensors(items[k : k + size])
            out.extend((net(x) * mask).sum(1).tolist())
    return out


def accuracy(net, items) -> float:
    preds = predict(net, items)
    return float(np.mean([max(1, round(p)) in c for p, (_, c) in zip(preds, items)]))


def as_json(net: Net) -> dict:
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}

    def arr(a):
        return np.round(a.astype(float), 5).tolist()

    return {
        "alphabet": ALPHABET,
        "pad": PAD,
        "embedding": arr(sd["emb.weight"]),
        # conv weights as (width, in, out) so inference is one matmul per layer
        "convs": [
            {
                "w": arr(sd[f"convs.{k}.weight"].transpose(2, 1, 0)),
                "b": arr(sd[f"convs.{k}.bias"]),
            }
            for k in range(len(net.convs))
        ],
        "out_w": arr(sd["out.weight"][0, :, 0]),
        "out_b": float(sd["out.bias"][0]),
    }


def export(nets: list[dict], share: float, path: Path) -> None:
    model = {
        "about": "haiku_kit spelling-only syllable estimator (char CNNs); "
        "see scripts/train_syllable_cnn.py",
        "share": share,
        "nets": nets,
    }
    path.write_text(json.dumps(model, separators=(",", ":")))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def train_net(train, valid, width: int, seed: int, args) -> Net:
    """One net, seeded; the epoch with the best validation accuracy is kept."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = Net(args.dim, args.layers, width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(train) // args.batch + 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    best, best_state, start = -1.0, None, time.time()
    for epoch in range(args.epochs):
        net.train()
        total = 0.0
        for chunk in batches(train, args.batch, rng):
            x, mask = tensors(chunk)
            pred = (net(x) * mask).sum(1)
            with torch.no_grad():  # several pronunciations: aim at the nearest valid count
                target = torch.tensor(
                    [min(c, key=lambda n: abs(n - p)) for p, (_, c) in zip(pred.tolist(), chunk)],
                    dtype=torch.float,
                )
            loss = ((pred - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(chunk)
        net.eval()
        acc = accuracy(net, valid)
        print(
            f"width {width} seed {seed} epoch {epoch + 1}: loss {total / len(train):.4f}, "
            f"validation {acc:.4f}, {time.time() - start:.0f}s",
            flush=True,
        )
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in net.state_dict().items()}
        if time.time() - start > args.minutes * 60:
            print("time limit reached")
            break
    net.load_state_dict(best_state)
    print(f"best validation accuracy {best:.4f}; train accuracy {accuracy(net, train):.4f}")
    return net


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gold", type=Path, default=GOLD)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--members", default="5:0", help="conv width:seed, one net each")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--minutes", type=float, default=9.0, help="per net: stop after this long")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the machine is shared; more threads were slower

    gold = {w.lower() for w in load_gold(args.gold)}
    words = {w: c for w, c in cmudict_counts().items() if w not in gold and not is_heldout(w)}
    valid = [(w, c) for w, c in words.items() if zlib.crc32(w.encode()) % 20 == 1]
    train = [(w, c) for w, c in words.items() if zlib.crc32(w.encode()) % 20 != 1]
    print(f"train {len(train)}, validation {len(valid)}")
    nets = []
    for member in args.members.split(","):
        width, seed = (int(v) for v in member.split(":"))
        nets.append(train_net(train, valid, width, seed, args))
    share = pick_share(nets, valid)
    export([as_json(net) for net in nets], share, args.out)


def pick_share(nets: list[Net], valid) -> float:
    """The CNN share of the mix with the linear model that is best on the validation slice."""
    from haiku_kit.verify.estimator import _all_features, _model

    weights, bias = _model()["weights"], _model().get("bias", 0.0)
    lin = np.array([bias + sum(weights.get(f, 0.0) for f in _all_features(w)) for w, _ in valid])
    cnn = np.mean([predict(net, valid) for net in nets], axis=0)
    scores = {}
    for share in (0.3, 0.4, 0.5, 0.6, 0.7):
        mixed = (1 - share) * lin + share * cnn
        scores[share] = np.mean([max(1, round(p)) in c for p, (_, c) in zip(mixed, valid)])
        print(f"CNN share {share}: validation {scores[share]:.4f}")
    return max(scores, key=scores.get)


if __name__ == "__main__":
    main()
