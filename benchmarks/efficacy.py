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

    python benchmarks/efficacy.py --run runs/demo --run-evals --publish demo
    python benchmarks/efficacy.py --run runs/demo --publish demo-ref-dev

--run-evals reads the evaluations the run made itself (RUN/eval/NAME: its eval split, its
settings) instead of generating again. --publish NAME writes the results into the repository,
benchmarks/results/NAME/: one MODEL.json per model (metrics with 95% CIs, settings), its
generations, table.md, samples.md (12 random poems per model) and run.json (commit, preset,
eval data, n, k, wall times) beside the run's config.yaml. The README's results tables link those files, and a
test checks every figure there against them: no result is typed by hand.

--eval-data also takes a run's data folder (its eval split); --n 0: every prompt. Four samples
per prompt (--k 4) estimate the same one-sample valid share with narrower CIs (the bootstrap
resamples prompts, each with its k samples). Any other --eval-data, --n or --k than the
defaults writes to RUN/efficacy-<eval data>-n<N>-k<K>/, so reruns keep the default's results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from haiku_kit import pipeline, runs, stages
from haiku_kit.config import load_config
from haiku_kit.data.splits import load_eval_data
from haiku_kit.errors import ConfigError
from haiku_kit.evaluate import scoring
from haiku_kit.evaluate.report import summary_table, verdict, write_report
from haiku_kit.evaluate.scoring import EvalResult, judge_lm
from haiku_kit.train import distill

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
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
    p.add_argument("--start", type=int, default=0,
                   help="skip the first START prompts: --start 128 --n 0 is the reference's test "
                        "rows 128-591 (rows 0-127 are the development set)")
    p.add_argument("--k", type=int, default=1, help="samples per prompt (reference: 1)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval")
    p.add_argument("--run-evals", action="store_true",
                   help="read the run's own evaluations (RUN/eval) instead of generating")
    p.add_argument("--publish", metavar="NAME",
                   help="write the results to benchmarks/results/NAME/ (the README links them); "
                        "with --models, only those rows are replaced")
    p.add_argument("--rejudge", metavar="NAME",
                   help="judge the outputs published in benchmarks/results/NAME/ again with "
                        "today's judge (nothing is generated; their cosines are reused)")
    p.add_argument("--results-dir", default=str(RESULTS), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def file_name(model: str) -> str:
    """The results file of an eval row: "sft + constrained" -> sft+constrained."""
    return model.replace(" ", "")


def commit() -> str:
    """The repository's commit, with "+dirty" when the working tree has changes."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def label(name: str) -> str:
    """The table's row name of an eval: "grpo + constrained" -> "SFT→GRPO + constrained"."""
    model = name.removesuffix(runs.CONSTRAINED)
    return LABELS[model] + name[len(model):]


def published(out: Path) -> dict[str, EvalResult]:
    """The rows published in `out`, in the table's order (base, SFT, SFT + constrained, ...),
    keyed by eval name ("sft + constrained")."""
    found = {}
    for model in ADAPTERS:
        for name in (model, model + runs.CONSTRAINED):
            path = out / f"{file_name(name)}.json"
            if path.is_file():
                found[name] = EvalResult.from_files(
                    path, out / f"{file_name(name)}.generations.jsonl")
    return found


def publish(results: dict[str, EvalResult], names: list[str], out: Path, about: dict) -> Path:
    """Write each result (MODEL.json: meta, metrics and CIs; MODEL.generations.jsonl), the table,
    12 random poems per model, run.json and the run's config.yaml into `out`, replacing only those
    files. The table and the poems cover every row in `out`: rows published before and not
    replaced now stay (run.json's "replaced" names the new ones)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, result in zip(names, results.values()):
        saved = result.save(out / ".tmp")
        (out / f"{file_name(name)}.json").write_text((saved / "result.json").read_text())
        shutil.move(saved / "generations.jsonl", out / f"{file_name(name)}.generations.jsonl")
        shutil.rmtree(saved)
    every = published(out)
    if set(every) != set(names):
        about["replaced"] = names
    results = {label(name): result for name, result in every.items()}
    write_report(results, out / ".report")
    for page in ("table.md", "samples.md"):
        shutil.move(out / ".report" / page, out / page)
    shutil.rmtree(out / ".report")
    about["preset"] = next(iter(results.values())).meta.get("preset")
    env = Path(about["run"]) / "env.json"  # the code that trained and evaluated the run
    if env.is_file():
        about["run_commit"] = json.loads(env.read_text()).get("haiku_kit", {}).get("git_commit")
    (out / "run.json").write_text(json.dumps(about, indent=2, ensure_ascii=False) + "\n")
    if Path(about["config"]).is_file():  # every setting of the run (kept when the run is gone)
        shutil.copyfile(about["config"], out / "config.yaml")
    return out


def rejudge_folder(out: Path) -> int:
    """--rejudge: every row published in `out` judged again by today's judge (scoring.rejudge;
    the word-order check where the row had it), the files rewritten, run.json's "rejudged"
    naming the commit that judged."""
    rows = published(out)
    if not rows:
        print(f"--rejudge {out}: no published results there", file=sys.stderr)
        return 2
    about = json.loads((out / "run.json").read_text())
    lm = judge_lm() if any(r.meta.get("judge_word_order") for r in rows.values()) else None
    now = commit()
    again = {name: scoring.rejudge(r, lm if r.meta.get("judge_word_order") else None, now)
             for name, r in rows.items()}
    for name in rows:
        print(f"{label(name):24s} good {rows[name].metrics.get('good', float('nan')):.3f} -> "
              f"{again[name].metrics.get('good', float('nan')):.3f}")
    about["rejudged"] = now
    publish(again, list(again), out, about)
    print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rejudge:
        return rejudge_folder(Path(args.results_dir) / args.rejudge)
    eval_data = Path(args.eval_data)
    if not args.run_evals and not eval_data.exists():
        print(f"eval data {eval_data} not found (../shared is absent?); nothing to do")
        return 1
    if args.n < 0 or args.k < 1 or args.start < 0:
        print(f"--n {args.n} --k {args.k} --start {args.start}: need --n >= 0, --k >= 1 and "
              "--start >= 0", file=sys.stderr)
        return 2
    # "sft+constrained" (the results file's name) and "sft + constrained" (the row's) both work
    chosen = [m.strip().replace("+constrained", runs.CONSTRAINED).replace(" " + runs.CONSTRAINED,
                                                                            runs.CONSTRAINED)
              for m in args.models.split(",") if m.strip()]
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
    if args.run_evals:
        results = {label(n): EvalResult.load(run / "eval" / file_name(n)) for n in chosen}
        print(summary_table(results))
        if args.publish:
            out = publish(results, chosen, Path(args.results_dir) / args.publish, {
                "commit": commit(), "run": str(run), "evaluated": "the run's own eval split (RUN/eval)",
                "config": str(run / "config.yaml"), "timings_s": timings})
            print(f"\nresults: {out}")
        return 0
    rows, _ = load_eval_data(str(eval_data))
    rows = rows[args.start:][: args.n or None]
    out = run / ("efficacy" if (str(eval_data), args.n, args.k, args.start) == (
        str(EVAL_DATA), 128, 1, 0) else f"efficacy-{eval_data.stem}-{args.start}-n{len(rows)}-k{args.k}")
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

    print(f"\nEfficacy on prompts {args.start}-{args.start + len(rows) - 1} of {eval_data.name} "
          f"(k={args.k}), "
          f"run {run}:\n")  # fmt: skip
    print(summary_table(results))
    line = verdict(results, before="SFT", after="SFT→GRPO")
    if line:
        print(line)
    print("\nValues: mean [95% bootstrap CI]. Reference (Gemma 3 1B, 1 sample/prompt): base "
          "0.037/-0.100/-0.063, SFT 100 steps 0.135/0.110/0.245, SFT->dense GRPO (1,100 steps) "
          "0.088/0.371/0.459, SFT->sparse->dense GRPO (2,100 steps) 0.235/0.059/0.294.")  # fmt: skip
    print("\nWall time per stage (pipeline run):")
    for stage in runs.STAGES:
        if stage in timings:
            print(f"  {stage:9s} {timings[stage]:8.1f} s")
    print(f"  {'total':9s} {sum(timings.values()):8.1f} s")
    print("Wall time of this benchmark's evaluations:")
    for name, seconds in eval_times.items():
        print(f"  {name:9s} {seconds:8.1f} s")
    print(f"\nfull table: {out / 'report' / 'table.md'}")
    if args.publish:
        published = publish(results, chosen, Path(args.results_dir) / args.publish, {
            "commit": commit(), "run": str(run), "eval_data": str(eval_data),
            "rows": [args.start, args.start + len(rows)], "n": len(rows),
            "k": args.k, "config": str(run / "config.yaml"), "timings_s": timings,
            "eval_s": eval_times})
        print(f"results: {published}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
