"""Interruptions and second writers through the real CLI, each in its own process: a Ctrl-C
while loading claims no checkpoint; kill -9 mid-SFT then a plain rerun resumes; a second writer
of a live run folder (plain, --fresh, pipeline) is refused and moves nothing; SIGTERM saves a
checkpoint. The bad inputs themselves: tests/test_hostile.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import interruptions as faults
import pytest
from hostile_inputs import SMOKE, _data_build, _good_lines

REPO = Path(__file__).resolve().parents[1]


def test_negative_learning_rate_fails_before_loading_and_records_nothing(tmp_path):
    outcome = faults.run_cli(["train", "sft", *SMOKE, "--set", "sft.learning_rate=-2e-4",
                              "--out", str(tmp_path / "run")], tmp_path)
    assert outcome.rc == 2
    assert "Loading" not in outcome.stderr and "Building the embedded" not in outcome.stderr
    assert not list((tmp_path / "run").rglob("effective.yaml"))


def test_two_values_after_one_set_are_both_applied(tmp_path):
    outcome = faults.run_cli(
        ["train", "sft", *SMOKE, "--set", "sft.max_steps=-1", "sft.num_train_epochs=0",
         "--out", str(tmp_path / "run")],
        tmp_path,
    )  # fmt: skip
    assert outcome.rc == 2 and "sft.num_train_epochs=0" in outcome.last_line


def test_data_build_prints_each_bad_row_and_the_counts_once(tmp_path):
    source = tmp_path / "rows.jsonl"
    lines = _good_lines(60) + ["{broken", json.dumps({"topic": "t", "haiku": "x" * 20_000})]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outcome = faults.run_cli(_data_build(source, tmp_path), tmp_path)
    assert outcome.rc == 0, outcome.stderr[-2000:]
    both = outcome.stdout + outcome.stderr
    assert both.count("row 61: not valid JSON") == 1
    assert both.count("row 62: field 'haiku' has 20000 characters, over the 10000 read") == 1
    assert outcome.stdout.count("loaded") == 1, outcome.stdout


CAUGHT_INSIDE_C_RUN_CODE = """
import ctypes
import sys

def main():
    run = ctypes.pythonapi.PyRun_String
    run.restype, run.argtypes = ctypes.py_object, [ctypes.c_char_p, ctypes.c_int, ctypes.py_object,
                                                   ctypes.py_object]
    try:
        run(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input
    except KeyboardInterrupt:
        return 130

if __name__ == "__main__":
    sys.exit(main())
"""


def test_the_harness_launch_exits_130_after_an_interrupt_that_crossed_c_run_code(tmp_path):
    """CI saw returncode -2 for a run whose CLI had caught Ctrl-C and returned 130: under
    `python -m`, CPython 3.11 exits by SIGINT once a KeyboardInterrupt escaped code that C ran
    (PyRun_String). The harness launches the CLI as the console script does, which exits 130."""
    (tmp_path / "interrupted.py").write_text(CAUGHT_INSIDE_C_RUN_CODE, encoding="utf-8")
    done = subprocess.run(faults.cli_command([], module="interrupted"), cwd=tmp_path,
                          env={**faults.cli_env(), "PYTHONPATH": str(tmp_path)}, check=False)
    assert done.returncode == 130


@pytest.mark.slow
def test_ctrl_c_while_loading_claims_no_checkpoint(tmp_path):
    outcome = faults.interrupt_while_loading(tmp_path)
    assert faults.TRACEBACK not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.rc == 130
    assert "no checkpoint was saved on the way out" in outcome.last_line
    assert "haiku-kit train sft --preset cpu-smoke --out" in outcome.last_line


@pytest.mark.slow
def test_ctrl_c_reaches_the_run_even_when_the_caller_ignores_sigint(tmp_path):
    """An ignored SIGINT is inherited across exec; code run earlier in a pytest worker can leave
    it so, and the run then finished with exit 0. The harness starts it as a terminal would."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        outcome = faults.interrupt_while_loading(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcome.rc == 130, outcome.stderr[-2000:]
    assert "no checkpoint was saved on the way out" in outcome.last_line


@pytest.mark.slow
def test_kill_9_then_plain_rerun_resumes_within_one_save_interval(tmp_path, small_splits):
    result = faults.kill_and_rerun(tmp_path, seed=1, steps=6, save_every=2,
                                   extra=[f"data.splits_dir={small_splits}"])
    assert result["rerun_rc"] == 0, result["rerun"].stderr[-3000:]
    assert result["checkpoints_before"], result  # the kill came after the first save
    assert result["rerun_said_resume"], result["rerun"].stderr[-3000:]
    assert result["checkpoints_lost"] == 0
    assert result["steps_redone"] <= 2  # at most one save interval
    assert result["duplicate_steps"] == 0
    assert result["final_steps"] == list(range(1, 7))


@pytest.mark.slow
def test_second_writers_are_refused_and_sigterm_saves_a_checkpoint(tmp_path, small_splits):
    """While a smoke SFT runs: a second `train sft` on its folder, one with --fresh and a
    `pipeline` each exit 2 naming the first's pid and move none of its files (two runs 2 s
    apart used to both exit 0, the second moving the first's checkpoints aside). Then SIGTERM
    (timeout, schedulers, Colab) is handled as Ctrl-C: a checkpoint, exit 143, a clean log."""
    rows = faults.second_writer_rows(tmp_path, extra=[f"data.splits_dir={small_splits}"])
    assert [row[1] for row in rows] == [
        "a second train sft on the same --out", "a second train sft --fresh on a live run",
        "a pipeline on a live run's folder", "SIGTERM during training"]
    for kind, name, verdict, rc, _, line in rows:
        assert verdict == "ok", (name, rc, line)
    assert "is in use by pid" in rows[0][5] and "train sft" in rows[0][5]
    assert "terminated (SIGTERM) at step" in rows[3][5] and rows[3][3] == 143
