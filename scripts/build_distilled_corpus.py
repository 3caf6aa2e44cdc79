"""Build haiku_kit/resources/distilled.jsonl (`distill.corpus: embedded`) from a run.

    python scripts/build_distilled_corpus.py RUN --teacher grpo [--k 2 --temperature 0.7]
        [--best N] [--save-pool POOL.jsonl]
    python scripts/build_distilled_corpus.py --from-pool POOL.jsonl [...] [--best N]
    python scripts/build_distilled_corpus.py RUN [--rounds 3] [--out haiku_kit/resources/distilled.jsonl]

RUN is a `cpu-full` run (`haiku-kit pipeline --preset cpu-full --out RUN`). With `--teacher
grpo` (how the shipped file is built) the run's GRPO model writes --k free poems per training
topic (distill.training_prompts: the first --topics distinct topics of the sft then rl splits,
plus the kit's prompt-only topics far from every eval topic), and the poems the verifier accepts
with cos(topic, poem) >= 0.5 are kept once each: the demo's SFT then learns from what
`cpu-full`'s whole pipeline ended with (research/log.md DC9). --teacher sft samples the
run's SFT model instead. Without --teacher, the kept poems of the chosen rounds
(RUN/sft/distill/round-N/poems.jsonl; default: the last round only) are checked again and
deduplicated (DC4's corpus). Every row carries its topic, source (round number or teacher) and
cosine; `distill.corpus_poems` drops any topic near a run's own eval topics when it reads the file.
--best N keeps only each topic's N most similar poems (best of --k); --save-pool writes every
sample first (a line per topic: topic, source, completions), and --from-pool selects from such
files instead of sampling, so that selections can be compared without sampling again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from haiku_kit.train.distill import best_per_topic, keep_verified

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "haiku_kit" / "resources" / "distilled.jsonl"


def round_files(run: Path) -> dict[int, Path]:
    files = (run / "sft" / "distill").glob("round-*/poems.jsonl")
    return dict(sorted((int(p.parent.name.split("-")[1]), p) for p in files))


def corpus_rows(files: dict[int, Path]) -> list[dict]:
    """The rounds' poems that the verifier accepts, each once (distill.keep_verified, unfiltered
    by cosine), with their topic, round and the cosine their round measured."""
    rows = [{"topic": row["topic"], "round": round_, "measured": row.get("cosine"), "poem": row["haiku"]}
            for round_, poems in files.items()
            for row in map(json.loads, poems.read_text(encoding="utf-8").splitlines())]
    kept, _ = keep_verified(rows, [[r["poem"]] for r in rows], min_similarity=-1)
    return [{"topic": r["topic"], "haiku": r["haiku"], "round": r["round"],
             "cosine": None if r["measured"] is None else round(r["measured"], 3)} for r in kept]


def run_config(run: Path):
    from haiku_kit.config import load_config

    cfg = load_config(run / "config.yaml")
    cfg.output_dir = str(run.resolve())
    return cfg


def teacher_prompts(cfg, topics: int, extra: str = "embedded") -> list[dict]:
    """The run's first `topics` training topics, then the `extra` topic list's (the kit's
    prompt-only topics; "": none) far from every eval topic of the run
    (distill.training_prompts), with their prompts."""
    from haiku_kit.data.sources import load_topic_list
    from haiku_kit.data.splits import load_run_data
    from haiku_kit.train.distill import training_prompts

    return training_prompts(load_run_data(cfg), topics, load_topic_list(extra) if extra else ())


def teacher_pool(run: Path, teacher: str, topics: int, extra: str, k: int, temperature: float,
                 seed: int = 7) -> list[dict]:
    """The run's `teacher` model's k free samples on each of teacher_prompts: a row per topic
    ({topic, source, completions})."""
    from haiku_kit.generate.write import SamplingSettings, generate
    from haiku_kit.model.load import load_from_config

    cfg = run_config(run)
    rows = teacher_prompts(cfg, topics, extra)
    model, tokenizer = load_from_config(cfg, run / teacher / "adapter", trainable=False)
    sampling = SamplingSettings(temperature=temperature, top_p=cfg.eval.top_p, top_k=cfg.eval.top_k)
    gens = generate(model, tokenizer, [r["prompt"] for r in rows], k=k, seed=seed,
                    sampling=sampling, batch_size=32, max_new_tokens=48, progress=True)
    return [{"topic": r["topic"], "source": teacher, "completions": texts}
            for r, texts in zip(rows, gens.texts)]


def pool_rows(pool: list[dict], best: int = 0, min_similarity: float = 0.5) -> list[dict]:
    """The pool's poems the verifier accepts with cos(topic, poem) >= min_similarity, each once
    (distill.keep_verified); with best > 0 only each topic's `best` most similar."""
    kept, valid = keep_verified(pool, [r["completions"] for r in pool], min_similarity)
    kept = best_per_topic(kept, best)
    print(f"{len(pool)} topics x {len(pool[0]['completions']) if pool else 0} poems, "
          f"{valid} valid, {len(kept)} kept")
    return [{"topic": r["topic"], "haiku": r["haiku"], "round": r["source"],
             "cosine": round(r["cosine"], 3)} for r in kept]


