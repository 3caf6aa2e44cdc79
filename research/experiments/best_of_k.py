"""Best of k free samples, picked by the judge: the share of prompts where one of k samples is
valid / good (unbiased pass@k, metrics.best_of_k_rate), with 95% bootstrap CIs over prompts.
Reads an eval's generations.jsonl with k samples per prompt (e.g. from
`benchmarks/efficacy.py --run RUN --models grpo --eval-data RUN/data --n 64 --k 8`) and appends
one row per k to research/experiments/results.jsonl (experiment "best_of_k").

    python research/experiments/best_of_k.py runs/demo-v2/efficacy-data-0-n64-k8/grpo NAME
"""
import json
import sys
from pathlib import Path

import numpy as np

from haiku_kit.evaluate.metrics import best_of_k_rate, pass_at_k, per_prompt

folder, name = Path(sys.argv[1]), sys.argv[2]
records = [json.loads(line) for line in (folder / "generations.jsonl").open(encoding="utf-8")]
most = min(n for n, _ in per_prompt(records))
rng = np.random.default_rng(0)
out = Path(__file__).with_name("results.jsonl")
for k in (1, 2, 4, 8):
    if k > most:
        break
    row = {"experiment": "best_of_k", "name": name, "source": str(folder), "k": k,
           "prompts": len(per_prompt(records))}
    for key in ("is_haiku", "good"):
        per = np.array([pass_at_k(n, c, k) for n, c in per_prompt(records, key)])
        boots = [per[rng.integers(0, len(per), len(per))].mean() for _ in range(10000)]
        row[key] = round(best_of_k_rate(records, k, key), 4)
        row[f"{key}_ci"] = [round(float(x), 4) for x in np.percentile(boots, [2.5, 97.5])]
    print(json.dumps(row))
    with out.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
