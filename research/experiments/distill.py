"""Rejection sampling / self-distillation (expert iteration) from an SFT adapter.

Samples k poems per TRAINING topic (sft + rl splits, plus the writers' topics with --extra) at
the reference sampling, keeps the ones the kit's verifier accepts (one per topic-poem, deduped,
topic-poem similarity >= 0.5), then continues SFT from the adapter on the original SFT rows plus
the kept poems, and measures.

    python experiments/distill.py --name D1 --init runs/exp/E1/sft/adapter --k 8 --steps 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import harness as H

from haiku_kit.data.sources import load_topic_list


def sample_valid(cfg, adapter, topics: list[str], k: int, batch_size: int, max_new_tokens: int,
                 constrained: bool = False, min_sim: float = 0.5, max_word_syllables: int = 0,
                 topic_words: bool = False, clean_line_ends: bool = False,
                 best_per_topic: bool = False):
    from haiku_kit.generate.write import SamplingSettings, generate
    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.train.distill import best_per_topic as best_of
    from haiku_kit.train.distill import keep_verified
    from haiku_kit.verify.text import build_prompt

    model, tok = load_for(cfg, adapter, trainable=False)
    gens = generate(model, tok, [build_prompt(t) for t in topics], k=k, seed=1,
                    sampling=SamplingSettings(**H.REF_SAMPLING), batch_size=batch_size,
                    max_new_tokens=max_new_tokens, constrained=constrained, progress=True,
                    max_word_syllables=max_word_syllables,
                    free_words=topics if topic_words else None, clean_line_ends=clean_line_ends)
    kept, valid = keep_verified([{"topic": t} for t in topics], gens.texts, min_sim)
    if best_per_topic:  # only each topic's most similar poem
        kept = best_of(kept, 1)
    return kept, {"sampled": len(topics) * k, "valid": valid, "kept": len(kept),
                  "kept_mean_cos": sum(r["cosine"] or 0.0 for r in kept) / max(len(kept), 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--extra", action="store_true")
    p.add_argument("--constrained", action="store_true",
                   help="sample through the syllable-constrained decoder (valid by construction)")
    p.add_argument("--self-only", action="store_true",
                   help="continue SFT on the kept poems alone (default: mixed with the SFT rows)")
    p.add_argument("--min-sim", type=float, default=0.5)
    p.add_argument("--poems", default=None, help="reuse the kept poems of an earlier run (jsonl)")
    p.add_argument("--max-word-syllables", type=int, default=0,
                   help="constrained only: no word with more syllables (1: one-syllable words)")
    p.add_argument("--topic-words", action="store_true",
                   help="with --max-word-syllables: a poem may use its topic's words at any length")
    p.add_argument("--clean-ends", action="store_true",
                   help="constrained only: no line ends on an article, preposition or conjunction")
    p.add_argument("--topics-file", default=None,
                   help="a text file of extra topics (one a line) sampled after the splits' topics")
    p.add_argument("--best-per-topic", action="store_true",
                   help="keep only each topic's most similar verified poem (with --k > 1)")
    p.add_argument("--measure-init", action="store_true", help="measure --init first")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-topics", type=int, default=400)
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-demo", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=48, help="of the measurement (poems with a <think> block need more)")
    args = p.parse_args()

    cfg = H.config(args.name, args.overrides + [f"sft.max_steps={args.steps}", f"sft.learning_rate={args.lr}"])
    splits = H.base_splits()
    if args.extra:
        rows, _ = H.clean_extra(H.staged_rows(), H.forbidden_topics())
        splits = H.with_extra_sft(splits, rows)
    topics = list(dict.fromkeys(list(splits["sft"]["topic"]) + list(splits["rl"]["topic"])))
    extra = load_topic_list(args.topics_file) if args.topics_file else []
    topics = topics[: args.max_topics - len(extra)] + extra
    if args.measure_init:
        sets = H.eval_sets(args.n_ref, args.n_demo)
        H.log(args.name, "init", {"init": args.init}, {},
              H.measure(cfg, args.init, f"{args.name}/init", sets))
    began = time.perf_counter()
    if args.poems:
        kept = [json.loads(line) for line in Path(args.poems).read_text().splitlines()]
        stats = {"reused": args.poems, "kept": len(kept)}
    else:
        kept, stats = sample_valid(cfg, args.init, topics, args.k, args.batch_size, 48,
                                   constrained=args.constrained, min_sim=args.min_sim,
                                   max_word_syllables=args.max_word_syllables,
                                   topic_words=args.topic_words, clean_line_ends=args.clean_ends,
                                   best_per_topic=args.best_per_topic)
    sample_s = time.perf_counter() - began
    print("self-distillation:", stats, f"{sample_s:.0f}s", flush=True)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "self_poems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))

    data = H.with_extra_sft(splits, kept)
    if args.self_only:
        import datasets

        keep = {r["haiku"] for r in kept}
        data = datasets.DatasetDict(dict(data))
        data["sft"] = data["sft"].filter(lambda r: r["haiku"] in keep)
    from haiku_kit.model.backends import resolve_device
    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.model.load import save_adapter
    from haiku_kit.train.sft import build_sft_trainer

    began = time.perf_counter()
    model, tok = load_for(cfg, args.init, trainable=True)
    stage_dir = out / "sft"
    stage_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_sft_trainer(cfg, model, tok, data["sft"], stage_dir, resolve_device(cfg))
    trainer.train()
    adapter = save_adapter(trainer.model, tok, stage_dir / "adapter")
    sft_s = time.perf_counter() - began

    sets = {k: v for k, v in H.eval_sets(args.n_ref, args.n_demo).items() if v}
    train_answers = list(data["sft"]["haiku"]) + list(data["rl"]["haiku"])
    res = {} if not sets else H.measure(cfg, adapter, f"{args.name}/distill", sets, train_answers,
                    max_new_tokens=args.max_new_tokens, model_tok=load_for(cfg, adapter, trainable=False))
    H.log(args.name, "distill", {"init": args.init, "k": args.k, "steps": args.steps, "lr": args.lr,
                                  "extra": args.extra, "constrained": args.constrained,
                                  "self_only": args.self_only,
                                  "max_word_syllables": args.max_word_syllables,
                                  "topic_words": args.topic_words, "clean_ends": args.clean_ends,
                                  "best_per_topic": args.best_per_topic,
                                  "topics_file": args.topics_file, "min_sim": args.min_sim, "stats": stats, "sft_rows": len(data["sft"])},
          {"sample_s": sample_s, "sft_s": sft_s}, res)


if __name__ == "__main__":
    main()
