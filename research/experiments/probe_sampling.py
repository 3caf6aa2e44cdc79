"""How much of a model's validity is lost to sampling: one adapter measured on the fixed sets
at greedy, at lower temperatures and at the reference sampling.

    python experiments/probe_sampling.py --name P1 --adapter runs/F2/sft/adapter --temps 0,0.7,1.0
"""

from __future__ import annotations

import argparse
import time

import harness as H


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--temps", default="0,0.7,1.0")
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-demo", type=int, default=64)
    p.add_argument("--k", type=int, default=1, help="samples per prompt (CIs resample prompts)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    from haiku_kit.model.load import load_from_config

    cfg = H.config(args.name, args.overrides)
    sets = H.eval_sets(args.n_ref, args.n_demo)
    model_tok = load_from_config(cfg, args.adapter, trainable=False)
    for t in (float(x) for x in args.temps.split(",")):
        sampling = "greedy" if t == 0 else dict(H.REF_SAMPLING, temperature=t)
        began = time.perf_counter()
        res = H.measure(cfg, args.adapter, f"{args.name}/T{t}", sets, sampling=sampling,
                        model_tok=model_tok, k=args.k)
        H.log(args.name, f"T{t}", {"adapter": args.adapter, "temperature": t, "k": args.k}, {
            "eval_s": time.perf_counter() - began}, res)


if __name__ == "__main__":
    main()
