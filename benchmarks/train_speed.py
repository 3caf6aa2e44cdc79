"""Seconds per optimizer step for SFT and GRPO on the embedded 270M model (CPU, cpu-demo sizes).

    python benchmarks/train_speed.py [--sft-steps 6] [--grpo-steps 3] [--set KEY=VALUE ...]

Prints s/step from the trainer's own timing (first step excluded as warm-up when possible).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def rows(n: int) -> list[dict]:
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.verify.text import build_prompt

    out = []
    for row in load_embedded()[:n]:
        prompt = build_prompt(row["topic"])
        out.append({**row, "prompt": prompt, "messages": [*prompt, {"role": "assistant", "content": row["haiku"]}]})
    return out


def step_times(log: Path) -> list[float]:
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return [e["step_time"] for e in entries if "step_time" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--sft-steps", type=int, default=6)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from datasets import Dataset

    from haiku_kit.config import load_preset
    from haiku_kit.train.grpo import run_grpo
    from haiku_kit.train.sft import run_sft

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_preset(args.preset, [f"output_dir={tmp}", f"sft.max_steps={args.sft_steps}",
                                        f"grpo.max_steps={args.grpo_steps}", "grpo.init=base",
                                        "sft.save_steps=100000", "grpo.save_steps=100000", *args.overrides])
        data = Dataset.from_list(rows(max(64, cfg.sft.per_device_train_batch_size * args.sft_steps)))
        began = time.perf_counter()
        run_sft(cfg, data)
        sft_wall = time.perf_counter() - began
        began = time.perf_counter()
        run_grpo(cfg, data)
        grpo_wall = time.perf_counter() - began
        sft_log = [json.loads(x) for x in (Path(tmp) / "sft" / "log.jsonl").read_text().splitlines()]
        sft_runtime = next(e["train_runtime"] for e in sft_log if "train_runtime" in e)
        grpo_steps = step_times(Path(tmp) / "grpo" / "log.jsonl")

    print(f"model {cfg.model.name}, preset {args.preset}")
    print(f"SFT : {sft_runtime / args.sft_steps:.2f} s/step (batch {cfg.sft.per_device_train_batch_size}, "
          f"max_length {cfg.sft.max_length}, {args.sft_steps} steps; {sft_wall:.0f} s with loading)")
    warm = grpo_steps[1:] or grpo_steps
    print(f"GRPO: {statistics.mean(warm):.2f} s/step (batch {cfg.grpo.per_device_train_batch_size}, "
          f"{cfg.grpo.num_generations} generations, max_completion_length {cfg.grpo.max_completion_length}, "
          f"{args.grpo_steps} steps, first step excluded; {grpo_wall:.0f} s with loading)")


if __name__ == "__main__":
    main()
