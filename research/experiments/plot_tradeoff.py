"""Valid share against Similarity on the first 128 reference prompts, one point per measured
model (free sampling at the reference's settings): the trade-off research/log.md describes.

    ../.venv/bin/python plot_tradeoff.py --runs ../runs/F6 --out ../docs/similarity_tradeoff.png

Points: every results.jsonl row measured on 128 reference prompts at T = 1 (checkpoint probes
and greedy rows left out), plus the `benchmarks/efficacy.py` rows of the --runs folders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def points(runs: list[str]) -> list[tuple[str, float, float, list[float]]]:
    out = []
    for line in (HERE / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        ref = row.get("results", {}).get("ref")
        if not ref or ref.get("n") != 128 or row["label"].startswith("T0") \
                or row["experiment"].startswith(("C5-", "P2", "P6")):
            continue
        out.append((row["experiment"], ref["haiku"], ref["similarity"], ref["haiku_ci"]))
    for run in runs:
        for model in ("sft", "grpo"):
            result = Path(run) / "efficacy" / model / "result.json"
            if result.is_file():
                data = json.loads(result.read_text())
                out.append((f"{Path(run).name} {model}", data["metrics"]["haiku"],
                            data["metrics"]["similarity"], data["ci"]["haiku"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, valid, sim, ci in points(args.runs):
        ax.errorbar(sim, 100 * valid, yerr=[[100 * (valid - ci[0])], [100 * (ci[1] - valid)]],
                    fmt="o", ms=4, capsize=2, alpha=0.8)
        ax.annotate(name, (sim, 100 * valid), textcoords="offset points", xytext=(4, 3),
                    fontsize=7)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("Similarity on ref128 (mean cos(topic, poem) - 0.5)")
    ax.set_ylabel("valid haiku on ref128, % [95% CI]")
    ax.set_title("Every measured model: validity against topicality (reference prompts)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
