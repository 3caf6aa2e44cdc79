"""scripts/check_gpu_deps.py: reads the extras from pyproject.toml, and reports a real conflict."""

import importlib.util
import socket
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_gpu_deps", REPO / "scripts" / "check_gpu_deps.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_reads_core_and_extra_requirements_from_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core, pins = check.read_requirements(REPO / "pyproject.toml", ["gpu", "vllm"])
    assert core == project["dependencies"]
    assert pins == project["optional-dependencies"]["gpu"] + project["optional-dependencies"]["vllm"]
    assert any(p.startswith("unsloth==") for p in pins) and any(p.startswith("vllm==") for p in pins)


def test_unknown_extra_names_the_defined_ones(tmp_path):
    with pytest.raises(KeyError, match="gpu"):
        check.read_requirements(REPO / "pyproject.toml", ["gpuu"])
    assert check.main(["--extras", "gpuu", "--python", "3.12"]) == 2


def test_requirement_names_are_canonical():
    assert check.requirement_name("unsloth_zoo==2026.10.7") == "unsloth-zoo"
    assert check.requirement_name("bitsandbytes>=0.45.5,!=0.46.0") == "bitsandbytes"
    assert check.requirement_name('triton>=3.0.0; "linux" in sys_platform') == "triton"


def test_report_lists_each_pin_with_the_version_pip_picked():
    report = {"install": [{"metadata": {"name": "unsloth_zoo", "version": "2026.10.7"}},
                          {"metadata": {"name": "torch", "version": "2.14.1"}}]}
    lines = check.describe("gpu", "3.12", ["unsloth_zoo==2026.10.7"], report, "")
    assert "resolves (2 packages" in lines[0]
    assert lines[1].split() == ["unsloth_zoo==2026.10.7", "->", "2026.10.7"]
    assert lines[2] == "  also: torch 2.14.1"


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_real_conflict_with_unsloths_transformers_cap_is_reported(tmp_path, capsys):
    """unsloth 2026.10.7's published metadata caps transformers at 5.17.0, so asking for a newer
    one can never resolve (an index that later gains packages cannot change that)."""
    if not _index_reachable():
        pytest.skip("the package index is unreachable")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = []\n'
                         '[project.optional-dependencies]\ngpu = ["unsloth==2026.10.7", "transformers>5.17.0"]\n')
    assert check.main(["--pyproject", str(pyproject), "--extras", "gpu", "--python", "3.12"]) == 1
    out = capsys.readouterr().out
    assert "[gpu] Python 3.12, Linux x86_64: CONFLICT" in out
    assert "transformers>5.17.0 and unsloth==2026.10.7" in out
