"""Two real processes (torchrun, gloo on the CPU) train the smoke SFT and GRPO through the kit's
CLI on the tiny model: both train, only the main process writes the run folder (a write audit,
tests/write_audit/sitecustomize.py, records every write of every process under the run folder),
and the losses match a one-process run with the same global batch and seed.

Each launch costs about 25-40 s on the 2-core CI machine (two Python processes importing torch,
transformers and TRL), so the SFT test checks resume with the same launches it compares: the
second launch is notebook 03 itself, its .py run as a script by the launcher with the
parameters papermill would inject (the notebook's cells, stages.py's rank rule, its evaluation
on the main process), and a last step in this one process resumes the 2-process checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from training_helpers import FAST_REWARDS, read_log

from haiku_kit import cli

AUDIT = Path(__file__).resolve().parents[1] / "write_audit"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# The one file another process writes: the trainer's checkpoint keeps each process's random
# state (transformers' Trainer._save_rng_state), so that a resumed run draws what it would have.
OTHER_RANKS_MAY_WRITE = "rng_state_{rank}.pth"
# float32 sums over 2 x 2 rows instead of 4 rows differ in the last digits (measured: 1e-7 relative)
LOSS_RTOL = 1e-4


def launch(tmp_path, nproc: int, stage: str, run: Path, *overrides: str, audit: Path | None = None):
    """`haiku-kit train STAGE` on `nproc` processes (torchrun) or in one process; the processes'
    output on failure."""
    cli = ["-m", "haiku_kit.cli", "train", stage, "--preset", "cpu-smoke", "--out", str(run),
           "--set", "live_every=0", *overrides]
    return _launched(tmp_path, nproc, cli, run, audit)


def launch_notebook(tmp_path, nproc: int, name: str, run: Path, audit: Path, **params):
    """The stage notebook `name` (.ipynb) as a script on `nproc` processes, with `params`
    injected after its parameters cell as papermill injects them (papermill's own functions)."""
    import jupytext
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS / name)), {**params, "run_dir": str(run)})
    script = tmp_path / Path(name).with_suffix(".py")
    jupytext.write(nb, script, fmt="py:percent")
    return _launched(tmp_path, nproc, [str(script)], run, audit)


def _launched(tmp_path, nproc: int, args: list[str], run: Path, audit: Path | None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(AUDIT), *sys.path]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if audit is not None:
        audit.mkdir(exist_ok=True)
        env.update(HAIKU_KIT_AUDIT_ROOT=str(run.parent), HAIKU_KIT_AUDIT_LOG=str(audit))
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def audited_writes(audit: Path) -> dict[str, dict[str, set[str]]]:
    """{rank: {path: events}} of every write the launched processes made under the audit root."""
    writes: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for log in audit.glob("*.jsonl"):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            writes[row["rank"]][row["path"]].add(row["event"])
    return writes


def check_one_writer(audit: Path, root: Path) -> dict[str, set[str]]:
    """No file under `root` written by two processes, none by another process than the main one
    but its random state, none the audit missed. Returns the main process's writes."""
    writes = audited_writes(audit)
    assert set(writes) == {"0", "1"}, f"no write audited for some process: {sorted(writes)}"
    files = {ranked: {p for p, events in paths.items() if events != {"os.mkdir"}}
             for ranked, paths in writes.items()}
    allowed = OTHER_RANKS_MAY_WRITE.format(rank=1)
    assert {p for p in files["1"] if Path(p).name != allowed} == set(), files["1"]
    assert files["0"] & files["1"] == set()
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert on_disk - files["0"] - files["1"] == set(), "files written that the audit did not see"
    return files["0"]


SFT = ("sft.learning_rate=1e-2", "sft.lr_scheduler_type=constant", "sft.warmup_ratio=0.0",
       "sft.save_steps=1")


@pytest.mark.slow
def test_two_processes_train_sft_like_one_with_the_same_global_batch(tmp_path, tiny_model_dir, small_splits):
    root, audit = tmp_path / "audited", tmp_path / "audit"
    run = root / "run"
    common = (f"model.name={tiny_model_dir}", f"data.splits_dir={small_splits}", *SFT)
    # 2 processes x 2 rows: 2 steps, then notebook 03 on 2 processes resumes checkpoint-2 for step 3
    launch(tmp_path, 2, "sft", run, *common, "sft.max_steps=2", audit=audit)
    again = launch_notebook(tmp_path, 2, "03_sft.ipynb", run, audit, preset="cpu-smoke",
                            overrides=["live_every=0", *common, "sft.max_steps=3"])
    assert "resuming sft from" in again.stderr and "checkpoint-2" in again.stderr
    # the notebook's "more than one GPU" cell printed the command (each process runs the cell)
    assert "-m haiku_kit.cli train sft --preset cpu-smoke --set live_every=0" in again.stdout
    # 1 process x 4 rows, 4 steps in one go (in this process: no second start-up to pay)
    ref = tmp_path / "ref"
    assert cli.main(["train", "sft", "--preset", "cpu-smoke", "--out", str(ref), "--set",
                     "live_every=0", *common, "sft.max_steps=4",
                     "sft.per_device_train_batch_size=4"]) == 0

    main = check_one_writer(audit, root)
    assert {"run/sft/effective.yaml", "run/sft/adapter/adapter_model.safetensors",
            "run/sft/log.jsonl", "run/config.yaml", "run/.lock"} <= main  # the audit sees writes
    # the notebook's own writes: its env.json, the splits it copied in, the main process's eval
    assert {"run/env.json", "run/data/manifest.json", "run/eval/sft/result.json"} <= main
    # both processes trained: the second saved its random state in the checkpoints
    assert (run / "sft/checkpoints/checkpoint-3/rng_state_1.pth").is_file()
    effective = yaml.safe_load((run / "sft/effective.yaml").read_text())
    assert effective["processes"] == 2 and effective["global_batch"] == 4
    assert yaml.safe_load((ref / "sft/effective.yaml").read_text())["global_batch"] == 4
    # the evaluation is the main process's alone: every eval prompt once (cpu-smoke: 2)
    assert len(read_log(run / "eval/sft/generations.jsonl")) == 2

    # 2 -> 1 process: step 4 in this process, 4 rows, from the 2-process checkpoint-3
    assert cli.main(["train", "sft", "--preset", "cpu-smoke", "--out", str(run), "--set",
                     "live_every=0", *common, "sft.max_steps=4",
                     "sft.per_device_train_batch_size=4"]) == 0
    assert yaml.safe_load((run / "sft/effective.yaml").read_text())["processes"] == 1

    two = [r for r in read_log(run / "sft/log.jsonl") if "loss" in r]
    one = [r for r in read_log(ref / "sft/log.jsonl") if "loss" in r]
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for a, b in zip(two, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=LOSS_RTOL), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=LOSS_RTOL), (a, b)
    # the learning rate of 1e-2 moves the loss: equal losses are equal updates, not a flat start
    assert two[2]["loss"] < two[0]["loss"] - 0.01


