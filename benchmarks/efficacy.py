"""Efficacy benchmark: base vs SFT vs SFT->GRPO on the reference's own eval prompts.

Runs the cpu-demo pipeline (or reuses a finished run folder), then evaluates every model of the
run on the first 128 prompts of ../shared/data/gemma_haiku/eval_data.json (the Gemma-3-1B
reference run's eval set, prompts used verbatim) and prints Haiku / Similarity / Total /
Train Overlap with 95% bootstrap CIs, and the wall time of each pipeline stage.

    python benchmarks/efficacy.py                      # runs cpu-demo into runs/efficacy
    python benchmarks/efficacy.py --run runs/demo      # reuses a finished run
    python benchmarks/efficacy.py --run runs/demo --n 16 --k 1
    python benchmarks/efficacy.py --run runs/full --models sft,grpo --n 592 --k 4
    python benchmarks/efficacy.py --run runs/full --models sft,grpo --eval-data runs/full/data --n 0

--eval-data also takes a run's data folder (its eval split); --n 0: every prompt. Four samples
per prompt (--k 4) estimate the same one-sample valid share with narrower CIs (the bootstrap
resamples prompts, each with its k samples). Any other --eval-data, --n or --k than the
defaults writes to RUN/efficacy-<eval data>-n<N>-k<K>/, so reruns keep the default's results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from haiku_kit import pipeline, runs, stages
from haiku_kit.config import load_config
from haiku_kit.data.splits import load_eval_data
from haiku_kit.errors import ConfigError
from haiku_kit.evaluate.report import summary_table, verdict, write_report
from haiku_kit.train import distill

REPO = Path(__file__).resolve().parents[1]
EVAL_DATA = REPO.parent / "shared" / "data" / "gemma_haiku" / "eval_data.json"
ADAPTERS = {"base": None, "sft": "sft/adapter", "grpo": "grpo/adapter"}
LABELS = {"base": "base", "sft": "SFT", "grpo": "SFT→GRPO"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", help="a finished run folder to reuse (else the pipeline runs)")
    p.add_argument("--preset", default=pipeline.DEMO_PRESET)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/efficacy", help="run folder when the pipeline runs")
    p.add_argument("--eval-data", default=str(EVAL_DATA),
                   help="chat-format eval json, or a run's data folder (its eval split)")
    p.add_argument("--models", default="", help="comma-separated evals of the run (default: all)")
    p.add_argument("--n", type=int, default=128, help="first N prompts (0: all)")
    p.add_argument("--k", type=int, default=1, help="samples per prompt (reference: 1)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eval_data = Path(args.eval_data)
    if not eval_data.exists():
        print(f"eval data {eval_data} not found (../shared is absent?); nothing to do")
        return 1
    if args.n < 0 or args.k < 1:
        print(f"--n {args.n} --k {args.k}: need --n >= 0 and --k >= 1", file=sys.stderr)
        return 2
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    known = [*ADAPTERS, *(m + runs.CONSTRAINED for m in ADAPTERS if ADAPTERS[m])]
    if any(m not in known for m in chosen):
        print(f"--models {args.models}: {next(m for m in chosen if m not in known)!r} is not "
              f"one of {', '.join(known)}", file=sys.stderr)
        return 2
    if args.run:
        run = Path(args.run).resolve()
        if not (run / "config.yaml").is_file():
            print(f"--run {run}: not a run folder (no config.yaml)", file=sys.stderr)
            return 1
    else:
        run = pipeline.run_pipeline(args.preset, args.overrides, args.out, log_output=True)
    try:
        cfg = load_config(run / "config.yaml")
    except ConfigError as err:
        print(f"--run {run}: {err}", file=sys.stderr)
        return 2
    timings = (
        json.loads((run / "timings.json").read_text()) if (run / "timings.json").exists() else {}
    )

    names = runs.expected_evals(cfg)
    chosen = chosen or names
    if any(m not in names for m in chosen):
        print(f"--models {args.models}: {next(m for m in chosen if m not in names)!r} is not an "
              f"eval of {run} (its evals: {', '.join(names)})", file=sys.stderr)
        return 2
    rows, _ = load_eval_data(str(eval_data))
    rows = rows[: args.n or None]
    out = run / ("efficacy" if (str(eval_data), args.n, args.k) == (str(EVAL_DATA), 128, 1)
                 else f"efficacy-{eval_data.stem}-n{len(rows)}-k{args.k}")
    _, train_answers = load_eval_data(str(run / "data"))  # the run's sft + rl answers
    train_answers += distill.distilled_answers(cfg)  # and the poems its rounds trained on
    settings = {"k": args.k}
    if args.max_new_tokens:
        settings["max_new_tokens"] = args.max_new_tokens

    results, eval_times = {}, {}
    for name in chosen:
        model = name.removesuffix(runs.CONSTRAINED)  # "sft + constrained": the SFT adapter, decoded
        constrained = {"constrained": True, "candidates": cfg.eval.candidates} if model != name else {}
        adapter = run / ADAPTERS[model] if ADAPTERS[model] else None
        began = time.perf_counter()
        result = stages.evaluate_rows(cfg, name, rows, train_answers, adapter, **settings, **constrained)
        eval_times[name] = time.perf_counter() - began
        result.save(out / name)
        results[LABELS[model] + name[len(model):]] = result
    write_report(results, out / "report")

    print(f"\nEfficacy on the first {len(rows)} prompts of {eval_data.name} (k={args.k}), "
          f"run {run}:\n")  # fmt: skip
    print(summary_table(results))
    line = verdict(results, before="SFT", after="SFT→GRPO")
    if line:
        print(line)
    print("\nValues: mean [95% bootstrap CI]. Reference (Gemma 3 1B, 1 sample/prompt): base "
          "0.037/-0.100/-0.063, SFT 0.135/0.110/0.245, SFT+GRPO 0.088/0.371/0.459.")  # fmt: skip
    print("\nWall time per stage (pipeline run):")
    for stage in runs.STAGES:
        if stage in timings:
            print(f"  {stage:9s} {timings[stage]:8.1f} s")
    print(f"  {'total':9s} {sum(timings.values()):8.1f} s")
    print("Wall time of this benchmark's evaluations:")
    for name, seconds in eval_times.items():
        print(f"  {name:9s} {seconds:8.1f} s")
    print(f"\nfull table: {out / 'report' / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
