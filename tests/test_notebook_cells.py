"""Badges and install cells generated from [project.urls]; the install source set by one variable."""

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("sync_notebooks", REPO / "scripts" / "sync_notebooks.py")
cells = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cells)

URL = cells.repository_url()


def test_repository_url_comes_from_project_urls(tmp_path):
    import tomllib

    assert URL == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    missing = tmp_path / "pyproject.toml"
    missing.write_text('[project]\nname = "x"\n')
    with pytest.raises(KeyError, match="Repository"):
        cells.repository_url(missing)


def test_badge_links_this_repository_and_notebook():
    badge = cells.colab_badge("https://github.com/someone/haiku-kit", "03_sft.ipynb")
    assert "colab.research.google.com/github/someone/haiku-kit/blob/main/notebooks/03_sft.ipynb" in badge
    with pytest.raises(ValueError, match="github.com"):
        cells.colab_badge("https://gitlab.com/someone/haiku-kit", "03_sft.ipynb")


def _run_cell(monkeypatch, source_env, gpu):
    """Execute the generated install cell as a notebook would, haiku_kit absent; return pip's argv."""
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "haiku_kit" else real_find_spec(name, *a))
    monkeypatch.setattr(shutil, "which", lambda name, *a: "/usr/bin/nvidia-smi" if gpu else None)
    if source_env is None:
        monkeypatch.delenv(cells.SOURCE_ENV, raising=False)
    else:
        monkeypatch.setenv(cells.SOURCE_ENV, source_env)
    exec(compile(cells.install_cell(URL), "install-cell", "exec"), {})  # noqa: S102 - our own cell
    assert len(calls) == 1 and calls[0][:4] == [sys.executable, "-m", "pip", "install"]
    return calls[0][-1]


@pytest.mark.parametrize(("source", "gpu", "expected"), [
    (None, True, f"haiku-kit[gpu] @ git+{URL}"),
    (None, False, f"haiku-kit @ git+{URL}"),
    ("git+https://github.com/me/fork@v0.1.0", True, "haiku-kit[gpu] @ git+https://github.com/me/fork@v0.1.0"),
    ("haiku-kit", True, "haiku-kit[gpu]"),
    ("haiku-kit==0.1.0", True, "haiku-kit[gpu]==0.1.0"),
    ("haiku-kit==0.1.0", False, "haiku-kit==0.1.0"),
])
def test_install_cell_requirement_for_each_source(monkeypatch, source, gpu, expected):
    requirement = _run_cell(monkeypatch, source, gpu)
    assert requirement == expected
    parsed = Requirement(requirement)  # what pip will parse
    assert parsed.name == "haiku-kit" and parsed.extras == ({"gpu"} if gpu else set())


def test_install_cell_adds_the_web_page_on_colab(monkeypatch):
    """On Colab the last cell serves the trained model in a page: the [app] extra comes too."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    requirement = _run_cell(monkeypatch, None, True)
    assert Requirement(requirement).extras == {"gpu", "app"}


def test_install_cell_takes_a_local_wheel(monkeypatch, tmp_path):
    wheel = tmp_path / "haiku_kit-0.1.0-py3-none-any.whl"
    assert _run_cell(monkeypatch, str(wheel), True) == f"{wheel}[gpu]"


def test_install_cell_does_nothing_when_the_kit_is_importable(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
    exec(compile(cells.install_cell(URL), "install-cell", "exec"), {})  # noqa: S102 - our own cell
    assert calls == []
