"""The hostile-input suite (issue 42): every case of hostile_inputs.py through the real CLI, each
in its own process, plus the concurrency and signal cases of interruptions.py; one table by class.

    python tests/hostile.py [--cheap] [--only TEXT] [--skip-slow]

For each case: exit code, whether the last stderr line names the culprit, tracebacks, files lost,
wall time and peak resident memory against the case's bounds. docs/reliability.md prints the last
full run. tests/test_hostile.py runs the cheap cases inside pytest (run_in_process).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script too
from hostile_inputs import CASES, Case, expand, lost, snapshot  # sibling modules
from interruptions import last_line

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Result:
    case: Case
    rc: int
    stderr: str
    seconds: float
    peak_mb: float
    lost: list[str]

    @property
    def last_line(self) -> str:
        return last_line(self.stderr, own=("haiku-kit ", "warning: "))

    @property
    def named(self) -> bool:
        if not self.case.expect:
            return True
        text = self.stderr if self.case.rc == 0 else self.last_line
        return all(bit in text for bit in self.case.expect)

    @property
    def problems(self) -> list[str]:
        found = []
        if TRACEBACK in self.stderr:
            found.append("traceback")
        if self.rc != self.case.rc:
            found.append(f"exit {self.rc}, not {self.case.rc}")
        if not self.named:
            found.append(f"last line does not name {self.case.expect}")
        if self.lost:
            found.append(f"lost {self.lost}")
        if self.seconds > self.case.max_s:
            found.append(f"{self.seconds:.0f} s > {self.case.max_s:.0f} s")
        if self.peak_mb > self.case.max_mb:
            found.append(f"{self.peak_mb:.0f} MB > {self.case.max_mb:.0f} MB")
        return found


class _PeakRss:
    """The largest resident set of a process (and its children) above `baseline`, sampled every
    20 ms on a thread, in MB."""

    def __init__(self, pid: int, baseline: bool = False):
        import psutil

        self.process = psutil.Process(pid)
        self.base = self._rss() if baseline else 0
        self.peak = self.base
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _rss(self) -> int:
        import psutil

        try:
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    def _watch(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 1e6


def _env(case: Case, tmp: Path) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update({k: expand(v, tmp) for k, v in case.env.items()})
    return env


LAUNCH = "import sys; from haiku_kit.cli import main; sys.exit(main())"


def run_in_subprocess(case: Case, tmp: Path) -> Result:
    """The case through `python -c 'from haiku_kit.cli import main'` (what the console script
    runs), with its peak memory sampled from outside. An argument holding a NUL, which no
    shell can pass, runs in this process instead."""
    argv = case.build(tmp)
    if any("\x00" in arg for arg in argv):  # exec cannot pass a NUL: only Python callers can
        return run_in_process(case, tmp)
    before = snapshot(tmp)
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *argv], cwd=tmp, env=_env(case, tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    with _PeakRss(proc.pid) as peak:
        try:
            _, err = proc.communicate(timeout=case.max_s * 3)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err += "\n(hung: killed)"
    return Result(case, proc.returncode, err, time.perf_counter() - began, peak.mb,
                  lost(before, tmp))


def run_in_process(case: Case, tmp: Path) -> Result:
    """The case through haiku_kit.cli.main in this process: the same code path, no interpreter
    start. Memory is this process's growth above its size before the call."""
    from haiku_kit.cli import main

    argv = case.build(tmp)
    before = snapshot(tmp)
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update({k: expand(v, tmp) for k, v in case.env.items()})
    began = time.perf_counter()
    try:
        with _PeakRss(os.getpid(), baseline=True) as peak, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 (what a user would see as a traceback)
                err.write(traceback.format_exc())
                rc = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(case, rc, err.getvalue(), time.perf_counter() - began, peak.mb, lost(before, tmp))


# --------------------------------------------------------------------------- concurrency, signals


