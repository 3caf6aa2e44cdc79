"""Write the one install cell into every notebook, then pair .py and .ipynb with jupytext.

The install cell is the first code cell of each notebooks/NN_*.py; its only source is
INSTALL_CELL below (tests/test_notebooks.py checks every notebook holds it byte for byte).
Run after editing a notebook: `python scripts/sync_notebooks.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
INSTALL_CELL = '''# Install the kit where it is missing (Colab); with haiku-kit already installed this does nothing.
import importlib.util
import shutil
import subprocess
import sys

if importlib.util.find_spec("haiku_kit") is None:
    extra = "haiku-kit[gpu]" if shutil.which("nvidia-smi") else "haiku-kit"  # Unsloth needs a GPU
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", extra])
'''


def with_install_cell(text: str) -> str:
    """The notebook text with its first code cell ("# %%" alone on its line) set to INSTALL_CELL."""
    lines = text.splitlines(keepends=True)
    start = lines.index("# %%\n") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("# %%")), len(lines))
    return "".join(lines[:start]) + INSTALL_CELL + "\n" + "".join(lines[end:])


def main() -> int:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    for py in paths:
        py.write_text(with_install_cell(py.read_text(encoding="utf-8")), encoding="utf-8")
    cmd = [sys.executable, "-m", "jupytext", "--sync", *map(str, paths)]
    return subprocess.call(cmd, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
