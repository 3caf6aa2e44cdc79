"""Run the stage notebooks end to end with papermill, and the helpers those notebooks call.

The notebooks in notebooks/ stay thin: every step they take is one call into this module, so the
tests reach all the logic. A run folder holds everything (layout in `RunPaths`); each stage reads
the artifacts of earlier stages by path, which is what makes `--from STAGE` possible.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from haiku_kit.config import resolve_config
from haiku_kit.errors import HaikuKitError

STAGES = ("data", "baseline", "sft", "grpo", "report")
NOTEBOOKS = {
    "data": "01_data.ipynb",
    "baseline": "02_baseline.ipynb",
    "sft": "03_sft.ipynb",
    "grpo": "04_grpo.ipynb",
    "report": "05_report.ipynb",
}
DEMO_PRESET = "cpu-demo"


class PipelineError(HaikuKitError):
    """The pipeline cannot start or resume (bad stage name, missing artifacts)."""


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


# ---------------------------------------------------------------------------------------------
# Run-folder layout and the artifacts passed between stages


@dataclass(frozen=True)
class Artifact:
    """One artifact a stage writes: a folder under the run, checked by a marker file in it."""

    param: str  # notebook parameter name that receives its path
    rel_dir: str
    marker: str
    stage: str  # the stage that writes it


ARTIFACTS = {
    a.param: a
    for a in (
        Artifact("data_dir", "data", "manifest.json", "data"),
        Artifact("base_result", "eval/base", "result.json", "baseline"),
        Artifact("sft_adapter", "sft/adapter", "adapter_config.json", "sft"),
        Artifact("sft_result", "eval/sft", "result.json", "sft"),
        Artifact("grpo_adapter", "grpo/adapter", "adapter_config.json", "grpo"),
        Artifact("grpo_result", "eval/grpo", "result.json", "grpo"),
        Artifact("report_dir", "report", "table.md", "report"),
    )
}
STAGE_INPUTS = {
    "data": (),
    "baseline": ("data_dir",),
    "sft": ("data_dir",),
    "grpo": ("data_dir", "sft_adapter"),
    "report": ("base_result", "sft_result", "grpo_result"),
}


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact lives inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    def artifact(self, param: str) -> Path:
        return self.root / ARTIFACTS[param].rel_dir

    @property
    def data(self) -> Path:
        return self.artifact("data_dir")

    @property
    def report(self) -> Path:
        return self.artifact("report_dir")

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def eval_dir(self, name: str) -> Path:
        return self.root / "eval" / name


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return stage


def missing_artifacts(stage: str, paths: RunPaths, cfg) -> list[str]:
    """Inputs of `stage` (under this config) absent from the run folder, as readable lines."""
    missing = []
    for param in stage_inputs(check_stage(stage), cfg):
        art = ARTIFACTS[param]
        marker = paths.artifact(param) / art.marker
        if not marker.is_file():
            missing.append(f"{marker} (written by stage '{art.stage}')")
    return missing


# ---------------------------------------------------------------------------------------------
# Notebooks and papermill


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


def _kernel_manager_class() -> type:
    """A kernel manager that always starts this very interpreter.

    The stock "python3" kernelspec can resolve to another Python (a user-level kernelspec, or
    `python` on a PATH without the venv); the notebooks must run where haiku_kit is installed.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    class ThisPythonKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
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
        papermill.execute_notebook(
            str(src),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            kernel_manager_class=_kernel_manager_class(),
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


def run_pipeline(
    preset: str,
    overrides: list[str] | None,
    out_dir: str | Path,
    from_stage: str | None = None,
    log_output: bool = False,
) -> Path:
    """Execute the stage notebooks in order into `out_dir`; returns the run folder.

    Stops at the first failing stage (StageFailed names it and the cell, and the executed
    notebook is kept in RUN/notebooks/). `from_stage` reuses the artifacts of earlier stages.
    Overrides reach the notebooks as papermill parameters, next to the input artifact paths.
    """
    from haiku_kit.config import save_config

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
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.config, extra=_kept_effective(paths) if start else None)
    for i, stage in enumerate(STAGES[start:], start + 1):
        src = notebook_path(stage)
        out = paths.notebooks / src.name
        print(f"[{i}/{len(STAGES)}] {stage}: {src.name} -> {out}", flush=True)
        began = time.perf_counter()
        params = stage_parameters(stage, preset, overrides, paths)
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