def slow_rows(root: Path) -> list[tuple[str, str, str, int, float, str]]:
    """(class, case, verdict, exit, s, last line) of the training cases, from interruptions.py."""
    import interruptions as faults

    rows = []
    tmp = root / "sigint"
    tmp.mkdir()
    outcome = faults.interrupt_while_loading(tmp)
    ok = outcome.rc == 130 and "no checkpoint was saved" in outcome.last_line
    rows.append(("signals", "Ctrl-C while the model loads", _verdict(ok, outcome.stderr),
                 outcome.rc, outcome.seconds, outcome.last_line))
    tmp = root / "kill"
    tmp.mkdir()
    result = faults.kill_and_rerun(tmp, seed=0)
    ok = bool(result["rerun_said_resume"]) and result["checkpoints_lost"] == 0 \
        and result["duplicate_steps"] == 0
    rows.append(("signals", "kill -9 at a random SFT step, then a plain rerun",
                 _verdict(ok, result["rerun"].stderr), result["rerun_rc"],
                 result["rerun"].seconds,
                 (f"resumed from step {result['resumed_from']}, {result['steps_redone']} steps "
                  f"redone, {result['checkpoints_lost']} checkpoints lost")))
    rows += faults.second_writer_rows(root / "writers")
    return rows


def _verdict(ok: bool, stderr: str) -> str:
    if TRACEBACK in stderr:
        return "TRACEBACK"
    return "ok" if ok else "FAILED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cheap", action="store_true", help="only the cases pytest runs")
    parser.add_argument("--only", default=None, help="cases whose name holds this text")
    parser.add_argument("--skip-slow", action="store_true", help="no training cases")
    args = parser.parse_args()
    chosen = [c for c in CASES if (c.cheap or not args.cheap)
              and (args.only is None or args.only in c.name)]
    results = []
    with tempfile.TemporaryDirectory(prefix="haiku-hostile-") as root:
        for i, case in enumerate(chosen):
            tmp = Path(root) / f"case{i}"
            tmp.mkdir()
            results.append(run_in_subprocess(case, tmp))
            print(f"{case.kind:<12} {case.name:<55} {'; '.join(results[-1].problems) or 'ok'}",
                  file=sys.stderr, flush=True)
        slow = [] if (args.skip_slow or args.cheap or args.only) else slow_rows(Path(root))
    print("| class | case | verdict | exit | s | peak MB | last stderr line |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        verdict = "; ".join(r.problems) or "ok"
        line = r.last_line.replace("|", "\\|")[:140]
        print(f"| {r.case.kind} | {r.case.name} | {verdict} | {r.rc} | {r.seconds:.1f} | "
              f"{r.peak_mb:.0f} | {line} |")
    for kind, name, verdict, rc, seconds, line in slow:
        print(f"| {kind} | {name} | {verdict} | {rc} | {seconds:.1f} | - | "
              f"{line.replace('|', chr(92) + '|')[:140]} |")
    print()
    print("| class | inputs | ok | tracebacks | hangs | files lost | worst s | worst peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    kinds = sorted({r.case.kind for r in results} | {row[0] for row in slow})
    total = [0, 0, 0, 0, 0]
    for kind in kinds:
        mine = [r for r in results if r.case.kind == kind]
        extra = [row for row in slow if row[0] == kind]
        n = len(mine) + len(extra)
        ok = sum(not r.problems for r in mine) + sum(row[2] == "ok" for row in extra)
        tracebacks = sum(TRACEBACK in r.stderr for r in mine) + sum(
            row[2] == "TRACEBACK" for row in extra)
        hangs = sum("(hung: killed)" in r.stderr for r in mine)
        files = sum(bool(r.lost) for r in mine)
        worst_s = max([r.seconds for r in mine] + [row[4] for row in extra], default=0)
        worst_mb = max((r.peak_mb for r in mine), default=0)
        print(f"| {kind} | {n} | {ok} | {tracebacks} | {hangs} | {files} | {worst_s:.1f} | "
              f"{worst_mb:.0f} |")
        total = [a + b for a, b in zip(total, (n, ok, tracebacks, hangs, files))]
    print(f"| all | {total[0]} | {total[1]} | {total[2]} | {total[3]} | {total[4]} | | |")
    return 0 if total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
