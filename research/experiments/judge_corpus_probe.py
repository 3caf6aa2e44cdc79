"""Which sampler gives the most judge-passing poems per minute from an SFT adapter (issue 37, J3).

Samples one poem per training topic (sft + rl splits of the demo's data, never eval) under each
setting, judges every poem (rules, on topic, original; the word-order LM on those that pass), and
prints pass rates and wall time. Writes research/experiments/judge_corpus_probe.jsonl.

    python research/experiments/judge_corpus_probe.py --adapter runs/demo/sft/distill/sft-adapter --n 96
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import harness as H

SETTINGS = {
    "free": {"constrained": False},
    "constrained": {"constrained": True, "candidates": 1},
    "constrained-clean": {"constrained": True, "candidates": 1, "clean_line_ends": True},
    "constrained-clean-c4": {"constrained": True, "candidates": 4, "clean_line_ends": True},
    "constrained-1syl-clean": {"constrained": True, "candidates": 1, "clean_line_ends": True,
                                   "max_word_syllables": 1},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adapter", required=True)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--temperature", type=float, default=1.0)
    args = p.parse_args()

    from haiku_kit.evaluate.scoring import judge_lm
    from haiku_kit.generate.write import SamplingSettings, generate
    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.distill import training_prompts
    from haiku_kit.verify.judge import Judge

    ds = H.base_splits()
    rows = training_prompts(ds, args.n)
    cfg = H.config("probe")
    model, tok = load_from_config(cfg, args.adapter, trainable=False)
    lm, lm_tok = judge_lm()
    out = H.REPO / "research" / "experiments" / "judge_corpus_probe.jsonl"
    for name in args.settings.split(","):
        t0 = time.time()
        gens = generate(model, tok, [r["prompt"] for r in rows], k=1, seed=1,
                        sampling=SamplingSettings(temperature=args.temperature, top_p=0.95, top_k=64),
                        batch_size=16, max_new_tokens=48, progress=False, **SETTINGS[name])
        t_gen = time.time() - t0
        verdicts = Judge().judge([t[0] for t in gens.texts], [r["topic"] for r in rows],
                                 model=lm, tokenizer=lm_tok)
        wall = time.time() - t0
        n = len(verdicts)
        reasons = Counter(r.split(":")[0].split("'")[0][:40] for v in verdicts for r in v.reasons)
        res = {"setting": name, "adapter": args.adapter, "n": n, "T": args.temperature,
               "valid": sum(v.valid for v in verdicts) / n,
               "fluent": sum(v.fluent for v in verdicts) / n,
               "on_topic": sum(v.on_topic for v in verdicts) / n,
               "good": sum(v.good for v in verdicts) / n,
               "gen_s": round(t_gen, 1), "wall_s": round(wall, 1),
               "top_reasons": reasons.most_common(6),
               "good_poems": [v.poem for v in verdicts if v.good][:4],
               "random_poems": [v.poem for v in verdicts[:4]]}
        print(json.dumps(res, indent=1), flush=True)
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
