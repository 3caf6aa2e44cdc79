"""Fault matrix (issue 17): every bad input through the real `haiku-kit` CLI, a Ctrl-C while the
model loads, and a kill -9 at a random step of a smoke SFT followed by a plain rerun.

    python tests/fault_matrix.py [--seed N] [--skip-kill] [--only NAME,...]

Prints one table: inputs tried, clear errors (exit 2 and one last line naming the file, key or
argument), tracebacks, checkpoints lost, steps redone. The bad inputs are in fault_inputs.py;
tests/test_faults.py runs the same cases under pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script too
from fault_inputs import CASES, REPO, SMOKE, Case, _data_build, _good_lines  # a sibling module

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
        """The kit's own last message ("haiku-kit COMMAND: ..."), else the last stderr line
        (libraries may log after it at exit)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        own = [line for line in lines if line.startswith("haiku-kit ")]
        return (own or lines or [""])[-1]


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




def classify(outcome: Outcome, case: Case) -> str:
    if TRACEBACK in outcome.stderr:
        return "traceback"
    line = outcome.last_line
    if outcome.rc == 2 and all(bit in line for bit in case.expect):
        return "clear"
    return "unclear"


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


def huge_lines_build(tmp: Path) -> tuple[Outcome, float]:
    """`data build` on a 50 MB JSONL holding three 16 MB lines: (outcome, peak RSS in MB)."""
    import psutil

    path = tmp / "huge.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for line in _good_lines(200):
            fh.write(line + "\n")
        for _ in range(3):
            fh.write(json.dumps({"topic": "t", "haiku": "x " * (8 << 20)}) + "\n")
    proc = subprocess.Popen(
        cli_command(_data_build(path, tmp)), cwd=tmp, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    began, peak, watched = time.perf_counter(), 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    return Outcome(proc.returncode, out, err, time.perf_counter() - began), peak / 1e6


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
    """kill -9 a smoke SFT at a random step, rerun the same command, count what was lost."""
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


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    rows, tracebacks, clear, tried = [], 0, 0, 0
    with tempfile.TemporaryDirectory(prefix="haiku-faults-") as root:
        for i, case in enumerate(CASES):
            if wanted and case.name not in wanted:
                continue
            tmp = Path(root) / f"case{i}"
            tmp.mkdir()
            outcome = run_cli(case.build(tmp), tmp)
            verdict = classify(outcome, case)
            tried += 1
            clear += verdict == "clear"
            tracebacks += verdict == "traceback"
            rows.append(
                (case.name, verdict, outcome.rc, f"{outcome.seconds:.1f}", outcome.last_line)
            )
        lost = redone = "-"
        if not wanted or "huge" in wanted:
            tmp = Path(root) / "huge"
            tmp.mkdir()
            outcome, peak_mb = huge_lines_build(tmp)
            ok = outcome.rc == 0 and TRACEBACK not in outcome.stderr
            tried += 1
            tracebacks += TRACEBACK in outcome.stderr
            rows.append(("50 MB JSONL, three 16 MB lines", f"built, peak {peak_mb:.0f} MB" if ok
                         else "failed", outcome.rc, f"{outcome.seconds:.1f}", outcome.last_line))  # fmt: skip
        if not wanted or "interrupt" in wanted:
            tmp = Path(root) / "sigint"
            tmp.mkdir()
            outcome = interrupt_while_loading(tmp)
            ok = outcome.rc == 130 and "no checkpoint was saved" in outcome.last_line
            tried += 1
            tracebacks += TRACEBACK in outcome.stderr
            clear += ok and TRACEBACK not in outcome.stderr
            rows.append(("Ctrl-C while loading", "clear" if ok else "unclear", outcome.rc,
                         f"{outcome.seconds:.1f}", outcome.last_line))  # fmt: skip
        if not args.skip_kill and (not wanted or "kill" in wanted):
            tmp = Path(root) / "kill"
            tmp.mkdir()
            result = kill_and_rerun(tmp, seed=args.seed)
            tried += 1
            tracebacks += TRACEBACK in result["rerun"].stderr
            lost, redone = result["checkpoints_lost"], result["steps_redone"]
            summary = {k: v for k, v in result.items() if k != "rerun"}
            rows.append(("kill -9 at a random SFT step, rerun", "resumed" if
                         result["rerun_said_resume"] else "NOT resumed", result["rerun_rc"],
                         f"{result['rerun'].seconds:.1f}", json.dumps(summary)))  # fmt: skip
    print("| case | verdict | exit | s | last stderr line |")
    print("|---|---|---|---|---|")
    for name, verdict, rc, seconds, line in rows:
        print(f"| {name} | {verdict} | {rc} | {seconds} | {line[:160]} |")
    print()
    print("| inputs tried | clear errors | tracebacks | checkpoints lost | steps redone |")
    print("|---|---|---|---|---|")
    print(f"| {tried} | {clear} | {tracebacks} | {lost} | {redone} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