# ---------------------------------------------------------------------------------------------
# Config and stage helpers the notebooks call


def has_sft(cfg) -> bool:
    return "sft" in cfg.stages


def grpo_stages(cfg) -> list[str]:
    return [s for s in cfg.stages if s.startswith("grpo")]


def expected_evals(cfg) -> list[str]:
    """The evaluations a run of this config makes: base, then each trained model."""
    return ["base"] + ["sft"] * has_sft(cfg) + ["grpo"] * bool(grpo_stages(cfg))


def _grpo_starts_from_sft(cfg) -> bool:
    return has_sft(cfg) and cfg.grpo.init in ("auto", "sft")


def stage_inputs(stage: str, cfg) -> tuple[str, ...]:
    """The artifacts `stage` reads under this config (a subset of STAGE_INPUTS[stage])."""
    if stage == "grpo" and not _grpo_starts_from_sft(cfg):
        return ("data_dir",)
    if stage == "report":
        return tuple(f"{name}_result" for name in expected_evals(cfg))
    return STAGE_INPUTS[check_stage(stage)]


def stage_outputs(stage: str, cfg) -> list[str]:
    """The artifacts `stage` writes under this config (none for a stage the preset skips)."""
    if (stage == "sft" and not has_sft(cfg)) or (stage == "grpo" and not grpo_stages(cfg)):
        return []
    return [a.param for a in ARTIFACTS.values() if a.stage == check_stage(stage)]


@dataclass
class Run:
    """What a stage notebook works with: the effective config and the run folder's layout."""

    preset: str
    overrides: list[str]
    cfg: Any
    paths: RunPaths
    started: float = field(default_factory=time.perf_counter)

    def path(self, param: str, given: str | Path | None = None) -> Path:
        """An input artifact's path: the one given as a notebook parameter, else the default."""
        return Path(given).resolve() if given else self.paths.artifact(param)


