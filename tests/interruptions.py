"""Interruptions and concurrent writers through the real `haiku-kit` CLI, each in its own
process: a Ctrl-C while the model loads, a kill -9 at a random step of a smoke SFT followed by a
plain rerun, second writers of a live run folder and a SIGTERM. tests/hostile.py puts them in
its table (classes "signals" and "concurrency"); tests/test_faults.py runs them under pytest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # imported by a script too
from hostile_inputs import REPO, SMOKE  # a sibling module

TRACEBACK = "Traceback (most recent call last)"


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def last_line(self) -> str:
        return last_line(self.stderr)


def last_line(stderr: str, own: tuple[str, ...] = ("haiku-kit ",)) -> str:
    """The kit's own last message (a line starting with one of `own`: "haiku-kit COMMAND: ..."),
    else the last stderr line (libraries may log after it at exit)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    mine = [line for line in lines if line.startswith(own)]
    return (mine or lines or [""])[-1]


# What the `haiku-kit` console script runs. Not `python -m haiku_kit.cli`: under -m, CPython 3.11
# exits by SIGINT (returncode -2) whenever a KeyboardInterrupt once escaped Python code that C ran
# (PyRun_String, as pybind11 extensions do while importing), even though the CLI caught it and
# returned 130; whether it did depends on where the import was when Ctrl-C came.
LAUNCH = "import sys; from {module} import main; sys.exit(main())"


def cli_command(argv: list[str], module: str = "haiku_kit.cli") -> list[str]:
    return [sys.executable, "-c", LAUNCH.format(module=module), *argv]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run_cli(argv: list[str], cwd: Path, timeout: float = 900) -> Outcome:
    began = time.perf_counter()
    done = subprocess.run(
        cli_command(argv),
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - began)




# --------------------------------------------------------------------------- interruptions


def _terminal_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_while_loading(tmp: Path, delay: float = 4.0) -> Outcome:
    """SIGINT a `train sft` a few seconds in, while it imports and loads the model. The child
    gets SIGINT at its default, as under a terminal: an ignored SIGINT is inherited across exec,
    and code run earlier in a pytest worker can leave it ignored (then the run never saw the
    signal and finished with exit 0)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    proc = subprocess.Popen(
        cli_command(["train", "sft", *SMOKE, "--out", str(tmp / "run")]),
        cwd=tmp, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_terminal_sigint if ignored else None,  # noqa: PLW1509 (only when ignored)
    )  # fmt: skip
    time.sleep(delay)
    began = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return Outcome(proc.returncode, out, err, time.perf_counter() - began)


def _logged_steps(log: Path) -> list[int]:
    steps = []
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "loss" in entry and isinstance(entry.get("step"), int):
                steps.append(entry["step"])
    return steps


def _complete_checkpoints(stage: Path) -> dict[int, Path]:
    found = {}
    for path in (stage / "checkpoints").glob("checkpoint-*"):
        if (path / "trainer_state.json").is_file():
            found[int(path.name.split("-")[1])] = path
    return found


def kill_and_rerun(
    tmp: Path, seed: int = 0, steps: int = 8, save_every: int = 2, extra: list[str] = ()
) -> dict:
    """kill -9 a smoke SFT at a random step, rerun the same command, count what was lost.
    `extra`: more `--set` overrides."""
    kill_at = random.Random(seed).randint(save_every + 1, steps - 1)
    run = tmp / "run"
    argv = ["train", "sft", *SMOKE, "--set", f"sft.max_steps={steps}", f"sft.save_steps={save_every}",
            "sft.save_total_limit=100", "sft.logging_steps=1", *extra, "--out", str(run)]  # fmt: skip
    stage = run / "sft"
    proc = subprocess.Popen(
        cli_command(argv), cwd=tmp, env=cli_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if max(_logged_steps(stage / "log.jsonl"), default=0) >= kill_at:
            break
        time.sleep(0.2)
    killed_step = max(_logged_steps(stage / "log.jsonl"), default=0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = _complete_checkpoints(stage)
    rerun = run_cli(argv, tmp)
    after = _complete_checkpoints(stage)
    logged = _logged_steps(stage / "log.jsonl")
    resumed = max((s for s in before if s <= killed_step), default=0)
    return {
        "kill_at": kill_at,
        "killed_step": killed_step,
        "checkpoints_before": sorted(before),
        "checkpoints_lost": len(set(before) - set(after)),
        "resumed_from": resumed,
        "steps_redone": killed_step - resumed,
        "rerun_rc": rerun.rc,
        "rerun_said_resume": f"checkpoint-{resumed}" in rerun.stderr if resumed else None,
        "duplicate_steps": len(logged) - len(set(logged)),
        "final_steps": sorted(set(logged)),
        "rerun": rerun,
    }


def second_writer_rows(root: Path, extra: list[str] = ()) -> list[tuple[str, str, str, int, float, str]]:
    """A smoke SFT runs; meanwhile a second `train sft` on its folder, then a second with
    `--fresh`, then a `pipeline`: each must exit 2 naming the first's pid, and move nothing.
    Then SIGTERM to the first: a checkpoint, exit 143. Rows as hostile.slow_rows gives them.
    `extra`: more `--set` overrides for the SFT runs."""
    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    argv = ["train", "sft", *SMOKE, "--set", "sft.max_steps=400", "sft.save_steps=2",
            "sft.logging_steps=1", *extra, "--out", str(run)]  # fmt: skip
    first = subprocess.Popen(cli_command(argv), cwd=root, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None and not _complete_checkpoints(
                run / "sft"):
            time.sleep(0.2)
        others = [("a second train sft on the same --out", argv),
                  ("a second train sft --fresh on a live run", [*argv, "--fresh"]),
                  ("a pipeline on a live run's folder", ["pipeline", *SMOKE, "--out", str(run)])]
        for name, other in others:
            saved = sorted(_complete_checkpoints(run / "sft"))
            outcome = run_cli(other, root, timeout=300)
            kept = set(saved) <= set(_complete_checkpoints(run / "sft"))
            ok = (outcome.rc == 2 and f"in use by pid {first.pid}" in outcome.last_line
                  and kept and first.poll() is None
                  and not list(run.glob("sft/checkpoints.old-*")))
            rows.append(("concurrency", name, "TRACEBACK" if TRACEBACK in outcome.stderr else
                         "ok" if ok else "FAILED", outcome.rc, outcome.seconds, outcome.last_line))
        began = time.perf_counter()
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    last = ([line for line in err.splitlines() if line.startswith("haiku-kit ")] or [""])[-1]
    ok = first.returncode == 143 and "checkpoint saved to" in last
    steps = _logged_steps(run / "sft" / "log.jsonl")
    ok = ok and steps == sorted(set(steps))
    rows.append(("signals", "SIGTERM during training", "TRACEBACK" if TRACEBACK in err else
                 "ok" if ok else "FAILED", first.returncode, time.perf_counter() - began, last))
    return rows
