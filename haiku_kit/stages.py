"""What the stage notebooks call: open a run, build data, load the model, build the real TRL
trainers, evaluate, report, and show each result inline.

The notebooks stay thin but show the real objects, as Unsloth's notebooks do: notebook 03 reads

    model, tokenizer = stages.load_model(run)
    trainer = stages.sft_trainer(run, model, tokenizer, data_dir)   # a trl.SFTTrainer
    stages.show_args(trainer)
    trainer.train()                                                  # its own cell
    sft_adapter = stages.save_sft(run, trainer)

so a reader can change `trainer.args` before training; `haiku-kit pipeline` runs the very same
cells with papermill.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haiku_kit import distill, grpo, report, sft
from haiku_kit.backends import backend_for, import_backend
from haiku_kit.config import load_config, resolve_config, save_config
from haiku_kit.curve import learning_curve
from haiku_kit.data import build_run_splits, load_eval_data, load_splits
from haiku_kit.env_info import write_env_json
from haiku_kit.errors import HaikuKitError
from haiku_kit.evaluate import EvalResult, run_eval
from haiku_kit.generate import SamplingSettings
from haiku_kit.modeling import load_from_config
from haiku_kit.notebook_view import (  # noqa: F401 - the notebooks call them as stages.X
    _show_markdown,
    data_markdown,
    report_markdown,
    result_markdown,
    samples_markdown,
    show_data,
    show_images,
    show_report,
    show_result,
    show_samples,
    show_training,
    show_tried,
    training_markdown,
)
from haiku_kit.runs import (
    RunPaths,
    constrained_name,
    expected_evals,
    grpo_stages,
    grpo_starts_from_sft,
    has_sft,
    phase_of,
)
from haiku_kit.settings import grpo_phase_settings
from haiku_kit.showcase import save_and_share  # noqa: F401 - the notebooks call stages.save_and_share
from haiku_kit.trainer_utils import enum_value, train_stage

# The trainer arguments show_args lists (those a reader most often changes or checks).
KEY_ARGS = {
    "sft": ("max_steps", "num_train_epochs", "learning_rate", "lr_scheduler_type",
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
            "assistant_only_loss", "completion_only_loss", "optim", "seed", "output_dir"),
    "grpo": ("max_steps", "learning_rate", "lr_scheduler_type", "num_generations",
             "per_device_train_batch_size", "generation_batch_size", "max_completion_length",
             "temperature", "top_p", "top_k", "loss_type", "beta", "epsilon", "reward_weights",
             "optim", "seed", "output_dir"),
}


@dataclass
class Run:
    """What a stage notebook works with: the effective config and the run folder's layout."""

    preset: str
    overrides: list[str]
    cfg: Any
    paths: RunPaths
    started: float = field(default_factory=time.perf_counter)
    resume: Any = None  # training stages: None = the newest checkpoint if any (resume.py)
    fresh: Any = False  # True: start over, old state moved aside; "delete": deleted

    def path(self, param: str, given: str | Path | None = None) -> Path:
        """An input artifact's path: the one given as a notebook parameter, else the default."""
        return Path(given).resolve() if given else self.paths.artifact(param)


