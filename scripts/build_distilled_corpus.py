"""Build haiku_kit/resources/distilled.jsonl (`distill.corpus: embedded`) from a run's rounds.

    python scripts/build_distilled_corpus.py RUN [--rounds 3] [--out haiku_kit/resources/distilled.jsonl]

RUN is a `cpu-full` run (`haiku-kit pipeline --preset cpu-full --out RUN`; its SFT stage alone
is enough). The kept poems of the chosen rounds (RUN/sft/distill/round-N/poems.jsonl; default:
the last round only) are checked again by the kit's verifier, deduplicated, and written with
their topic, round and cosine. The last round alone, because the demo trained on every round's
poems at once scored 15.6% against 35.9% on the last round's (docs/experiments.md DC3, X-r3).
The rounds sampled training topics only (distill.training_prompts), and
`distill.corpus_poems` drops any topic near a run's own eval topics when it reads the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from haiku_kit.distill import keep_verified

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="the rounds whose poems to keep (default: the last one)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    files = round_files(args.run)
    rounds = args.rounds or list(files)[-1:]
    missing = [r for r in rounds if r not in files]
    if missing:
        print(f"--rounds: {args.run} has no RUN/sft/distill/round-{missing[0]}/poems.jsonl "
              f"(rounds there: {list(files) or 'none'})", file=sys.stderr)
        return 2
    rows = corpus_rows({r: files[r] for r in rounds})
    if not rows:
        print(f"{args.run}: no valid poem in rounds {rounds}", file=sys.stderr)
        return 2
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    per_round = {}
    for r in rows:
        per_round[r["round"]] = per_round.get(r["round"], 0) + 1
    print(f"{args.out}: {len(rows)} poems, per round {per_round}, "
          f"{len({r['topic'] for r in rows})} topics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
