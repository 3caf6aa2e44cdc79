"""One GRPO experiment from a given SFT adapter: cpu-demo preset + overrides, reward weights
(line_exact_reward is a kit reward), then the fixed measurement and the learning curve from the trainer's log.

    python experiments/grpo.py --name G1 --init runs/exp/E0-demo-sft/sft/adapter \
        --set grpo.max_steps=40 --set grpo.learning_rate=2e-4 --set grpo.max_grad_norm=1.0 \
        --rewards line_exact_reward=1,syllable_reward=0.5,haiku_reward=1,gated_similarity=0.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import harness as H


def curve(stage_dir: Path) -> list[dict]:
    """Per step: valid-haiku share, mean syllable distance and per-line exact shares of the
    step's rollouts (samples.jsonl, every completion), plus the trainer's frac_reward_zero_std."""
    from haiku_kit.verify import haiku as hk

    by_step: dict[int, list[str]] = {}
    samples = stage_dir / "samples.jsonl"
    if samples.is_file():
        for line in samples.read_text().splitlines():
            rec = json.loads(line)
            by_step.setdefault(int(rec["step"]), []).append(rec["completion"])
    logged = {}
    log = stage_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if "step" in rec:
                logged[int(rec["step"])] = rec
    rows = []
    for step, texts in sorted(by_step.items()):
        checks = [hk.check(hk.extract_poem(t).poem) for t in texts]
        three = [c for c in checks if len(c.lines) == 3]
        rows.append({
            "step": step, "n": len(texts),
            "valid": sum(c.is_haiku for c in checks) / len(checks),
            "distance": sum(c.distance for c in checks) / len(checks),
            "line_exact": [sum(c.line_errors[i] == 0 for c in three) / max(1, len(three)) for i in range(3)],
            "frac_reward_zero_std": logged.get(step, {}).get("frac_reward_zero_std"),
            "grad_norm": logged.get(step, {}).get("grad_norm"),
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--init", required=True, help="SFT adapter folder")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--rewards", default=None, help="name=weight,... (default: the preset's)")
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-demo", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--k", type=int, default=1, help="samples per eval prompt")
    p.add_argument("--rl-from-sft", action="store_true", help="RL prompts: the sft split's topics too")
    p.add_argument("--extra-topics", default=None,
                   help="RL prompts: these prompt-only topics too (a topic list; 'embedded')")
    args = p.parse_args()

    overrides = list(args.overrides)
    if args.rewards:
        table = {k: float(v) for k, v in (kv.split("=") for kv in args.rewards.split(","))}
        overrides.append("grpo.rewards=" + json.dumps({"names": list(table), "weights": list(table.values())}))
    cfg = H.config(args.name, overrides)
    splits = H.base_splits()
    if args.rl_from_sft:
        import datasets

        splits = datasets.DatasetDict(dict(splits))
        sft_rl = splits["sft"].remove_columns(["messages"]).cast(splits["rl"].features)
        splits["rl"] = datasets.concatenate_datasets([splits["rl"], sft_rl]).shuffle(seed=0)
    if args.extra_topics:
        import datasets

        from haiku_kit.data.sources import load_topic_list
        from haiku_kit.verify.text import build_prompt

        extra = [{"topic": t, "haiku": "", "source_id": f"extra:{i}", "prompt": build_prompt(t)}
                 for i, t in enumerate(load_topic_list(args.extra_topics))]
        splits = datasets.DatasetDict(dict(splits))
        rl = splits["rl"].select_columns(["topic", "haiku", "source_id", "prompt"])
        splits["rl"] = datasets.concatenate_datasets(
            [rl, datasets.Dataset.from_list(extra, features=rl.features)]).shuffle(seed=0)
        print(f"RL prompts: {len(rl)} of the rl split + {len(extra)} extra topics")
    from haiku_kit.model.load import load_from_config as load_for
    from haiku_kit.train.grpo import run_grpo

    adapter, grpo_s = H.timed(run_grpo, cfg, splits, init_adapter=args.init)
    stage_dir = Path(cfg.output_dir) / "grpo"
    lc = curve(stage_dir)
    (stage_dir / "curve.json").write_text(json.dumps(lc, indent=1))
    for row in lc:
        print(json.dumps(row))
    sets = H.eval_sets(args.n_ref, args.n_demo)
    train_answers = list(splits["sft"]["haiku"]) + list(splits["rl"]["haiku"])
    res = H.measure(cfg, adapter, f"{args.name}/grpo", sets, train_answers,
                    max_new_tokens=args.max_new_tokens, model_tok=load_for(cfg, adapter, trainable=False),
                    k=args.k)
    H.log(args.name, "grpo", {"overrides": overrides, "init": args.init}, {"grpo_s": grpo_s}, res | {"curve": lc})
    print(json.dumps({"grpo_s": round(grpo_s, 1)}))


if __name__ == "__main__":
    main()
