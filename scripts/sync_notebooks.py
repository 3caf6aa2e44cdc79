"""Write the one install cell and the Colab badge into every notebook, then pair .py and .ipynb
with jupytext. Both are generated from pyproject.toml's [project.urls] Repository, the one place
the repository URL lives.

The install cell is the first code cell of each notebooks/NN_*.py; its only source is
install_cell() below (tests/test_notebooks.py checks every notebook holds it byte for byte). It
installs the kit only where it is missing, from HAIKU_KIT_SOURCE when set (a local wheel, a git
URL, or a package name once haiku-kit is published), else from the repository, with the [gpu]
extra on a machine with an NVIDIA GPU. Run after editing a notebook or the URL:
`python scripts/sync_notebooks.py`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCE_ENV = "HAIKU_KIT_SOURCE"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")

INSTALL_TEMPLATE = '''\
# Install the kit where it is missing (Colab); with haiku-kit installed this does nothing.
# From {env} if set: a wheel, a git URL, or haiku-kit with a version (haiku-kit==0.1.0).
import importlib.util
import os
import shutil
import subprocess
import sys

if importlib.util.find_spec("haiku_kit") is None:
    src = os.environ.get("{env}") or "{default}"
    extras = ["gpu"] * bool(shutil.which("nvidia-smi")) + ["app"] * ("google.colab" in sys.modules)
    extra = f"[{{','.join(extras)}}]" if extras else ""  # Unsloth on a GPU; Colab: the web page
    local = src.endswith(".whl") or os.path.exists(src)
    req = f"haiku-kit{{extra}} @ {{src}}" if "://" in src else src + extra if local else (
        f"haiku-kit{{extra}}{{src.removeprefix('haiku-kit')}}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", req])
'''


def repository_url(pyproject: Path = REPO / "pyproject.toml") -> str:
    urls = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("urls", {})
    if "Repository" not in urls:
        raise KeyError(f"{pyproject}: [project.urls] has no Repository")
    return urls["Repository"].rstrip("/")


def github_path(repo_url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", repo_url)
    if not match:
        raise ValueError(f"Colab badges need a github.com repository URL, got {repo_url!r}")
    return match.group(1)


def colab_badge(repo_url: str, notebook: str, branch: str = "main") -> str:
    link = f"https://colab.research.google.com/github/{github_path(repo_url)}/blob/{branch}/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_cell(repo_url: str) -> str:
    return INSTALL_TEMPLATE.format(env=SOURCE_ENV, default=f"git+{repo_url}")


REPOSITORY = repository_url()
INSTALL_CELL = install_cell(REPOSITORY)


def with_badge(text: str, notebook: str, repo_url: str) -> str:
    """The notebook text with its Colab badge pointing at repo_url's copy of this notebook."""
    return BADGE_RE.sub(lambda _: colab_badge(repo_url, notebook), text, count=1)


def with_install_cell(text: str) -> str:
    """The notebook text with its first code cell ("# %%" alone on its line) set to INSTALL_CELL."""
    lines = text.splitlines(keepends=True)
    start = lines.index("# %%\n") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("# %%")), len(lines))
    return "".join(lines[:start]) + INSTALL_CELL + "\n" + "".join(lines[end:])


def main() -> int:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    for py in paths:
        text = with_badge(py.read_text(encoding="utf-8"), py.with_suffix(".ipynb").name, REPOSITORY)
        py.write_text(with_install_cell(text), encoding="utf-8")
    cmd = [sys.executable, "-m", "jupytext", "--sync", *map(str, paths)]
    return subprocess.call(cmd, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
