"""The notebooks' Colab badge and install cell, generated from pyproject.toml's [project.urls].

    python scripts/notebook_cells.py            # rewrite notebooks/*.py (then jupytext --sync)
    python scripts/notebook_cells.py --check    # exit 1 when a notebook differs from the generated text

The repository URL lives in one place, [project.urls] Repository. The install cell installs the
kit only where it is missing, from HAIKU_KIT_SOURCE when set (a local wheel, a git URL, or a
package name once haiku-kit is published), else from that repository, with the [gpu] extra on a
machine with an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCE_ENV = "HAIKU_KIT_SOURCE"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
CELL_MARK = "# %%\n"

INSTALL_CELL = '''\
# Install the kit where it is missing (Colab); with haiku-kit already installed this does nothing.
# From where: set {env} once before running (a wheel path, a git URL, or a package name);
# default: {default}
import importlib.util
import os
import re
import shutil
import subprocess
import sys

if importlib.util.find_spec("haiku_kit") is None:
    source = os.environ.get("{env}") or "{default}"
    extras = "[gpu]" if shutil.which("nvidia-smi") else ""  # Unsloth needs an NVIDIA GPU
    if "://" in source:  # git+https://..., https://.../x.whl
        requirement = f"haiku-kit{{extras}} @ {{source}}"
    elif source.endswith(".whl") or os.path.exists(source):  # a local wheel or checkout
        requirement = source + extras
    else:  # a package name, maybe with a version: haiku-kit, haiku-kit==0.1.0
        requirement = re.sub(r"^([A-Za-z0-9._-]+)", lambda m: m.group(1) + extras, source)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", requirement])
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
    return INSTALL_CELL.format(env=SOURCE_ENV, default=f"git+{repo_url}")


def _cells(text: str) -> list[str]:
    """The text cut before every "# %%" line (the first piece is the header)."""
    return re.split(r"(?m)^(?=# %%)", text)


def render(py_text: str, notebook: str, repo_url: str) -> str:
    """The notebook's .py text with its badge and install cell regenerated."""
    text = BADGE_RE.sub(lambda _: colab_badge(repo_url, notebook), py_text, count=1)
    cells = _cells(text)
    for i, cell in enumerate(cells):
        if cell.startswith(CELL_MARK) and 'find_spec("haiku_kit")' in cell:
            tail = cell[len(CELL_MARK):]
            blank = tail[len(tail.rstrip("\n")):]  # keep the blank lines between cells
            cells[i] = CELL_MARK + install_cell(repo_url) + (blank[1:] if blank else "")
            break
    return "".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ")
    args = parser.parse_args(argv)
    repo_url = repository_url()
    stale = []
    for py in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        text = py.read_text(encoding="utf-8")
        new = render(text, py.with_suffix(".ipynb").name, repo_url)
        if new != text:
            stale.append(py)
            if not args.check:
                py.write_text(new, encoding="utf-8")
                subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(py)], check=True,
                               capture_output=True)
    for py in stale:
        print(f"{'differs' if args.check else 'rewrote'}: {py.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
