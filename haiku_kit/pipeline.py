"""Run the stage notebooks end to end with papermill, stopping at the first failing stage.

The notebooks (notebooks/NN_*.py, paired .ipynb, shipped in the package) call stages.py; each
reads the artifacts of earlier stages by path (runs.py holds the layout), which is what makes
`--from STAGE` possible. This module only runs them.

The pipeline runs in one process: papermill starts one kernel per notebook. Under a launcher
(`accelerate launch`, `torchrun`: WORLD_SIZE > 1) it refuses in one line and names the per-stage
commands instead: each of the N copies would run the whole pipeline, each with its own kernels
that are not processes of the launch, so the training would not be shared and N pipelines would
write one run folder. Several processes train through `haiku-kit train sft|grpo` (or a training
notebook's .py run as a script by the launcher: stages.py is rank-aware); the data, evaluation
and report stages need one process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from haiku_kit import ranks
from haiku_kit.config import resolve_config, save_config
from haiku_kit.errors import HaikuKitError
from haiku_kit.runs import (
    ARTIFACTS,
    NOTEBOOKS,
    STAGE_INPUTS,
    STAGES,
    PipelineError,
    RunPaths,
    check_stage,
    hold_run,
    missing_artifacts,
    stage_outputs,
    trains_nothing,
)

DEMO_PRESET = "cpu-demo"


class StageFailed(HaikuKitError):
    """A stage notebook failed; names the stage, the cell and where the notebook was kept."""

    def __init__(
        self,
        stage: str,
        notebook: Path,
        ename: str,
        evalue: str,
        cell: int | None = None,
        source: str = "",
    ) -> None:
        self.stage, self.notebook, self.cell = stage, notebook, cell
        self.ename, self.evalue, self.source = ename, evalue, source
        where = f"cell [{cell}]" if cell is not None else "outside any cell"
        first_line = next((s.strip() for s in source.splitlines() if s.strip()), "")
        code = f" `{first_line}`" if first_line else ""
        super().__init__(
            f"stage '{stage}' failed in {where}{code}: {ename}: {evalue}\n"
            f"  executed notebook kept at {notebook}"
        )


def notebooks_dir() -> Path:
    """The stage notebooks: shipped inside the package, or the checkout's notebooks/."""
    packaged = resources.files("haiku_kit") / "notebooks"
    if packaged.is_dir() and (packaged / NOTEBOOKS["data"]).is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[1] / "notebooks"
    if (checkout / NOTEBOOKS["data"]).is_file():
        return checkout
    raise FileNotFoundError(
        f"stage notebooks not found in the package ({packaged}) nor in a checkout ({checkout})"
    )


def notebook_path(stage: str) -> Path:
    return notebooks_dir() / NOTEBOOKS[check_stage(stage)]


def _kernel_manager_class(socket_dir: str) -> type:
    """A kernel manager that always starts this very interpreter, over Unix sockets in `socket_dir`.

    The stock "python3" kernelspec can resolve to another Python (a user-level kernelspec, or
    `python` on a PATH without the venv); the notebooks must run where haiku_kit is installed.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    class ThisPythonKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if os.name == "posix":
                # Talk to the kernel over Unix sockets in a private folder, not TCP on localhost:
                # no port is opened, and ipykernel has no "running over TCP without encryption"
                # warning to print on every stage.
                self.transport = "ipc"
                self.ip = os.path.join(socket_dir, "kernel")

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    # tqdm.auto warns that ipywidgets is missing in every headless kernel; the
                    # bars still print as text, so there is nothing for a user to do about it.
                    argv=[sys.executable, "-W", "ignore:IProgress not found", "-m",
                          "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})",
                    language="python",
                )
            return self._kernel_spec

    return ThisPythonKernelManager


def execute_notebook(
    src: Path, out: Path, parameters: dict[str, Any], stage: str, log_output: bool = False
) -> None:
    """Run one notebook with papermill into `out`; a failure becomes StageFailed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out.parent.mkdir(parents=True, exist_ok=True)
    # Stream the cells' output through papermill's files, not its logger (which would print
    # stderr twice).
    stream = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if log_output else {}
    try:
        with tempfile.TemporaryDirectory(prefix="haiku-kit-kernel-") as socket_dir:
            papermill.execute_notebook(
                str(src),
                str(out),
                parameters=parameters,
                kernel_name="python3",
                kernel_manager_class=_kernel_manager_class(socket_dir),
                progress_bar=False,
                **stream,
            )
    except PapermillExecutionError as err:
        raise StageFailed(
            stage, out, err.ename, err.evalue, cell=err.exec_count, source=err.source
        ) from None
    except Exception as err:  # kernel died, timeout, bad notebook: still name the stage
        raise StageFailed(stage, out, type(err).__name__, str(err)) from err


