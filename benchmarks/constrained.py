"""Syllable-constrained decoding against free sampling: validity, similarity, overhead, write time.

    python benchmarks/constrained.py                       # base model, all targets
    python benchmarks/constrained.py --adapter runs/demo/sft/adapter
    python benchmarks/constrained.py --n-ref 32 --n-demo 32   # fewer prompts when CPU-bound
    python benchmarks/constrained.py --candidates 1 4        # also keep the likeliest of 4 drafts

Prints, for the first --n-ref reference eval prompts (../shared/data/gemma_haiku/eval_data.json;
skipped with a reason when absent) and the demo's eval split (the bundled dataset's, first
--n-demo): the share of constrained outputs that pass check (target >= 99%), the same share for
free sampling, similarity (cos - 0.5) of both and its difference (target |diff| <= 0.03 for SFT),
all with 95% bootstrap CIs. Then the decoding overhead: the same batch generated with and without
the processor, side by side, as tokens/s and time per step (target <= 20%), and the wall time of
one constrained write for "first snow in the city" (target < 10 s on 2 cores, model loaded).
Sampling is the reference's (T=1, top-p 0.95, top-k 64). No numbers here are asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "data" / "gemma_haiku" / "eval_data.json"
WRITE_TOPIC = "first snow in the city"


def _rate(flags, ci) -> str:
    lo, hi = ci([float(f) for f in flags])
    return f"{100 * statistics.fmean(flags):5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _mean(values, ci) -> str:
    lo, hi = ci(values)
    return f"{statistics.fmean(values):+.3f} [{lo:+.3f}, {hi:+.3f}]"


def compare_on(name, rows, model, tokenizer, scorer, args) -> None:
    from haiku_kit.evaluate.metrics import bootstrap_ci
    from haiku_kit.generate import write as gen
    from haiku_kit.generate.constrained import constrained_generate
    from haiku_kit.verify import haiku as hk

    topics, prompts = [r["topic"] for r in rows], [r["prompt"] for r in rows]
    sampling = gen.SamplingSettings(temperature=1.0, top_p=0.95, top_k=64)
    start = time.perf_counter()
    free = gen.generate(model, tokenizer, prompts, seed=args.seed, sampling=sampling,
                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       progress=False)
    free_s = time.perf_counter() - start
    free_texts = [g[0] for g in free.texts]
    free_ok = [hk.check(hk.extract_poem(t).poem).is_haiku for t in free_texts]
    free_sim = [c - 0.5 for c in scorer.cosine(topics, free_texts)]
    ci = bootstrap_ci
    print(f"\n## {name}: {len(rows)} prompts")
    print(f"{'':24}{'pass check':>28}{'similarity (cos-0.5)':>30}{'wall s':>9}")
    print(f"{'free sampling':24}{_rate(free_ok, ci):>28}{_mean(free_sim, ci):>30}{free_s:9.0f}")
    for drafts in args.candidates:
        start = time.perf_counter()
        results = [r[0] for r in constrained_generate(
            model, tokenizer, prompts, seed=args.seed, sampling=sampling,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            retries=args.retries, candidates=drafts)]
        con_s = time.perf_counter() - start
        con_ok = [r.is_valid for r in results]
        con_sim = [c - 0.5 for c in scorer.cosine(topics, [r.completion for r in results])]
        diff = [c - f for c, f in zip(con_sim, free_sim)]
        label = "constrained" + (f", best of {drafts}" if drafts > 1 else "")
        print(f"{label:24}{_rate(con_ok, ci):>28}{_mean(con_sim, ci):>30}{con_s:9.0f}")
        print(f"  similarity {label} - free: {_mean(diff, ci)} (paired)")
    _diagnose(results)


def _diagnose(results) -> None:
    """Tries, dead ends and a few poems of the last constrained run."""
    tries = [r.tries for r in results]
    print(f"constrained tries: mean {statistics.fmean(tries):.2f}, max {max(tries)}; "
          f"dead ends {sum(r.dead_ends for r in results)}; "
          f"hit token limit {sum(r.hit_limit for r in results)}")
    for r in [r for r in results if not r.is_valid][:5]:
        print(f"  not valid after {r.tries} tries: {r.reason} | {r.text!r}")
    for r in results[:3]:
        print("  e.g. " + r.text.replace("\n", " / "))


def overhead(rows, model, tokenizer, args) -> None:
    """One batch generated free and constrained (one try, no retries), side by side, twice."""
    import copy

    import torch
    from transformers import LogitsProcessorList

    from haiku_kit.generate.constrained import PoemTracker, SyllableLogitsProcessor, token_table
    from haiku_kit.model.chat import encode, prompt_strings, stop_token_ids

    stop = stop_token_ids(model, tokenizer)
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=args.max_new_tokens, eos_token_id=stop,
                  pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0,
                  top_p=0.95, top_k=64)
    prompts = prompt_strings(tokenizer, [r["prompt"] for r in rows[: args.batch_size]])
    enc = encode(tokenizer, prompts)
    tracker = PoemTracker(token_table(tokenizer), (5, 7, 5), end_ids=stop)
    totals = {"free": [0, 0, 0.0], "constrained": [0, 0, 0.0]}  # tokens, steps, seconds
    inside = 0.0
    for repeat in range(2):
        for mode in (("free", "constrained") if repeat == 0 else ("constrained", "free")):
            extra = {}
            if mode == "constrained":
                proc = SyllableLogitsProcessor(tracker)
                extra["logits_processor"] = LogitsProcessorList([proc])
            torch.manual_seed(args.seed + repeat)
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=config, **extra)
            seconds = time.perf_counter() - start
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            tokens = sum(next((i + 1 for i, t in enumerate(r) if t in stop), len(r)) for r in new)
            totals[mode][0] += tokens
            totals[mode][1] += len(new[0])
            totals[mode][2] += seconds
            if mode == "constrained":
                inside += proc.seconds
    print(f"\n## decoding overhead: batch {args.batch_size}, 2 runs each, interleaved")
    for mode, (tokens, steps, seconds) in totals.items():
        print(f"{mode:12} {tokens / seconds:7.1f} tokens/s  {1000 * seconds / steps:7.1f} ms/step"
              f"  ({tokens} tokens, {steps} steps, {seconds:.1f} s)")
    free_step = totals["free"][2] / totals["free"][1]
    con_step = totals["constrained"][2] / totals["constrained"][1]
    print(f"time per step, constrained / free: {con_step / free_step:.2f} "
          f"(processor alone: {100 * inside / (totals['constrained'][2] - inside):.1f}% of the "
          f"rest of the constrained runs)")


def write_time(model, tokenizer, args) -> None:
    from haiku_kit.generate.constrained import constrained_generate
    from haiku_kit.verify.text import build_prompt

    start = time.perf_counter()
    result = constrained_generate(model, tokenizer, [build_prompt(WRITE_TOPIC)], seed=args.seed,
                                  max_new_tokens=args.max_new_tokens)[0][0]
    seconds = time.perf_counter() - start
    print(f"\n## one constrained write, {WRITE_TOPIC!r} (model already loaded)")
    print(f"{seconds:.1f} s, {result.tries} tries, valid={result.is_valid}: "
          + result.text.replace("\n", " / "))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter", default=None, help="an SFT/GRPO adapter folder")
    p.add_argument("--n-ref", type=int, default=128, help="first N reference eval prompts")
    p.add_argument("--n-demo", type=int, default=None, help="first N of the demo eval split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--retries", type=int, default=8)
    p.add_argument("--candidates", type=int, nargs="+", default=[1],
                   help="drafts per poem, one constrained run each (the likeliest valid is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["ref", "demo", "overhead", "write"])
    args = p.parse_args(argv)

    from haiku_kit.data.splits import load_eval_data
    from haiku_kit.model.load import load_model
    from haiku_kit.verify.similarity import get_scorer

    start = time.perf_counter()
    model, tokenizer = load_model(args.model, lora=None, adapter=args.adapter)
    model.eval()
    print(f"model {args.model}{' + ' + args.adapter if args.adapter else ''} loaded in "
          f"{time.perf_counter() - start:.0f} s; {torch_threads()} torch threads")
    scorer = get_scorer()
    demo_rows, _ = load_eval_data(None)
    if "write" not in args.skip:
        write_time(model, tokenizer, args)
    if "overhead" not in args.skip:
        overhead(demo_rows, model, tokenizer, args)
    if "ref" not in args.skip:
        if REFERENCE.is_file():
            rows, _ = load_eval_data(str(REFERENCE))
            compare_on("reference eval prompts", rows[: args.n_ref], model, tokenizer, scorer,
                       args)
        else:
            print(f"\nreference prompts skipped: {REFERENCE} is absent (needs ../shared)",
                  file=sys.stderr)
    if "demo" not in args.skip:
        compare_on("demo eval split", demo_rows[: args.n_demo], model, tokenizer, scorer, args)
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
