"""Issue 37's training experiments: the cpu-demo preset + overrides, trained through the kit's
own CLI (`haiku-kit train sft|grpo`), then each model measured through the judge on the fixed
development sets at the reference sampling, one sample per prompt:

- "demo": the first 64 prompts of cpu-demo's eval split (the demo's own table),
- "ref": the reference eval rows 0-127 (the development set; rows 128-591 are never read here).

Appends one line per model to research/experiments/results.jsonl (good, valid, fluent, on topic,
similarity with 95% CIs, 6 poems drawn at random) and prints it.

    python research/experiments/good.py --name X1 --set distill.corpus= --set distill.topics=300
    python research/experiments/good.py --name X2 --phases grpo --set grpo.init=runs/exp/X1/sft/adapter
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import harness as H

KIT = [sys.executable, "-m", "haiku_kit.cli"]


def train(phase: str, name: str, preset: str, overrides: list[str]) -> float:
    began = time.perf_counter()
    cmd = KIT + ["train", phase, "--preset", preset, "--out", str(H.RUNS / name)]
    if overrides:
        cmd += ["--set", *overrides]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - began


def measure(name: str, phase: str, adapter, sets: dict, constrained: bool = False) -> dict:
    from haiku_kit.evaluate.scoring import run_eval
    from haiku_kit.generate.write import SamplingSettings
    from haiku_kit.model.load import load_from_config

    cfg = H.config(name)
    model, tok = load_from_config(cfg, adapter, trainable=False)
    out = {}
    for set_name, rows in sets.items():
        began = time.perf_counter()
        res = run_eval(model, rows, tokenizer=tok, k=1, seed=0,
                       sampling=SamplingSettings(**H.REF_SAMPLING), max_new_tokens=48,
                       batch_size=32, name=f"{name}/{phase}", constrained=constrained)
        res.save(H.RUNS / name / "measure" / phase / set_name)
        m, ci = res.metrics, res.ci
        recs = res.records
        draw = random.Random(0).sample(range(len(recs)), 6)
        out[set_name] = {
            "n": len(recs),
            **{key: m.get(key) for key in ("good", "haiku", "fluent", "on_topic", "original",
                                             "similarity")},
            **{f"{key}_ci": ci.get(key) for key in ("good", "haiku", "similarity")},
            "eval_s": round(time.perf_counter() - began, 1),
            "poems": [recs[i].get("poem") or recs[i]["completion"] for i in draw],
            "good_bits": "".join("1" if r.get("good") else "0" for r in recs),
        }
        s = out[set_name]
        print(f"[{name}/{phase}] {set_name}: good {s['good']:.3f} {s['good_ci']} valid "
              f"{s['haiku']:.3f} fluent {s['fluent']:.3f} sim {s['similarity']:.3f}", flush=True)
        for poem in s["poems"]:
            print("   ", poem.replace("\n", " / "))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--phases", default="sft,grpo")
    p.add_argument("--measure", default="sft,grpo", help="which phases' adapters to measure")
    p.add_argument("--n-ref", type=int, default=128)
    p.add_argument("--n-demo", type=int, default=64)
    args = p.parse_args()

    timings = {}
    for phase in args.phases.split(","):
        timings[phase] = round(train(phase, args.name, args.preset, args.overrides), 1)
    sets = H.eval_sets(n_ref=args.n_ref, n_demo=args.n_demo)
    results = {}
    for phase in args.measure.split(","):
        adapter = H.RUNS / args.name / phase / "adapter"
        if adapter.is_dir():
            results[phase] = measure(args.name, phase, adapter, sets)
    H.log("good", args.name, {"preset": args.preset, "overrides": args.overrides,
                              "phases": args.phases}, timings, results)
    print(json.dumps({"timings": timings}))


if __name__ == "__main__":
    main()
