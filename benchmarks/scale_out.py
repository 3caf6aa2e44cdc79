"""One process vs two (torchrun, gloo) training the same thing on this machine's CPU cores.

    python benchmarks/scale_out.py [--sft-steps 10] [--grpo-steps 4] [--stages sft,grpo] [--control]
                                   [--model embedded] [--set KEY=VALUE ...]

Each stage is trained twice, side by side in this one run: `haiku-kit train STAGE` in one
process with the per-device batch doubled, then under `torchrun --nproc_per_node 2` with the
preset's per-device batch: the same global batch, seed and steps, so the same training. Each
process gets cores / processes threads (OMP_NUM_THREADS), so both runs use every core. Settings
are cpu-smoke's (the embedded Gemma 3 270M unless --model; SFT rows of up to 64 tokens, GRPO 4
completions of up to 16 tokens per prompt), GRPO on the two rewards that need no sentence
encoder, the splits 48 embedded rows built without MiniLM.

Printed per stage and process count: the training loop's own time (the trainer's
train_runtime, first step included), the throughput it gives (SFT rows, GRPO completions per
second), the launch's wall time (with process start-up and model loading), and two-process
throughput over one-process; the load average before and after (other work on the machine
slows a process of several OpenMP threads more than two of one: `--control` adds a one-process,
one-thread run, whose ratio to the two-process run separates that from the parallelism).
Nothing here is asserted: the numbers are what this machine gave.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST_REWARDS = "grpo.rewards={names: [line_count_penalty, haiku_reward], weights: [1.0, 1.0]}"


def build_splits_dir(out: Path) -> Path:
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.data.splits import build_splits
    from haiku_kit.verify.text import build_prompt

    rows = [{**r, "prompt": build_prompt(r["topic"])} for r in load_embedded()[:48]]
    build_splits(rows, out, min_similarity=None, near_topic_cosine=None)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(stage: str, processes: int, run: Path, threads: int, overrides: list[str]) -> float:
    """`haiku-kit train STAGE` on `processes` processes; its wall time in seconds."""
    cli = ["-m", "haiku_kit.cli", "train", stage, "--preset", "cpu-smoke", "--out", str(run),
           "--set", *overrides]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                 "--master_port", str(free_port())] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    began = time.perf_counter()
    done = subprocess.run([*launcher, *cli], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"{stage} on {processes} process(es) failed:\n{done.stderr[-4000:]}")
    return wall


def runtime(run: Path, stage: str) -> float:
    log = [json.loads(x) for x in (run / stage / "log.jsonl").read_text().splitlines()]
    return next(e["train_runtime"] for e in log if "train_runtime" in e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=10)
    parser.add_argument("--grpo-steps", type=int, default=4)
    parser.add_argument("--model", default="embedded", help="model.name (default: the embedded 270M)")
    parser.add_argument("--stages", default="sft,grpo")
    parser.add_argument("--control", action="store_true", help="also one process on one thread")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from haiku_kit.config import load_preset

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    smoke = load_preset("cpu-smoke")
    per_device = {"sft": smoke.sft.per_device_train_batch_size, "grpo": smoke.grpo.per_device_train_batch_size}
    steps = {"sft": args.sft_steps, "grpo": args.grpo_steps}
    unit = {"sft": "rows", "grpo": "completions"}
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        splits = build_splits_dir(Path(tmp) / "splits")
        for stage in args.stages.split(","):
            common = [f"model.name={args.model}", f"data.splits_dir={splits}", "live_every=0",
                      f"{stage}.max_steps={steps[stage]}", f"{stage}.save_steps=100000"]
            if stage == "grpo":
                common += ["grpo.init=base", FAST_REWARDS]
            global_batch = per_device[stage] * 2
            measured = {}
            # (processes, threads each): every core used, then the one-thread control
            for processes, threads in [(1, cores), (2, max(1, cores // 2))] + [(1, 1)] * args.control:
                run = Path(tmp) / f"{stage}-{processes}-{threads}"
                batch = f"{stage}.per_device_train_batch_size={global_batch // processes}"
                wall = train(stage, processes, run, threads, [*common, batch, *args.overrides])
                loop = runtime(run, stage)
                measured[processes, threads] = steps[stage] * global_batch / loop
                rows.append((stage, processes, threads, global_batch, steps[stage], loop,
                             measured[processes, threads], unit[stage], wall))
            two = measured[2, max(1, cores // 2)]
            rows.append((stage, "ratio", f"2 / 1 ({cores} threads)", two / measured[1, cores]))
            if args.control:
                rows.append((stage, "ratio", "2 / 1 (1 thread)", two / measured[1, 1]))

    load_after = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d')}, {cores} cores, model {args.model}, torch "
          f"{__import__('torch').__version__}, gloo for 2 processes; load average (1 min) "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("| stage | processes | threads each | global batch | steps | training loop s | throughput | launch wall s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        if row[1] == "ratio":
            print(f"| {row[0]} | **{row[2]}** | | | | | **{row[3]:.2f}x** | |")
            continue
        stage, processes, threads, batch, n, loop, rate, what, wall = row
        print(f"| {stage} | {processes} | {threads} | {batch} | {n} | {loop:.1f} | {rate:.2f} {what}/s | {wall:.0f} |")


if __name__ == "__main__":
    main()