def open_run(preset: str, overrides: list[str], run_dir: str | Path) -> Run:
    """Resolve the config for a stage notebook; writes RUN/config.yaml if it is not there."""
    from haiku_kit.config import save_config
    from haiku_kit.modeling import import_backend
    from haiku_kit.train import backend_for

    paths = RunPaths(Path(run_dir).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(preset, overrides, paths.root)
    import_backend(backend_for(cfg))  # Unsloth first, before any stage imports transformers
    if not paths.config.is_file():  # train adds the trainer's effective settings to it later
        save_config(cfg, paths.config)
    return Run(preset, list(overrides), cfg, paths)


def _require(path: Path, marker: str, what: str) -> Path:
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{what} not found: {path / marker} is missing")
    return path


def build_data(run: Run) -> Path:
    """Stage 01: write the sft/rl/eval splits to RUN/data (from data.source, or a copy of
    data.splits_dir so the run folder holds everything it used)."""
    from haiku_kit.train import build_run_splits

    d, out = run.cfg.data, run.paths.data
    if out.exists():
        shutil.rmtree(out)
    if d.splits_dir:
        src = _require(Path(d.splits_dir).expanduser(), "manifest.json", "data.splits_dir")
        shutil.copytree(src, out)
    else:
        build_run_splits(run.cfg, out)
    return out


def load_data(data_dir: str | Path):
    from haiku_kit.data import load_splits

    return load_splits(_require(Path(data_dir), "manifest.json", "dataset splits"))


def evaluate_model(run: Run, name: str, data_dir: str | Path, adapter: str | Path | None = None):
    """Generate for the first eval.n_prompts eval prompts with the base model (+ adapter), score
    and save to RUN/eval/NAME. A trained model whose stage was skipped (adapter None) -> None."""
    from haiku_kit.evaluate import load_eval_data

    if adapter is None and name != "base":
        print(f"no '{name}' model in this run (stages: {run.cfg.stages}); nothing to evaluate")
        return None
    rows, train_answers = load_eval_data(str(_require(Path(data_dir), "manifest.json", "splits")))
    n = run.cfg.eval.n_prompts
    result = evaluate_rows(run.cfg, name, rows[:n] if n else rows, train_answers, adapter)
    result.meta["preset"] = run.preset
    result.save(run.paths.eval_dir(name))
    return result


def evaluate_rows(cfg, name: str, rows: list[dict], train_answers, adapter=None, **settings):
    """Load the config's model (+ adapter) and score it on rows ({topic, prompt}) with the
    config's eval settings; `settings` (k, max_new_tokens, ...) override those."""
    from haiku_kit.evaluate import SamplingSettings, run_eval
    from haiku_kit.train import load_for

    e = cfg.eval
    if adapter is not None:
        adapter = str(_require(Path(adapter), "adapter_config.json", "LoRA adapter"))
    model, tokenizer = load_for(cfg, adapter, trainable=False)
    args = {
        "k": e.k,
        "seed": e.seed,
        "max_new_tokens": e.max_new_tokens,
        "batch_size": e.batch_size,
    }
    args.update(settings)
    result = run_eval(
        model,
        rows,
        tokenizer=tokenizer,
        train_answers=train_answers,
        sampling=SamplingSettings(temperature=e.temperature, top_p=e.top_p, top_k=e.top_k),
        name=name,
        **args,
    )
    result.meta.update(model=cfg.model.name, adapter=adapter)
    return result


def train_sft(run: Run, data_dir: str | Path) -> Path | None:
    """Stage 03: LoRA SFT on the sft split -> RUN/sft/adapter (None when the preset has none)."""
    from haiku_kit.train import run_sft

    if not has_sft(run.cfg):
        print(f"this preset has no SFT stage (stages: {run.cfg.stages}); skipped")
        return None
    return Path(run_sft(run.cfg, dataset=load_data(data_dir)))


def train_grpo(run: Run, data_dir: str | Path, sft_adapter: str | Path | None) -> Path | None:
    """Stage 04: every GRPO stage of the preset in order -> RUN/grpo/adapter.

    The first starts from `sft_adapter` when the preset has SFT (grpo.init auto/sft), else as
    grpo.init says; each later phase continues from the previous one."""
    from haiku_kit.train import run_grpo_stages

    stages = grpo_stages(run.cfg)
    if not stages:
        print(f"this preset has no GRPO stage (stages: {run.cfg.stages}); skipped")
        return None
    dataset = load_data(data_dir)
    previous = None
    if _grpo_starts_from_sft(run.cfg):
        previous = _require(Path(sft_adapter or ""), "adapter_config.json", "SFT adapter")
    return run_grpo_stages(run.cfg, dataset, previous)


def make_report(run: Run, results: dict[str, str | Path]) -> Path:
    """Stage 05: compare the saved evaluations this preset makes and write RUN/report/."""
    from haiku_kit.evaluate import EvalResult
    from haiku_kit.report import write_report

    loaded = {
        name: EvalResult.load(_require(Path(results[name]), "result.json", f"'{name}' eval"))
        for name in expected_evals(run.cfg)
    }
    from haiku_kit.report import learning_curve

    samples = run.paths.stage_dir("grpo") / "samples.jsonl"
    write_report(loaded, run.paths.report, curve=learning_curve(samples) if samples.is_file() else None)
    return run.paths.report


# ---------------------------------------------------------------------------------------------
# Showing results inline: `*_markdown` builds the text (tests read it), `show_*` displays it
# and returns None, so a show call at the end of a cell prints nothing twice.


def _display(*objs: Any) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python without IPython: print the text parts
        for obj in objs:
            print(getattr(obj, "data", obj))
        return
    display(*objs)


def _show_markdown(text: str) -> None:
    try:
        from IPython.display import Markdown
    except ImportError:
        _display(text)
    else:
        _display(Markdown(text))


def show_images(folder: str | Path) -> None:
    try:
        from IPython.display import Image
    except ImportError:
        return
    for png in sorted(Path(folder).glob("*.png")):
        _display(Image(filename=str(png)))


def data_markdown(data_dir: str | Path, n: int = 3) -> str:
    """Rows kept by each filter, split sizes and a few example rows of the sft split."""
    splits = load_data(data_dir)
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    kept = " → ".join(f"{k} {v}" for k, v in manifest.get("stages", {}).items())
    lines = [f"Rows kept by each filter: {kept}", ""] if kept else []
    lines += ["| split | rows |", "|---|---:|"]
    lines += [f"| {name} | {len(ds)} |" for name, ds in splits.items()]
    lines += ["", "**Examples (sft split)**", ""]
    for row in splits["sft"].select(range(min(n, len(splits["sft"])))):
        lines += [f"*{row['topic']}*", "", *(f"> {ln}  " for ln in row["haiku"].splitlines()), ""]
    return "\n".join(lines)


def result_markdown(result: Any, title: str = "model") -> str:
    """The metrics of one evaluation with their 95% confidence intervals."""
    from haiku_kit.report import compare

    if result is None:
        return f"*{title}: not part of this run*"
    return f"### {title}\n\n" + compare({title: result}).markdown()


def samples_markdown(result: Any, title: str = "model", n: int = 5) -> str:
    """A few of the model's poems with the verifier's verdict."""
    from haiku_kit.report import samples_markdown as report_samples

    return "" if result is None else report_samples({title: result}, n)


def training_markdown(stage_dir: str | Path, last: int = 5) -> str:
    """The last few log lines of an SFT or GRPO run."""
    log = Path(stage_dir) / "log.jsonl"
    rows = log.read_text().splitlines()[-last:] if log.is_file() else []
    return "\n".join(["```", *rows, "```"]) if rows else f"(no training log in {stage_dir})"


def report_markdown(report_dir: str | Path) -> str:
    """The comparison table and the sample poems of RUN/report/."""
    report_dir = Path(report_dir)
    text = (report_dir / "table.md").read_text()
    samples = report_dir / "samples.md"
    return text + ("\n" + samples.read_text() if samples.is_file() else "")


def show_data(data_dir: str | Path, n: int = 3) -> None:
    _show_markdown(data_markdown(data_dir, n))


def show_result(result: Any, title: str = "model") -> None:
    _show_markdown(result_markdown(result, title))


def show_samples(result: Any, title: str = "model", n: int = 5) -> None:
    _show_markdown(samples_markdown(result, title, n))


def show_training(stage_dir: str | Path, last: int = 5) -> None:
    """The training curves and the last few log lines."""
    show_images(stage_dir)
    _show_markdown(training_markdown(stage_dir, last))


def show_report(report_dir: str | Path) -> None:
    """The comparison table, the plots, then the sample poems."""
    report_dir = Path(report_dir)
    _show_markdown((report_dir / "table.md").read_text())
    show_images(report_dir)
    if (report_dir / "samples.md").is_file():
        _show_markdown((report_dir / "samples.md").read_text())


SUMMARY_COLUMNS = (
    ("Haiku", "haiku", ""),
    ("Similarity", "similarity", ""),
    ("Total", "total", ""),
    ("Train overlap", "train_overlap", "%"),
)


def summary_table(results: dict[str, Any]) -> str:
    """The headline metrics (the reference's columns) with 95% CIs, narrow enough for a
    terminal; RUN/report/table.md has every column."""

    def cell(result, key: str, unit: str) -> str:
        scale = 100 if unit else 1
        value, (lo, hi) = result.metrics[key], result.ci[key]
        return f"{value * scale:.3f}{unit} [{lo * scale:.3f}{unit}, {hi * scale:.3f}{unit}]"

    head = ["Model", "n", *(title for title, _, _ in SUMMARY_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, str(len(r.records)), *(cell(r, k, u) for _, k, u in SUMMARY_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """The saved evaluations of a finished run, in pipeline order."""
    from haiku_kit.config import load_config
    from haiku_kit.evaluate import EvalResult

    paths = RunPaths(Path(run_dir))
    cfg = load_config(paths.config)
    return {name: EvalResult.load(paths.eval_dir(name)) for name in expected_evals(cfg)}


def elapsed(run: Run) -> str:
    return f"stage finished in {time.perf_counter() - run.started:.0f} s"


# ---------------------------------------------------------------------------------------------
# Command line


def cli_pipeline(args) -> int:
    try:
        run_dir = run_pipeline(
            args.preset, args.overrides, args.out, from_stage=args.from_stage, log_output=True
        )
    except (StageFailed, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"run folder: {run_dir}")
    return 0


def cli_demo(args) -> int:
    # The demo uses only the embedded model and MiniLM: make any hub access fail fast.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    began = time.perf_counter()
    try:
        run_dir = run_pipeline(DEMO_PRESET, args.overrides, args.out, log_output=True)
    except (StageFailed, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = RunPaths(run_dir)
    print()
    results = load_results(run_dir)
    print(summary_table(results))
    from haiku_kit.report import verdict

    line = verdict(results)
    if line:
        print(line)
    print(f"report: {paths.report / 'report.md'} (full table: {paths.report / 'table.md'})")
    print(f"executed notebooks: {paths.notebooks}")
    print(f"demo finished in {(time.perf_counter() - began) / 60:.1f} min")
    return 0
