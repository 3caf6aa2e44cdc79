"""The hostile-input suite's cheap cases (tests/hostile_inputs.py), each through the real CLI's
main() in this process: the exit code it states, its culprit named in the last stderr line, no
traceback, nothing lost, and its memory growth under the case's bound. `python tests/hostile.py`
runs every case, each in its own process, and prints the table of docs/reliability.md."""

from __future__ import annotations

import pytest
from hostile import TRACEBACK, run_in_process
from hostile_inputs import CASES

CHEAP = [case for case in CASES if case.cheap]


def test_the_suite_has_a_hundred_inputs_in_every_class():
    kinds = {case.kind for case in CASES}
    assert len(CASES) >= 100
    assert kinds == {"bounded", "recursion", "ranges", "encodings", "artifacts"}
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CHEAP, ids=[f"{c.kind}: {c.name}" for c in CHEAP])
def test_hostile_input(case, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_in_process(case, tmp_path)
    assert TRACEBACK not in result.stderr, result.stderr[-3000:]
    assert result.rc == case.rc, result.stderr[-3000:]
    assert result.named, (case.expect, result.last_line)
    assert not result.lost, result.lost
    assert result.peak_mb <= case.max_mb, result.peak_mb
