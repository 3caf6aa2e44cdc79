"""Evaluate the base embedded model on the reference's eval prompts and print the table.

    python benchmarks/eval_base.py              # first 128 prompts of eval_data.json
    python benchmarks/eval_base.py --n 16 --best-of-n 4

Uses the reference's sampling (temperature 1.0, top_p 0.95, top_k 64) with a generous token
limit, and the reference's training answers (sft_data.json) for the overlap check. Prints the
comparison table (the dataset's own reference answers on the same prompts as the upper bound,
then the model), the share of answers that hit the token limit, and the valid-haiku rate with
1 vs k samples per prompt (best_of_k_rate, i.e. what `haiku-kit write --k` achieves).
Needs ../shared (the reference data); CPU generation is slow, so shrink --n when short of time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEMMA_HAIKU = REPO.parent / "shared" / "data" / "gemma_haiku"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128, help="first N eval prompts")
    p.add_argument("--data", default=str(GEMMA_HAIKU / "eval_data.json"))
    p.add_argument("--train", default=str(GEMMA_HAIKU / "sft_data.json"))
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter", default=None)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--best-of", type=int, default=8, help="k for the best-of-k line")
    p.add_argument("--best-of-n", type=int, default=16,
                   help="prompts for the best-of-k line (0: skip it)")
    p.add_argument("--out", default=None, help="also write the report folder here")
    args = p.parse_args(argv)

    if not Path(args.data).is_file():
        print(f"skipped: {args.data} is absent (needs ../shared)", file=sys.stderr)
        return 0

    from haiku_kit.data.splits import load_eval_data
    from haiku_kit.evaluate import scoring as ev
    from haiku_kit.evaluate.metrics import best_of_k_rate
    from haiku_kit.evaluate.report import compare, write_report
    from haiku_kit.generate.write import SamplingSettings
    from haiku_kit.model.load import load_model

    rows, train = load_eval_data(args.data, args.train if Path(args.train).is_file() else None)
    rows = rows[: args.n]
    model, tokenizer = load_model(args.model, lora=None, adapter=args.adapter)
    sampling = SamplingSettings(temperature=1.0, top_p=0.95, top_k=64)
    name = f"base {args.model}" if args.adapter is None else Path(args.adapter).name

    start = time.perf_counter()
    result = ev.run_eval(model, rows, tokenizer=tokenizer, train_answers=train, k=1,
                         seed=args.seed, sampling=sampling, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size, name=name)
    seconds = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in result.records)
    refs = ev.evaluate_references([r for r in rows if isinstance(r.get("haiku"), str)],
                                  train_answers=train)
    results = {"reference answers": refs, name: result}

    print(f"\n{len(rows)} prompts from {args.data}; sampling {sampling}; "
          f"max_new_tokens {args.max_new_tokens}; seed {args.seed}; "
          f"{len(train)} training answers")
    print(compare(results).markdown())
    m = result.metrics
    print(f"hit the token limit: {m['hit_limit']:.1%}; mean new tokens {m['tokens']:.1f}; "
          f"preamble {m['preamble']:.1%}; prompt copy {m['prompt_copy']:.1%}; "
          f"3 lines {m['three_lines']:.1%}; line counts {result.distributions['line_counts']}")
    print(f"generation: {tokens} tokens in {seconds:.0f} s ({tokens / seconds:.1f} tok/s)")

    if args.best_of_n > 0 and args.best_of > 1:
        few = rows[: args.best_of_n]
        multi = ev.run_eval(model, few, tokenizer=tokenizer, train_answers=train,
                            k=args.best_of, seed=args.seed, sampling=sampling,
                            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            name=f"{name} k={args.best_of}")
        print(f"valid haiku on {len(few)} prompts: k=1 {best_of_k_rate(multi, 1):.3f}, "
              f"k={args.best_of} {best_of_k_rate(multi, args.best_of):.3f} "
              f"(best_of_k_rate; pass@k {multi.pass_at_k})")
        results[f"{name} k={args.best_of}"] = multi

    if args.out:
        for key, res in results.items():
            res.save(Path(args.out) / key.replace(" ", "_").replace("/", "_"))
        print(f"report: {write_report(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