def stage_parameters(
    stage: str, preset: str, overrides: list[str], paths: RunPaths
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "preset": preset,
        "overrides": list(overrides),
        "run_dir": str(paths.root),
    }
    for param in STAGE_INPUTS[stage]:
        params[param] = str(paths.artifact(param))
    return params


def _record_timing(paths: RunPaths, stage: str, seconds: float) -> None:
    timings = json.loads(paths.timings.read_text()) if paths.timings.is_file() else {}
    timings[stage] = round(seconds, 1)
    paths.timings.write_text(json.dumps(timings, indent=2) + "\n")


def _kept_effective(paths: RunPaths) -> dict | None:
    """The trainer's record of the settings earlier stages really used (kept on resume)."""
    import yaml

    if not paths.config.is_file():
        return None
    effective = (yaml.safe_load(paths.config.read_text()) or {}).get("effective")
    return {"effective": effective} if effective else None


TRAINING_STAGES = ("sft", "grpo")


def launched_pipeline_error(preset: str, out_dir: str | Path) -> str:
    """The one line `haiku-kit pipeline` says under a launcher: what to launch instead."""
    return (f"the pipeline runs its notebooks in one process and this is {ranks.describe()} of a "
            "launch: run `haiku-kit pipeline` without a launcher, or launch each training stage, "
            f"`accelerate launch --config_file CONFIG --num_processes {ranks.processes()} -m "
            f"haiku_kit.cli train sft|grpo --preset {preset} --out {out_dir}` "
            "(CONFIG: haiku_kit/resources/accelerate/ddp.yaml; docs/scale-out.md)")


def run_pipeline(
    preset: str,
    overrides: list[str] | None,
    out_dir: str | Path,
    from_stage: str | None = None,
    log_output: bool = False,
    resume: str | None = None,
    fresh: bool | str = False,
) -> Path:
    """Execute the stage notebooks in order into `out_dir`; returns the run folder.

    A training stage the preset does not list (e.g. sft for ref-rl-only-sparse) is skipped.
    Stops at the first failing stage (StageFailed names it and the cell, and the executed
    notebook is kept in RUN/notebooks/). `from_stage` reuses the artifacts of earlier stages.
    Overrides reach the notebooks as papermill parameters, next to the input artifact paths.
    Training stages resume their newest checkpoint by default; `resume` ("latest", or a path for
    the first training stage run) and `fresh` (True: old state moved aside; "delete") reach
    them as the notebooks' `resume`/`fresh` parameters (train/checkpoints.py).
    """
    if ranks.launched():
        raise PipelineError(launched_pipeline_error(preset, out_dir))
    overrides = list(overrides or [])
    paths = RunPaths(Path(out_dir).resolve())
    start = STAGES.index(check_stage(from_stage)) if from_stage else 0
    # Resolving the config first turns a bad preset or override into an error before any
    # notebook starts; each notebook resolves the same (preset, overrides) itself.
    cfg = resolve_config(preset, overrides, paths.root)
    if start:
        missing = missing_artifacts(STAGES[start], paths, cfg)
        if missing:
            raise PipelineError(
                f"cannot resume from stage '{STAGES[start]}' in {paths.root}: missing\n  "
                + "\n  ".join(missing)
                + "\n  run the earlier stages first (drop --from, or start from an earlier one)"
            )
    with hold_run(paths.root, "pipeline"):  # one writer per run folder
        paths.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths.config, extra=_kept_effective(paths) if start else None)
        for i, stage in enumerate(STAGES[start:], start + 1):
            src = notebook_path(stage)
            out = paths.notebooks / src.name
            if trains_nothing(stage, cfg):
                print(f"[{i}/{len(STAGES)}] {stage}: skipped (phases: {cfg.phases})", flush=True)
                continue
            print(f"[{i}/{len(STAGES)}] {stage}: {src.name} -> {out}", flush=True)
            began = time.perf_counter()
            params = stage_parameters(stage, preset, overrides, paths)
            if stage in TRAINING_STAGES:
                params.update(resume=resume, fresh=fresh)
                resume = resume if resume in (None, "latest") else None  # a path: first stage only
            execute_notebook(src, out, params, stage, log_output=log_output)
            _record_timing(paths, stage, time.perf_counter() - began)
            for param in stage_outputs(stage, cfg):
                marker = paths.artifact(param) / ARTIFACTS[param].marker
                if not marker.is_file():
                    raise StageFailed(stage, out, "MissingArtifact", f"{marker} was not written")
            print(
                f"[{i}/{len(STAGES)}] {stage}: done in {time.perf_counter() - began:.0f} s", flush=True
            )
    return paths.root
