"""One SFT experiment: cpu-demo preset + overrides, optional extra (writers') rows and <think>
count targets, then the fixed measurement (experiments/harness.py).

    python experiments/sft.py --name E0-demo-sft
    python experiments/sft.py --name E1 --extra --set sft.max_steps=300 --set sft.learning_rate=5e-4
    python experiments/sft.py --name E4 --think --set sft.max_length=192 --max-new-tokens 160
"""

from __future__ import annotations

import argparse
import json

import harness as H


def think_target(poem: str) -> str:
    """The poem preceded by a <think> block of running syllable totals per word."""
    from haiku_kit.verify.syllables import analyze_line

    lines = []
    for line in poem.split("\n"):
        total, parts = 0, []
        for w in analyze_line(line).words:
            if w.source == "symbol":
                continue
            total += w.common
            parts.append(f"{w.text} {total}")
        lines.append(", ".join(parts))
    return "<think>\n" + "\n".join(lines) + "\n</think>\n" + poem


def with_think(splits):
    import datasets

    def convert(row):
        msgs = [dict(m) for m in row["messages"]]
        msgs[-1]["content"] = think_target(msgs[-1]["content"])
        return {"messages": msgs}

    out = datasets.DatasetDict(dict(splits))
    out["sft"] = splits["sft"].map(convert)
    return out


def train_full(cfg, splits):
    """SFT of every weight but the (tied) embeddings, no LoRA; returns the trained model and
    tokenizer in memory (nothing saved: the run is measured, then dropped)."""
    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.train.common import train_stage
    from haiku_kit.train.sft import sft_trainer

    model, tok = load_for(cfg, trainable=False)
    embed = model.get_input_embeddings().weight
    for param in model.parameters():
        param.requires_grad_(param is not embed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"full fine-tuning: {trainable / 1e6:.1f}M trainable weights", flush=True)
    trainer = sft_trainer(cfg, model, tok, splits)
    train_stage(trainer)
    model.eval()
    return model, tok


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--extra", action="store_true", help="add the writers' staged rows to SFT")
    p.add_argument("--extra-kinds", default="long,short")
    p.add_argument("--extra-rl", action="store_true", help="also train SFT on the rl split")
    p.add_argument("--think", action="store_true")
    p.add_argument("--full", action="store_true",
                   help="full fine-tuning of the non-embedding weights instead of LoRA")
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-demo", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--greedy", action="store_true", help="also measure greedy decoding")
    args = p.parse_args()

    cfg = H.config(args.name, args.overrides)
    splits = H.base_splits()
    settings = {"overrides": args.overrides, "extra": args.extra, "think": args.think,
                "extra_rl": args.extra_rl, "full": args.full}
    if args.extra_rl:
        import datasets

        rl = splits["rl"].map(lambda r: {"messages": r["prompt"] + [{"role": "assistant", "content": r["haiku"]}]})
        splits = datasets.DatasetDict(dict(splits))
        splits["sft"] = datasets.concatenate_datasets([splits["sft"], rl.cast(splits["sft"].features)])
    if args.extra:
        rows, report = H.clean_extra(H.staged_rows(args.extra_kinds.split(",")), H.forbidden_topics())
        print("extra rows:", report, flush=True)
        settings["extra_report"] = report
        splits = H.with_extra_sft(splits, rows)
    if args.think:
        splits = with_think(splits)
        print(splits["sft"][0]["messages"][-1]["content"])
    settings["sft_rows"] = len(splits["sft"])
    print(f"SFT rows: {len(splits['sft'])}", flush=True)

    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.train.sft import run_sft

    if args.full:
        adapter, (mt, sft_s) = None, H.timed(train_full, cfg, splits)
    else:
        adapter, sft_s = H.timed(run_sft, cfg, splits)
        mt = load_for(cfg, adapter, trainable=False)
    sets = H.eval_sets(args.n_ref, args.n_demo)
    train_answers = list(splits["sft"]["haiku"]) + list(splits["rl"]["haiku"])
    res = H.measure(cfg, adapter, f"{args.name}/sft", sets, train_answers,
                    max_new_tokens=args.max_new_tokens, model_tok=mt)
    H.log(args.name, "sft", settings, {"sft_s": sft_s}, res)
    if args.greedy:
        res_g = H.measure(cfg, adapter, f"{args.name}/sft-greedy", sets, train_answers,
                          sampling="greedy", max_new_tokens=args.max_new_tokens, model_tok=mt)
        H.log(args.name, "sft-greedy", settings, {"sft_s": sft_s}, res_g)
    print(json.dumps({"sft_s": round(sft_s, 1)}))


if __name__ == "__main__":
    main()