def read_pools(files: list[Path]) -> list[dict] | str:
    """Saved pools, one list; a one-line problem (str) naming the file and line when a row is
    not {topic, source, completions}."""
    pool = []
    for file in files:
        if not file.is_file():
            return f"--from-pool: {file}: no such file"
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                ok = (isinstance(row.get("topic"), str) and isinstance(row.get("source"), str)
                      and isinstance(row.get("completions"), list))
            except (json.JSONDecodeError, AttributeError):
                ok = False
            if not ok:
                return f"--from-pool: {file}:{n}: not a pool row {{topic, source, completions}}"
            pool.append(row)
    return pool


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="the rounds whose poems to keep (default: the last one)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--teacher", choices=["grpo", "sft"], default=None,
                    help="sample this model of RUN instead of reading its rounds")
    ap.add_argument("--topics", type=int, default=800, help="--teacher: training topics")
    ap.add_argument("--extra-topics", default="embedded",
                    help="--teacher: prompt-only topics too (a topic list file; \"\": none)")
    ap.add_argument("--k", type=int, default=2, help="--teacher: poems per topic")
    ap.add_argument("--temperature", type=float, default=0.7, help="--teacher: sampling")
    ap.add_argument("--seed", type=int, default=7, help="--teacher: sampling")
    ap.add_argument("--best", type=int, default=0,
                    help="keep each topic's N most similar valid poems only (0: all)")
    ap.add_argument("--save-pool", type=Path, default=None,
                    help="--teacher: write every sample here before selecting")
    ap.add_argument("--from-pool", type=Path, nargs="+", default=None,
                    help="select from these saved pools instead of sampling")
    args = ap.parse_args(argv)
    for name, path in (("--out", args.out), ("--save-pool", args.save_pool)):
        if path is not None and not path.parent.is_dir():  # found before, not after, the sampling
            print(f"{name} {path}: no folder {path.parent}", file=sys.stderr)
            return 2
    if args.from_pool:
        pool = read_pools(args.from_pool)
        if isinstance(pool, str):
            print(pool, file=sys.stderr)
            return 2
        return write(args.out, pool_rows(pool, args.best), "--from-pool")
    if args.run is None:
        print("RUN: a run folder is needed (or --from-pool)", file=sys.stderr)
        return 2
    if args.teacher:
        if not (args.run / args.teacher / "adapter").is_dir():
            print(f"--teacher {args.teacher}: {args.run} has no {args.teacher}/adapter",
                  file=sys.stderr)
            return 2
        pool = teacher_pool(args.run, args.teacher, args.topics, args.extra_topics, args.k,
                            args.temperature, args.seed)
        if args.save_pool:
            args.save_pool.write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")
        return write(args.out, pool_rows(pool, args.best), f"{args.run}/{args.teacher}")
    files = round_files(args.run)
    rounds = args.rounds or list(files)[-1:]
    missing = [r for r in rounds if r not in files]
    if missing:
        print(f"--rounds: {args.run} has no RUN/sft/distill/round-{missing[0]}/poems.jsonl "
              f"(rounds there: {list(files) or 'none'})", file=sys.stderr)
        return 2
    return write(args.out, corpus_rows({r: files[r] for r in rounds}),
                 f"{args.run} rounds {rounds}")


def write(out: Path, rows: list[dict], source: str) -> int:
    if not rows:
        print(f"{source}: no valid poem", file=sys.stderr)
        return 2
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    per_round = {}
    for r in rows:
        per_round[r["round"]] = per_round.get(r["round"], 0) + 1
    print(f"{out}: {len(rows)} poems, per source {per_round}, "
          f"{len({r['topic'] for r in rows})} topics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
