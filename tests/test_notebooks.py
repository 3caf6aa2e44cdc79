"""The stage notebooks: .py/.ipynb in sync, no outputs, one parameters cell, install cell, badge,
the one install cell in every notebook, and every `stages.X` they call exists (so a renamed
helper breaks a fast test, not a demo)."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

from haiku_kit import pipeline, stages
from haiku_kit.runs import STAGE_INPUTS, STAGES

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
PY_FILES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
IPYNB_FILES = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
SYNC_HINT = "regenerate with: jupytext --sync notebooks/*.py"


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_every_stage_has_a_notebook_pair():
    stems = {p.stem for p in PY_FILES}
    for stage in STAGES:
        stem = Path(pipeline.NOTEBOOKS[stage]).stem
        assert stem in stems, f"notebooks/{stem}.py missing for stage {stage!r}"
    assert {p.stem for p in IPYNB_FILES} == stems, f".py and .ipynb sets differ; {SYNC_HINT}"


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_py_and_ipynb_in_sync(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing; {SYNC_HINT}"
    assert _cells(jupytext.read(py)) == _cells(jupytext.read(ipynb)), (
        f"{py.name} and {ipynb.name} differ; {SYNC_HINT}"
    )


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=lambda p: p.stem)
def test_committed_ipynb_has_no_outputs(ipynb: Path):
    nb = nbformat.read(ipynb, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{ipynb.name} cell {i} has outputs; clear them"
            assert cell.execution_count is None, f"{ipynb.name} cell {i} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_exactly_one_parameters_cell_with_the_pipeline_parameters(py: Path):
    nb = jupytext.read(py)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1, f"{py.name}: {len(params)} cells tagged 'parameters'"
    assigned = {
        t.id
        for node in ast.parse(params[0].source).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    expected = {"preset", "overrides", "run_dir"}
    stage = next((s for s, n in pipeline.NOTEBOOKS.items() if Path(n).stem == py.stem), None)
    if stage is not None:  # the pipeline passes exactly these; each must be declared
        expected |= set(STAGE_INPUTS[stage])
    assert expected <= assigned, f"{py.name}: parameters cell lacks {expected - assigned}"


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=lambda p: p.stem)
def test_papermill_help_lists_every_parameter_with_its_help(ipynb: Path):
    """`papermill --help-notebook` (the real CLI) shows each parameter with an inline help."""
    import sys

    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(ipynb)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    nb = jupytext.read(ipynb)
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", ()))
    names = [line.split(":")[0].split("=")[0].strip() for line in source.splitlines()
             if line.strip() and not line.startswith("#")]
    shown = out.split("Parameters inferred", 1)[1]
    for name in names:
        assert f"  {name}:" in shown, f"{ipynb.name}: papermill does not list {name}"
        line = next(x for x in source.splitlines() if x.startswith(name))
        help_text = line.split("#", 1)[1].strip() if "#" in line else ""
        assert help_text, f"{ipynb.name}: {name} has no inline help"
        assert " ".join(help_text.split()) in " ".join(shown.split()), name


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_colab_badge_points_at_this_notebook(py: Path):
    first = jupytext.read(py).cells[0]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source
    sync = _sync_script()  # the badge is generated from [project.urls] Repository
    assert sync.colab_badge(sync.repository_url(), py.with_suffix(".ipynb").name) in first.source


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_notebooks", REPO / "scripts" / "sync_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", PY_FILES + IPYNB_FILES, ids=lambda p: p.name)
def test_the_install_cell_is_the_one_generated_source(path: Path):
    """Byte for byte what scripts/sync_notebooks.py writes, in the .py and the .ipynb alike."""
    install = _sync_script().INSTALL_CELL.rstrip("\n")
    first_code = next(c for c in jupytext.read(path).cells if c.cell_type == "code")
    assert first_code.source == install, f"{path.name}: run python scripts/sync_notebooks.py"


def test_training_notebooks_show_the_real_trainer_and_train_in_their_own_cell():
    for name in ("03_sft.py", "04_grpo.py", "00_quickstart.py"):
        code = [c.source.strip() for c in jupytext.read(NB_DIR / name).cells if c.cell_type == "code"]
        train = "trainer.train(resume_from_checkpoint=trainer.kit_phase.resume)"
        cells = [c for c in code if c.splitlines()[0].split("  #")[0] == train]
        assert len(cells) >= 1 and all(len(c.splitlines()) == 1 for c in cells), (
            f"{name}: {train} (it resumes the newest checkpoint, if any) needs its own cell"
        )
        assert any("model, tokenizer = stages.load_model(" in s for s in code), name
        assert any("stages.show_args(trainer)" in s for s in code), name


# The TRL calls each training notebook writes out in its own cells (as Unsloth's notebooks do),
# built from the pieces the kit returns; the kit's one-call path (SFTSetup/GRPOSetup.trainer)
# makes the same calls.
TRL_CALLS = {
    "03_sft.py": ("from trl import SFTConfig, SFTTrainer", "SFTConfig(**kit.args)", "SFTTrainer(",
                  "train_dataset=kit.train_dataset", "callbacks=kit.callbacks",
                  "processing_class=tokenizer", "kit.attach(trainer)", "trainer.train_dataset[0]"),
    "04_grpo.py": ("from trl import GRPOConfig, GRPOTrainer", "GRPOConfig(**kit.args)", "GRPOTrainer(",
                   "reward_funcs=kit.reward_funcs", "train_dataset=kit.train_dataset",
                   "callbacks=kit.callbacks", "processing_class=tokenizer", "kit.attach(trainer)",
                   "stages.show_rewards(kit)", "stages.show_reward_scores(kit,"),
    "00_quickstart.py": ("SFTConfig(", "SFTTrainer(", "GRPOConfig(", "GRPOTrainer(",
                         "kit.attach(trainer)"),
}


@pytest.mark.parametrize("name", sorted(TRL_CALLS))
def test_training_notebooks_build_the_trl_config_and_trainer_in_visible_cells(name):
    code = "\n".join(c.source for c in jupytext.read(NB_DIR / name).cells if c.cell_type == "code")
    missing = [s for s in TRL_CALLS[name] if s not in code]
    assert not missing, f"{name} does not show {missing}"
    for hidden in ("stages.sft_trainer(", "stages.grpo_trainer("):  # the one-call shortcuts
        assert hidden not in code, f"{name} hides the TRL calls behind {hidden}"
    # the cell that builds the trainer comes before the cell that trains it
    cells = [c.source for c in jupytext.read(NB_DIR / name).cells if c.cell_type == "code"]
    built = min(i for i, s in enumerate(cells) if "Trainer(" in s)
    trained = min(i for i, s in enumerate(cells) if s.startswith("trainer.train("))
    assert built < trained


def test_the_install_cell_is_a_few_lines():
    install = _sync_script().INSTALL_CELL
    code = [ln for ln in install.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(install.splitlines()) <= 16 and len(code) <= 13, install


def _install_cell(py: Path) -> str:
    cells = [c.source for c in jupytext.read(py).cells if c.cell_type == "code"]
    install = [s for s in cells if 'find_spec("haiku_kit")' in s]
    assert len(install) == 1, f"{py.name}: expected one install cell"
    assert cells.index(install[0]) == 0, f"{py.name}: the install cell must be the first code cell"
    return install[0]


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_install_cell_installs_only_when_the_kit_is_missing(py: Path, monkeypatch):
    source = _install_cell(py)
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
    exec(compile(source, py.name, "exec"), {})  # noqa: S102 - the cell is ours, run as is
    assert calls == [], "installed although haiku_kit is importable"

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "haiku_kit" else real_find_spec(name, *a),
    )
    monkeypatch.delenv("HAIKU_KIT_SOURCE", raising=False)
    url = _sync_script().repository_url()
    for nvidia_smi, package in (("/usr/bin/nvidia-smi", f"haiku-kit[gpu] @ git+{url}"),
                                (None, f"haiku-kit @ git+{url}")):
        calls.clear()
        monkeypatch.setattr(shutil, "which", lambda name, *a, _p=nvidia_smi: _p)
        exec(compile(source, py.name, "exec"), {})  # noqa: S102 - the cell is ours, run as is
        assert len(calls) == 1 and "pip" in calls[0] and calls[0][-1] == package


class _StagesCalls(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "stages":
            self.names.add(node.attr)
        self.generic_visit(node)


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_notebook_code_is_valid_and_calls_existing_helpers(py: Path):
    visitor = _StagesCalls()
    for cell in jupytext.read(py).cells:
        if cell.cell_type == "code":
            visitor.visit(ast.parse(cell.source))  # also: no IPython magics in code cells
    assert visitor.names, f"{py.name} never calls haiku_kit.stages"
    missing = sorted(n for n in visitor.names if not hasattr(stages, n))
    assert not missing, f"{py.name} calls stages.{missing} which does not exist"


def test_notebooks_ship_inside_the_package():
    found = pipeline.notebooks_dir()
    for name in pipeline.NOTEBOOKS.values():
        assert (found / name).is_file(), f"{name} not found via the package ({found})"
    from importlib import resources

    packaged = resources.files("haiku_kit") / "notebooks"
    assert (packaged / pipeline.NOTEBOOKS["data"]).is_file(), "notebooks not in package data"


def test_quickstart_takes_every_step_the_stage_notebooks_take():
    quick = NB_DIR / "00_quickstart.py"
    if not quick.is_file():
        pytest.skip("no quickstart notebook")

    def calls(py: Path) -> set[str]:
        visitor = _StagesCalls()
        for cell in jupytext.read(py).cells:
            if cell.cell_type == "code":
                visitor.visit(ast.parse(cell.source))
        return visitor.names

    stage_calls = set().union(*(calls(NB_DIR / Path(n).with_suffix(".py")) for n in
                                pipeline.NOTEBOOKS.values()))  # fmt: skip
    # launch_command prints the per-stage `accelerate launch` command: the quickstart trains both
    # stages in its one kernel and has no stage of its own to launch
    missing = stage_calls - calls(quick) - {"elapsed", "launch_command"}
    assert not missing, f"00_quickstart.py skips stages.{sorted(missing)}"