def open_run(
    preset: str, overrides: list[str], run_dir: str | Path, resume: Any = None, fresh: Any = False
) -> Run:
    """Resolve the config for a stage notebook; writes RUN/config.yaml if it is not there.
    `resume`/`fresh`: where training stages start (default: their newest checkpoint, if any)."""
    paths = RunPaths(Path(run_dir).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(preset, overrides, paths.root)
    import_backend(backend_for(cfg))  # Unsloth first, before any stage imports transformers
    write_env_json(paths.root)  # RUN/env.json: the versions and GPU this stage runs with
    if not paths.config.is_file():  # training adds the trainer's effective settings to it later
        save_config(cfg, paths.config)
    return Run(preset, list(overrides), cfg, paths, resume=resume or None, fresh=fresh or False)


def _require(path: Path, marker: str, what: str) -> Path:
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{what} not found: {path / marker} is missing")
    return path


# --------------------------------------------------------------------------- data


def build_data(run: Run) -> Path:
    """Stage 01: write the sft/rl/eval splits to RUN/data (from data.source, or a copy of
    data.splits_dir so the run folder holds everything it used)."""
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
    return load_splits(_require(Path(data_dir), "manifest.json", "dataset splits"))


# --------------------------------------------------------------------------- training


def load_model(run: Run, adapter: str | Path | None = None, trainable: bool = True):
    """(model, tokenizer) of the run's config (modeling.load_from_config): with a fresh trainable
    LoRA, or the saved `adapter` (trainable too unless trainable=False)."""
    return load_from_config(run.cfg, adapter, trainable)


def _needs(run: Run, stage: str, present: bool) -> None:
    if not present:
        raise HaikuKitError(f"preset {run.preset!r} has no {stage} stage (stages: {run.cfg.stages}); "
                            f"there is nothing to train here (`haiku-kit pipeline` skips this notebook)")


def sft_trainer(run: Run, model, tokenizer, data_dir: str | Path):
    """Stage 03: the trl.SFTTrainer on the sft split, ready for trainer.train()."""
    _needs(run, "SFT", has_sft(run.cfg))
    return sft.sft_trainer(run.cfg, model, tokenizer, load_data(data_dir), run.resume, run.fresh)


def save_sft(run: Run, trainer) -> Path:
    """After trainer.train(): RUN/sft/adapter, the log CSV and plot, the effective settings."""
    return sft.save_sft(run.cfg, trainer)


def distill_trainer(run: Run, model, tokenizer, data_dir: str | Path, round_: int = 1):
    """After SFT: TRL's SFTTrainer continuing the model on its own poems, written through the
    syllable-constrained decoder and verified (distill.py); None when the preset does not
    distil or has fewer rounds (distill.topics, distill.rounds)."""
    return distill.distill_trainer(run.cfg, model, tokenizer, load_data(data_dir), run.resume,
                                   run.fresh, round_)


def save_distill(run: Run, trainer) -> Path:
    """After trainer.train(): the distilled adapter in RUN/sft/adapter (the plain SFT one is
    kept in RUN/sft/distill/sft-adapter)."""
    return distill.save_distill(run.cfg, trainer)


def grpo_start(run: Run, sft_adapter: str | Path | None) -> Path | None:
    """Where the first GRPO stage starts: `sft_adapter` when the preset trains SFT first and
    grpo.init is auto/sft (runs.grpo_starts_from_sft), else as grpo.init says (None: base)."""
    stages = grpo_stages(run.cfg)
    _needs(run, "GRPO", bool(stages))
    previous = None
    if grpo_starts_from_sft(run.cfg.grpo.init, has_sft(run.cfg)):
        previous = _require(Path(sft_adapter or ""), "adapter_config.json", "SFT adapter")
    settings = grpo_phase_settings(run.cfg, phase_of(stages[0]))
    return grpo.start_adapter(run.cfg, settings, None, previous)


def grpo_trainer(run: Run, model, tokenizer, data_dir: str | Path, start: Path | None):
    """Stage 04: the trl.GRPOTrainer of the preset's first GRPO stage (the model loaded from
    `start`), ready for trainer.train()."""
    stages = grpo_stages(run.cfg)
    _needs(run, "GRPO", bool(stages))
    return grpo.grpo_trainer(run.cfg, model, tokenizer, load_data(data_dir), phase_of(stages[0]),
                             start, run.resume, run.fresh)


def save_grpo(run: Run, trainer, data_dir: str | Path) -> Path:
    """After trainer.train(): save the first GRPO stage, then train any later GRPO stages of
    the preset (e.g. ref-full's sparse -> dense), each from the previous adapter. Returns
    RUN/grpo/adapter, the last stage's."""
    adapter = grpo.save_grpo(run.cfg, trainer)
    later = grpo_stages(run.cfg)[1:]
    if later:
        print(f"training the preset's later GRPO stages {later} from {adapter}")
        resume = run.resume if run.resume in (None, "latest") else None  # a path: stage 1 only
        adapter = grpo.run_grpo_stages(run.cfg, load_data(data_dir), adapter, later, resume,
                                       run.fresh)
    return adapter


def show_args(trainer) -> None:
    """The trainer's class and key arguments (all of them: `trainer.args`)."""
    kind = "grpo" if hasattr(trainer, "reward_funcs") else "sft"
    rows = [f"| `{name}` | `{enum_value(getattr(trainer.args, name, None))}` |"
            for name in KEY_ARGS[kind]]
    _show_markdown(f"**{type(trainer).__module__}.{type(trainer).__name__}**, {len(trainer.train_dataset)} "
                   "training rows\n\n| argument | value |\n|---|---|\n" + "\n".join(rows))


def train_sft(run: Run, data_dir: str | Path) -> Path | None:
    """Load, build, train and save SFT in one call (None when the preset has no SFT)."""
    if not has_sft(run.cfg):
        print(f"this preset has no SFT stage (stages: {run.cfg.stages}); skipped")
        return None
    model, tokenizer = load_model(run)
    trainer = sft_trainer(run, model, tokenizer, data_dir)
    train_stage(trainer)
    return distill.distil_after_sft(run.cfg, model, tokenizer, save_sft(run, trainer),
                                    load_data(data_dir), run.resume, run.fresh)


def train_grpo(run: Run, data_dir: str | Path, sft_adapter: str | Path | None) -> Path | None:
    """Every GRPO stage of the preset in one call (None when it has none)."""
    if not grpo_stages(run.cfg):
        print(f"this preset has no GRPO stage (stages: {run.cfg.stages}); skipped")
        return None
    start = grpo_start(run, sft_adapter)
    model, tokenizer = load_model(run, adapter=start)
    trainer = grpo_trainer(run, model, tokenizer, data_dir, start)
    train_stage(trainer)
    return save_grpo(run, trainer, data_dir)


# --------------------------------------------------------------------------- evaluation and report


def evaluate_model(run: Run, name: str, data_dir: str | Path, adapter: str | Path | None = None,
                   constrained: bool = False):
    """Generate for the first eval.n_prompts eval prompts with the base model (+ adapter), score
    and save to RUN/eval/NAME. A trained model whose stage was skipped (adapter None) -> None.

    constrained=True decodes with the syllable-constrained decoder into the row
    "NAME + constrained", beside the free row; it runs only where the preset's
    eval.constrained is on (else None)."""
    if adapter is None and name != "base":
        print(f"no '{name}' model in this run (stages: {run.cfg.stages}); nothing to evaluate")
        return None
    if constrained:
        if not run.cfg.eval.constrained:
            print("eval.constrained is off in this preset: no constrained row "
                  "(--set eval.constrained=true adds one)")
            return None
        name = constrained_name(name)
    rows, train_answers = load_eval_data(str(_require(Path(data_dir), "manifest.json", "splits")))
    train_answers += distill.distilled_answers(run.cfg)
    n = run.cfg.eval.n_prompts
    extra = {"constrained": True, "candidates": run.cfg.eval.candidates} if constrained else {}
    result = evaluate_rows(run.cfg, name, rows[:n] if n else rows, train_answers, adapter, **extra)
    result.meta["preset"] = run.preset
    result.save(run.paths.eval_dir(name))
    return result


def evaluate_rows(cfg, name: str, rows: list[dict], train_answers, adapter=None, **settings):
    """Load the config's model (+ adapter) and score it on rows ({topic, prompt}) with the
    config's eval settings; `settings` (k, max_new_tokens, ...) override those."""
    e = cfg.eval
    if adapter is not None:
        adapter = str(_require(Path(adapter), "adapter_config.json", "LoRA adapter"))
    model, tokenizer = load_from_config(cfg, adapter, trainable=False)
    args = {"k": e.k, "seed": e.seed, "max_new_tokens": e.max_new_tokens, "batch_size": e.batch_size}
    args.update(settings)
    result = run_eval(model, rows, tokenizer=tokenizer, train_answers=train_answers,
                      sampling=SamplingSettings.of(e), name=name, **args)
    result.meta.update(model=cfg.model.name, adapter=adapter)
    return result


def make_report(run: Run, results: dict[str, str | Path]) -> Path:
    """Stage 05: compare the saved evaluations this preset makes and write RUN/report/;
    `results` names their folders (a name left out: its place in the run folder)."""
    loaded = {
        name: EvalResult.load(_require(Path(results.get(name) or run.paths.eval_dir(name)),
                                       "result.json", f"'{name}' eval"))
        for name in expected_evals(run.cfg)
    }
    samples = run.paths.stage_dir("grpo") / "samples.jsonl"
    curve = learning_curve(samples) if samples.is_file() else None
    report.write_report(loaded, run.paths.report, curve=curve)
    return run.paths.report


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """The saved evaluations of a finished run, in pipeline order."""
    paths = RunPaths(Path(run_dir))
    cfg = load_config(paths.config)
    return {name: EvalResult.load(paths.eval_dir(name)) for name in expected_evals(cfg)}


def elapsed(run: Run) -> str:
    return f"stage finished in {time.perf_counter() - run.started:.0f} s"
