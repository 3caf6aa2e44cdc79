"""Measure finished adapters the way good.py does (free, and optionally constrained with clean
line ends), appending to results.jsonl under experiment "good".

    python research/experiments/measure_runs.py --label J2 --adapter sft=runs/demo/sft/adapter --constrained
"""

from __future__ import annotations

import argparse

import good as G
import harness as H


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--label", required=True)
    p.add_argument("--adapter", action="append", default=[], help="PHASE=PATH")
    p.add_argument("--constrained", action="store_true")
    args = p.parse_args()
    sets = H.eval_sets(n_ref=128, n_demo=64)
    results = {}
    for item in args.adapter:
        phase, path = item.split("=", 1)
        results[phase] = G.measure(args.label, phase, path, sets)
        if args.constrained:
            results[phase + "+constrained"] = G.measure(args.label, phase + "+constrained", path,
                                                        sets, constrained=True)
    H.log("good", args.label, {"adapters": args.adapter}, {}, results)


if __name__ == "__main__":
    main()