@pytest.mark.slow
def test_two_processes_train_grpo_and_only_the_main_one_writes(tmp_path, tiny_model_dir, small_splits):
    root, audit = tmp_path / "audited", tmp_path / "audit"
    run = root / "run"
    launch(tmp_path, 2, "grpo", run, f"model.name={tiny_model_dir}", f"data.splits_dir={small_splits}",
           "grpo.init=base", FAST_REWARDS, audit=audit)
    main = check_one_writer(audit, root)
    assert {"run/grpo/samples.jsonl", "run/grpo/adapter/adapter_model.safetensors"} <= main
    effective = yaml.safe_load((run / "grpo/effective.yaml").read_text())
    # 4 completions per process and step, TRL's generation batch over both processes
    assert effective["processes"] == 2 and effective["global_batch"] == 8
    assert effective["generation_batch_size"] == 8
    log = [r for r in read_log(run / "grpo/log.jsonl") if "reward" in r]
    assert [r["step"] for r in log] == [1, 2]
    # the main process logs its own share of the samples: 4 of the 8 completions a step
    samples = read_log(run / "grpo/samples.jsonl")
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, small_splits):
    """kill -9 of the whole 2-process launch mid-SFT (the launcher and both trainers), then the
    same launch again: it resumes from the newest complete checkpoint, loses none, and its log
    holds every step once."""
    import contextlib
    import signal
    import time

    run = tmp_path / "run"
    common = (f"model.name={tiny_model_dir}", f"data.splits_dir={small_splits}", *SFT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    cli_args = ["-m", "haiku_kit.cli", "train", "sft", "--preset", "cpu-smoke", "--out", str(run),
                "--set", "live_every=0", "sft.save_total_limit=100", *common]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    first = subprocess.Popen([*torchrun, "--master_port", str(_free_port()), *cli_args,
                              "sft.max_steps=200"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    checkpoints = run / "sft" / "checkpoints"

    def saved() -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")
                      if (p / "trainer_state.json").is_file())
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and max(saved(), default=0) < 2:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[1][-3000:]
    # torchrun starts each trainer in a session of its own: kill the whole tree, as a scheduler
    # killing the job would (killpg of the launcher's group leaves the trainers running)
    import psutil

    launcher = psutil.Process(first.pid)
    for process in [*launcher.children(recursive=True), launcher]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    first.communicate()
    before = saved()
    newest = max(before)
    again = subprocess.run([*torchrun, "--master_port", str(_free_port()), *cli_args,
                            f"sft.max_steps={newest + 2}"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-5000:]
    assert f"resuming sft from {checkpoints / f'checkpoint-{newest}'}" in again.stderr
    assert set(before) <= set(saved()) and max(saved()) == newest + 2  # none lost, two more
    steps = [r["step"] for r in read_log(run / "sft/log.jsonl") if "loss" in r]
    assert steps == list(range(1, newest + 3)), steps


CLOSES_AT_EXIT = """
import atexit, sys
import torch.distributed as dist
from haiku_kit import ranks

# registered before the kit's own handler, so it runs after it (atexit is last in, first out)
atexit.register(lambda: sys.stdout.write(f"rank {ranks.rank()} group open at exit: {dist.is_initialized()};"))
ranks.start(cpu=True)
ranks.barrier()
"""


def test_the_process_group_is_closed_before_the_interpreter_shuts_down(tmp_path):
    """Left open, gloo's threads can abort a finished run at shutdown (SIGABRT, seen in CI)."""
    script = tmp_path / "closes.py"
    script.write_text(CLOSES_AT_EXIT)
    done = _launched(tmp_path, 2, [str(script)], tmp_path / "run", None)
    # the two processes share one pipe: their lines may interleave
    assert sorted(re.findall(r"rank \d group open at exit: \w+", done.stdout)) == [
        "rank 0 group open at exit: False", "rank 1 group open at exit: False"]
