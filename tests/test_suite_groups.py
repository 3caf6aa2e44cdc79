"""`make test` runs the suite on xdist workers with `--dist loadgroup`; a file whose tests share a
module-scoped fixture (a trained smoke run, a loaded model, a web server) must stay on one worker,
or each worker builds the fixture again (the smoke run cost 4 minutes twice that way)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRATCH = '''
import pytest

@pytest.fixture(scope="module")
def built_once():
    return object()

@pytest.mark.parametrize("i", range(8))
def test_uses_the_fixture(built_once, i):
    pass

@pytest.mark.parametrize("i", range(8))
def test_free(i):
    pass
'''


def test_tests_sharing_a_module_fixture_run_on_one_worker(tmp_path):
    shutil.copy2(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_scratch.py").write_text(SCRATCH)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_scratch.py")],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = re.findall(r"\[(gw\d+)\].*PASSED .*::(test_\w+)", proc.stdout)
    grouped = {worker for worker, name in ran if name == "test_uses_the_fixture"}
    assert len([1 for _, name in ran if name == "test_uses_the_fixture"]) == 8, proc.stdout[-3000:]
    assert len(grouped) == 1, f"the group was split over workers {sorted(grouped)}:\n{proc.stdout[-3000:]}"
