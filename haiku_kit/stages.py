"""What the stage notebooks call: open a run, build data, load the model, build the real TRL
trainers, evaluate, report, and show each result inline.

The notebooks stay thin but build the real TRL objects in their own cells, as Unsloth's
notebooks do: notebook 03 reads

    model, tokenizer = stages.load_model(run)
    kit = stages.sft_setup(run, model, tokenizer, data_dir)   # args dict, dataset, callbacks
    args = SFTConfig(**kit.args)
    trainer = SFTTrainer(model=model, args=args, train_dataset=kit.train_dataset,
                         processing_class=tokenizer, callbacks=kit.callbacks)
    kit.attach(trainer)                                          # the kit's bookkeeping
    trainer.train(...)                                           # its own cell
    sft_adapter = stages.save_sft(run, trainer)

and notebook 04 the same with GRPOConfig / GRPOTrainer and the reward functions
(`show_rewards`, `show_reward_scores`). `sft_trainer` / `grpo_trainer` make the very same calls
in one (SFTSetup.trainer / GRPOSetup.trainer), as the CLI does; `haiku-kit pipeline` runs the
notebooks' cells with papermill.

After training: try the model on a few topics, then save and share it.

`try_it` writes one haiku per topic with the model in hand, by free sampling and with the
syllable-constrained decoder side by side, each with the verifier's per-line counts: what a user
wants to see before anything else. `save_and_share` writes the model card (always), the merged
weights and/or a GGUF when asked (export.export_run, re-scored beside the adapter), and pushes
the result when given a Hub repo.

Under a launcher (`accelerate launch` / `torchrun` running a notebook's .py as a script, one
copy per process) every process runs every cell: the processes train together, and the helpers
here follow ranks.py's rule: the main process writes the run folder (open_run's files, the data
splits, evaluations, the report, the model card and exports), evaluates and shows results; the
others wait for it and get its return value. `haiku-kit pipeline` itself runs the notebooks in
one kernel and refuses a launch (pipeline.py); `launch_command` prints the per-stage command.

Showing a stage's results inline in a notebook: `*_markdown` builds the text (tests read
it), `show_*` displays it and returns None, so a show call at the end of a cell prints nothing
twice. Outside IPython the text is printed.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haiku_kit import ranks
from haiku_kit.config import (
    generation_batch_problem,
    grpo_variant_settings,
    launch_problem,
    list_presets,
    load_config,
    resolve_config,
    save_config,
)
from haiku_kit.data.splits import build_run_splits, load_eval_data, load_splits
from haiku_kit.env import AUTO_PRESET, choose_preset, write_env_json
from haiku_kit.errors import ConfigError, HaikuKitError
from haiku_kit.evaluate import report
from haiku_kit.evaluate.protocol import eval_plan, reference_markdown
from haiku_kit.evaluate.report import learning_curve
from haiku_kit.evaluate.scoring import EvalResult, run_eval
from haiku_kit.generate.write import SamplingSettings, WrittenHaiku, write_haiku
from haiku_kit.model.backends import backend_for, import_backend, resolve_device
from haiku_kit.model.load import load_from_config
from haiku_kit.runs import (
    ARTIFACTS,
    CONSTRAINED,
    NOTEBOOKS,
    RunPaths,
    constrained_name,
    expected_evals,
    grpo_phases,
    grpo_starts_from_sft,
    has_sft,
    schedule,
    variant_of,
)
from haiku_kit.share.export import Exported, ExportError, export_run, push
from haiku_kit.share.model_card import card_facts, render_card
from haiku_kit.train import distill, grpo, sft
from haiku_kit.train.callbacks import gpu_memory
from haiku_kit.train.common import enum_value, train_phase

TRY_TOPICS = ("first snow in the city", "a cat asleep in the sun", "the last train home")


@dataclass
class Tried:
    """One topic written both ways."""

    topic: str
    free: WrittenHaiku
    constrained: WrittenHaiku | None


def _cell(written: WrittenHaiku | None) -> str:
    if written is None:
        return "-"
    poem = written.poem.strip().replace("\n", " / ") or "(empty)"
    counts = "-".join(str(min(c)) if c else "0" for c in written.check.counts) or "0"
    return _escape(f"{poem} ({counts}: {'valid' if written.is_haiku else 'not valid'})")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def tried_markdown(tried: list[Tried]) -> str:
    """Topic | free sampling | constrained, each poem with its syllables per line."""
    lines = ["| topic | free sampling | constrained |", "|---|---|---|"]
    lines += [f"| {_escape(t.topic)} | {_cell(t.free)} | {_cell(t.constrained)} |" for t in tried]
    return "\n".join(lines) + "\n"


def try_it(model: Any, tokenizer: Any, topics=TRY_TOPICS, constrained: bool = True,
           sampling: SamplingSettings | None = None, seed: int = 0,
           max_new_tokens: int = 64) -> list[Tried]:
    """One haiku per topic from `model` (one sample, no best-of-k), free and, with
    constrained=True, through the syllable-constrained decoder too."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    common = {"k": 1, "seed": seed, "sampling": sampling, "max_new_tokens": max_new_tokens}
    return [Tried(topic, write_haiku(topic, model, tokenizer, **common),
                  write_haiku(topic, model, tokenizer, constrained=True, **common)
                  if constrained else None)
            for topic in topics]


def save_and_share(run_dir: str | Path, phase: str = "grpo", merged: bool = False,
                   gguf: str | None = None, push_to: str | None = None,
                   rescore: int = 32) -> Path:
    """Model card for `phase`'s adapter; merged weights / GGUF when asked (re-scored beside the
    adapter, the table printed); push to `push_to` when given. Returns the folder written (or
    pushed): the adapter folder, or RUN/export/STAGE. Under a launch: the main process's work,
    the others wait for its folder."""
    return ranks.on_main(_save_and_share, run_dir, phase, merged, gguf, push_to, rescore)


def _save_and_share(run_dir, phase, merged, gguf, push_to, rescore) -> Path:
    paths = RunPaths(Path(run_dir))
    if merged or gguf:
        result: Exported = export_run(paths.root, phase=phase, merged=merged, gguf=gguf,
                                      repo_id=push_to, rescore=rescore)
        for kind, path in result.files.items():
            print(f"{kind}: {path}")
        if result.scores:
            print(f"valid haiku on the run's first {rescore} eval prompts (same seed):\n"
                  + result.table())
        folder = result.folder
    else:
        folder = paths.phase_dir(phase) / "adapter"
        if not (folder / "adapter_config.json").is_file():
            raise ExportError(f"{folder}: no adapter to share (train the {phase} phase first)")
        name = push_to or f"haiku-kit-{paths.root.name}-{phase}"
        card = render_card(card_facts(paths.root, phase, "LoRA adapter", name))
        (folder / "README.md").write_text(card, encoding="utf-8")
        print(f"model card: {folder / 'README.md'}")
    if push_to:
        print(f"pushed: {push(folder, push_to)}")
    return folder


# -------------------- notebook view --------------------

def _display(*objs: Any) -> None:
    if not ranks.is_main():  # under a launch every process runs the cell: one shows it
        return
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
    splits = load_splits(str(data_dir))
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    kept = " → ".join(f"{k} {v}" for k, v in manifest.get("phases", {}).items())
    lines = [f"Rows kept by each filter: {kept}", ""] if kept else []
    lines += ["| split | rows |", "|---|---:|"]
    lines += [f"| {name} | {len(ds)} |" for name, ds in splits.items()]
    lines += ["", "**Examples (sft split)**", ""]
    for row in splits["sft"].select(range(min(n, len(splits["sft"])))):
        lines += [f"*{row['topic']}*", "", *(f"> {ln}  " for ln in row["haiku"].splitlines()), ""]
    return "\n".join(lines)


def result_markdown(result: Any, title: str = "model") -> str:
    """The metrics of one evaluation with their 95% confidence intervals."""
    if result is None:
        return f"*{title}: not part of this run*"
    return (f"### {title}\n\n" + report.compare({title: result}).markdown()
            + reference_markdown({title: result}))  # under eval.protocol=reference only


def samples_markdown(result: Any, title: str = "model", n: int = 5) -> str:
    """A few of the model's poems with the verifier's verdict."""
    return "" if result is None else report.samples_markdown({title: result}, n)


def training_markdown(phase_dir: str | Path, last: int = 5) -> str:
    """The last few log lines of an SFT or GRPO run."""
    log = Path(phase_dir) / "log.jsonl"
    rows = log.read_text().splitlines()[-last:] if log.is_file() else []
    return "\n".join(["```", *rows, "```"]) if rows else f"(no training log in {phase_dir})"


def report_markdown(report_dir: str | Path) -> str:
    """The comparison table and the sample poems of RUN/report/."""
    report_dir = Path(report_dir)
    text = (report_dir / "table.md").read_text()
    reference = report_dir / "reference.md"  # written under eval.protocol=reference
    if reference.is_file():
        text += "\n" + reference.read_text()
    samples = report_dir / "samples.md"
    return text + ("\n" + samples.read_text() if samples.is_file() else "")


def show_data(data_dir: str | Path, n: int = 3) -> None:
    _show_markdown(data_markdown(data_dir, n))


def show_result(result: Any, title: str = "model") -> None:
    _show_markdown(result_markdown(result, title))


def show_samples(result: Any, title: str = "model", n: int = 5) -> None:
    _show_markdown(samples_markdown(result, title, n))


def show_tried(model, tokenizer, topics=TRY_TOPICS, constrained: bool = True):
    """Write one haiku per topic with `model`, free and constrained, and show them as a table."""
    tried = try_it(model, tokenizer, topics, constrained=constrained)
    _show_markdown(tried_markdown(tried))
    return tried


def start_app(model, tokenizer, name: str, web_app: bool | str = "auto",
              max_new_tokens: int | None = None) -> str | None:
    """Serve the web page (haiku_kit.app) on the model in memory, no second load; returns its
    URL, or None when it did not start. web_app: "auto" starts it on Colab only (with Gradio's
    public link: Colab's browser cannot reach the VM's port), True anywhere, False never."""
    import sys

    from haiku_kit.errors import missing_extra

    if not ranks.is_main():  # under a launch: one page, the main process's
        return None
    if web_app == "auto":
        web_app = "google.colab" in sys.modules
    if not web_app:
        print("web_app is off: set web_app = True (parameters) to try the model in a web page")
        return None
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        print(missing_extra(err) or f"the web page needs gradio: {err}")
        return None
    from haiku_kit.app import MAX_NEW_TOKENS, launch

    # share=None: Gradio's own choice, a public link on Colab and this machine only elsewhere.
    _, _, url = launch(model, tokenizer, name, share=None, block=False,
                       max_new_tokens=max_new_tokens or MAX_NEW_TOKENS)
    return url


def show_training(phase_dir: str | Path, last: int = 5) -> None:
    """The training curves and the last few log lines."""
    show_images(phase_dir)
    _show_markdown(training_markdown(phase_dir, last))


def show_report(report_dir: str | Path) -> None:
    """The comparison table, the plots, then the sample poems."""
    report_dir = Path(report_dir)
    _show_markdown((report_dir / "table.md").read_text())
    show_images(report_dir)
    if (report_dir / "samples.md").is_file():
        _show_markdown((report_dir / "samples.md").read_text())


# -------------------- stages --------------------

@dataclass
class Run:
    """What a stage notebook works with: the effective config and the run folder's layout."""

    preset: str
    overrides: list[str]
    cfg: Any
    paths: RunPaths
    started: float = field(default_factory=time.perf_counter)
    resume: Any = None  # training phases: None = the newest checkpoint if any (resume.py)
    fresh: Any = False  # True: start over, old state moved aside; "delete": deleted

    def path(self, param: str, given: str | Path | None = None) -> Path:
        """An input artifact's path: the one given as a notebook parameter, else the run's own.
        So that each stage notebook runs alone on a fresh machine, the run's own splits are
        built here when they are missing (01_data's cell, about 20 s); any other missing
        artifact is named with the notebook that writes it."""
        if given:
            return Path(given).resolve()
        # Under a launch the main process looks and builds: a process that looked on its own
        # could find the splits the main one has just written, skip the build and so miss the
        # main process's next wait (every process must reach each ranks.on_main call).
        return ranks.on_main(self._own_artifact, param)

    def _own_artifact(self, param: str) -> Path:
        path = self.paths.artifact(param)
        artifact = ARTIFACTS[param]
        if not (path / artifact.marker).is_file():
            if param == "data_dir":
                print(f"{path}: no splits yet; building them as 01_data does")
                return _build_data(self)  # not build_data: this is the main process's call already
            print(f"{path / artifact.marker} is missing: run notebook "
                  f"{NOTEBOOKS[artifact.stage]} with run_dir={str(self.paths.root)!r} "
                  f"first, or set the `{param}` parameter")
        return path


# Colab's Google Drive, mounted: a run folder here outlives a disconnected runtime
DRIVE_MOUNT = "/content/drive"
DRIVE_RUNS = Path(DRIVE_MOUNT) / "MyDrive" / "haiku-kit"


def on_drive(run_dir: str | Path, drive: bool = False) -> Path:
    """The run folder a notebook writes: `run_dir` as given, or with drive=True on Colab, its name
    under Google Drive's MyDrive/haiku-kit/ (Drive is mounted here; Colab asks for consent once),
    so that a disconnect loses no checkpoint and a new runtime resumes from Drive. Off Colab,
    drive=True says so in one line and keeps `run_dir`."""
    run_dir = Path(run_dir)
    if not drive:
        return run_dir
    try:
        from google.colab import drive as colab_drive
    except ImportError:
        print(f"drive = True keeps the run folder on Google Drive, on Colab only; here it stays "
              f"{run_dir}")
        return run_dir
    colab_drive.mount(DRIVE_MOUNT)
    target = DRIVE_RUNS / run_dir.name
    print(f"run folder on Google Drive: {target}")
    return target


def open_run(
    preset: str, overrides: list[str], run_dir: str | Path, resume: Any = None, fresh: Any = False
) -> Run:
    """Resolve the config for a stage notebook; writes RUN/config.yaml if it is not there.
    `resume`/`fresh`: where training phases start (default: their newest checkpoint, if any).
    preset="auto" picks one for this machine (env.choose_preset) and says which and why; a run
    folder that already has a config keeps the preset it was started with.

    Under a launcher (the notebook's .py run by `accelerate launch` / `torchrun`) this starts
    the process group the trainers use, and the main process alone writes the run folder (and
    picks the auto preset: the others take its choice, not a config.yaml it may be writing)."""
    paths = RunPaths(Path(run_dir).resolve())
    if preset == AUTO_PRESET:
        preset = ranks.on_main(_auto_preset, paths)
    cfg = resolve_config(preset, overrides, paths.root)
    if ranks.launched():  # the group the trainers use, as `haiku-kit train` starts it (cli._train)
        ranks.start(cpu=resolve_device(cfg) == "cpu")
    import_backend(backend_for(cfg))  # Unsloth first, before any stage imports transformers
    ranks.main_only(_start_run_folder, paths, cfg)
    return Run(preset, list(overrides), cfg, paths, resume=resume or None, fresh=fresh or False)


def _start_run_folder(paths: RunPaths, cfg) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_env_json(paths.root)  # RUN/env.json: the versions and GPU this stage runs with
    if not paths.config.is_file():  # training adds the trainer's effective settings to it later
        save_config(cfg, paths.config)


def launch_command(run: Run, stage: str, processes: int | None = None, config: str = "ddp") -> str:
    """The shell command that trains `stage` ("sft" or "grpo") of this run on `processes`
    processes (one per GPU) with the shipped accelerate `config` (ddp, deepspeed-zero2,
    deepspeed-zero3, fsdp, multi-node-ddp: haiku_kit/resources/accelerate/): the run's preset,
    overrides, resume/fresh and folder, through `haiku-kit train` (docs/scale-out.md). The
    notebooks only print it: a kernel is one process, and the launcher starts its own.

    Unsloth trains in one process, so a preset on it gets `model.backend=hf
    model.fast_inference=false` added; a GRPO batch that does not divide on that many processes
    (TRL's rule, config.generation_batch_problem) is said in a `#` line above the command.
    processes None: one per GPU this machine shows, at least 2."""
    import shlex

    if processes is None:
        import torch

        processes = max(2, torch.cuda.device_count())

    if stage not in ("sft", "grpo"):
        raise ConfigError(f"stage={stage!r}: launch_command trains 'sft' or 'grpo'")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes={processes!r}: must be a whole number of processes, 1 or more")
    configs = Path(__file__).parent / "resources" / "accelerate"
    shipped = sorted(p.stem for p in configs.glob("*.yaml"))
    if config not in shipped:
        raise ConfigError(f"config={config!r}: not a shipped accelerate config (one of {', '.join(shipped)})")
    overrides = list(run.overrides)
    if launch_problem(run.cfg, processes):  # the one override the error itself asks for
        overrides += ["model.backend=hf", "model.fast_inference=false"]
    cmd = ["accelerate", "launch", "--config_file", str(configs / f"{config}.yaml"),
           "--num_processes", str(processes), "-m", "haiku_kit.cli", "train", stage,
           "--preset", run.preset]
    if overrides:
        cmd += ["--set", *overrides]
    if run.resume:
        cmd += ["--resume", str(run.resume)]
    if run.fresh:
        cmd += ["--fresh"] + (["delete"] if run.fresh == "delete" else [])
    cmd += ["--out", str(run.paths.root)]
    problem = generation_batch_problem("grpo", run.cfg.grpo, processes) if stage == "grpo" else None
    note = f"# on {processes} processes: {problem}\n" if problem else ""
    return note + shlex.join(cmd)


def _auto_preset(paths: RunPaths) -> str:
    if paths.config.is_file():  # a later stage of a run: the preset its first stage chose
        preset = load_config(paths.config).name
        if preset not in list_presets():
            raise ConfigError(f"preset='auto': {paths.config} was started with the preset file "
                              f"{preset!r}; set preset to that file's path")
        print(f"preset: {preset}, as this run folder was started with ({paths.config})")
        return preset
    preset, why = choose_preset()
    print(f"preset: {preset} ({why}); set preset = \"NAME\" to choose another")
    return preset


def _require(path: Path, marker: str, what: str) -> Path:
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{what} not found: {path / marker} is missing")
    return path


# --------------------------------------------------------------------------- data


def build_data(run: Run) -> Path:
    """Stage 01: write the sft/rl/eval splits to RUN/data (from data.source, or a copy of
    data.splits_dir so the run folder holds everything it used). Under a launch the main process
    builds them, the others wait and read the same folder."""
    return ranks.on_main(_build_data, run)


def _build_data(run: Run) -> Path:
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


def load_model(run: Run, adapter: str | Path | None = None, trainable: bool = True,
               rollouts: bool = False):
    """(model, tokenizer) of the run's config (load_from_config): with a fresh trainable
    LoRA, or the saved `adapter` (trainable too unless trainable=False). rollouts=True for the
    model GRPO samples from: the one load that starts vLLM where model.fast_inference is on."""
    return load_from_config(run.cfg, adapter, trainable, rollouts=rollouts)


def free_memory() -> dict:
    """After `model = trainer = None` in a notebook: collect them and hand their GPU memory back to
    the next stage of the same process (quickstart, or 03 then 04 in one kernel). Returns the
    peak GPU memory so far in GiB (torch.cuda.max_memory_allocated), {} on a CPU; each training
    phase also writes its peak to RUN/<phase>/peak_memory.json."""
    import gc

    gc.collect()
    memory = gpu_memory()
    if memory:
        import torch

        torch.cuda.empty_cache()
        memory["reserved_gib"] = round(torch.cuda.memory_reserved() / 2**30, 2)
    return memory


def _needs(run: Run, kind: str, present: bool) -> None:
    if not present:
        raise HaikuKitError(f"preset {run.preset!r} trains no {kind} phase (phases: {run.cfg.phases}); "
                            f"there is nothing to train here (`haiku-kit pipeline` skips this notebook)")


def sft_setup(run: Run, model, tokenizer, data_dir: str | Path) -> sft.SFTSetup:
    """Stage 03: what trl.SFTTrainer is built from (sft.SFTSetup: SFTConfig's keyword arguments
    as `args`, `train_dataset`, `callbacks`), for the cells that build it; then
    `kit.attach(trainer)`."""
    _needs(run, "SFT", has_sft(run.cfg))
    return sft.sft_setup(run.cfg, model, tokenizer, load_data(data_dir), run.resume, run.fresh)


def sft_trainer(run: Run, model, tokenizer, data_dir: str | Path):
    """Stage 03 in one call: the trl.SFTTrainer the notebook's cells build, ready for trainer.train()."""
    return sft_setup(run, model, tokenizer, data_dir).trainer(model, tokenizer)


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
    """Where the first GRPO phase starts: `sft_adapter` when the preset trains SFT first and
    grpo.init is auto/sft (runs.grpo_starts_from_sft), else as grpo.init says (None: base)."""
    phases = grpo_phases(run.cfg)
    _needs(run, "GRPO", bool(phases))
    previous = None
    if grpo_starts_from_sft(run.cfg.grpo.init, has_sft(run.cfg)):
        previous = _require(Path(sft_adapter or ""), "adapter_config.json", "SFT adapter")
    settings = grpo_variant_settings(run.cfg, variant_of(phases[0]))
    return grpo.start_adapter(run.cfg, settings, None, previous)


def grpo_setup(run: Run, model, tokenizer, data_dir: str | Path, start: Path | None) -> grpo.GRPOSetup:
    """Stage 04: what the trl.GRPOTrainer of the preset's first GRPO phase is built from
    (grpo.GRPOSetup: GRPOConfig's keyword arguments as `args`, `reward_funcs`, `train_dataset`,
    `callbacks`), the model loaded from `start`; then `kit.attach(trainer)`."""
    phases = grpo_phases(run.cfg)
    _needs(run, "GRPO", bool(phases))
    return grpo.grpo_setup(run.cfg, model, tokenizer, load_data(data_dir), variant_of(phases[0]),
                           start, run.resume, run.fresh)


def grpo_trainer(run: Run, model, tokenizer, data_dir: str | Path, start: Path | None):
    """Stage 04 in one call: the trl.GRPOTrainer the notebook's cells build, ready for trainer.train()."""
    return grpo_setup(run, model, tokenizer, data_dir, start).trainer(model, tokenizer)


def rewards_markdown(spec) -> str:
    """The reward functions of a RewardSpec: name, weight, what each pays (its docstring's first
    paragraph); TRL sums weight x reward per completion."""
    from haiku_kit.train.rewards import get_reward

    lines = ["| reward | weight | what it pays |", "|---|---:|---|"]
    for name, weight in zip(spec.names, spec.weights):
        doc = " ".join((get_reward(name).__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"| `{name}` | {weight:g} | {_escape(doc)} |")
    return "\n".join(lines) + "\n"


def show_rewards(kit) -> None:
    """The reward functions GRPO trains with (kit: a grpo.GRPOSetup, or a RewardSpec)."""
    _show_markdown(rewards_markdown(getattr(kit, "spec", kit)))


@contextmanager
def _outside_training():
    """Run reward functions before training without changing it: the random states are restored
    and a sentence encoder loaded meanwhile is dropped again, so training loads it (and draws
    the random numbers loading it draws) where it always did: the same run, to the digit."""
    import random

    import numpy as np
    import torch

    from haiku_kit.verify import similarity

    scorers = dict(similarity._SCORERS)
    states = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        similarity._SCORERS.clear()
        similarity._SCORERS.update(scorers)


def reward_scores(spec, topic: str, completions: dict[str, str]) -> dict[str, dict[str, float]]:
    """Every reward of `spec` (unwrapped: nothing reaches the training logs) on each named
    completion for `topic`, with the weighted total GRPO compares completions by."""
    from haiku_kit.verify.text import build_prompt

    texts = list(completions.values())
    columns = {"prompts": [build_prompt(topic)] * len(texts), "completions": texts,
               "topic": [topic] * len(texts)}
    with _outside_training():
        scores = {name: f(**columns) for name, f in zip(spec.names, spec.reward_funcs())}
    out = {}
    for i, label in enumerate(completions):
        row = {name: scores[name][i] for name in spec.names}
        row["total"] = sum(w * row[n] for n, w in zip(spec.names, spec.weights))
        out[label] = row
    return out


def reward_scores_markdown(spec, topic: str, completions: dict[str, str]) -> str:
    """reward_scores as a table: a row per completion, a column per reward, the weighted total."""
    scores = reward_scores(spec, topic, completions)
    lines = [f"Topic: *{_escape(topic)}*", "",
             "| completion | " + " | ".join(f"`{n}`" for n in spec.names) + " | weighted total |",
             "|---|" + "---:|" * (len(spec.names) + 1)]
    lines += [f"| {_escape(label)} | " + " | ".join(f"{row[n]:.2f}" for n in spec.names)
              + f" | **{row['total']:.2f}** |" for label, row in scores.items()]
    return "\n".join(lines) + "\n"


def show_reward_scores(kit, topic: str, completions: dict[str, str]) -> None:
    """Score named completions for `topic` with the GRPO rewards (kit: a grpo.GRPOSetup, or a
    RewardSpec) and show the table."""
    _show_markdown(reward_scores_markdown(getattr(kit, "spec", kit), topic, completions))


def save_grpo(run: Run, trainer, data_dir: str | Path) -> Path:
    """After trainer.train(): save the first GRPO phase, then train any later GRPO phases of
    the preset (e.g. ref-full's sparse -> dense), each from the previous adapter. Returns
    RUN/grpo/adapter, the last phase's."""
    adapter = grpo.save_grpo(run.cfg, trainer)
    later = grpo_phases(run.cfg)[1:]
    if later:
        print(f"training the preset's later GRPO phases {later} from {adapter}")
        resume = run.resume if run.resume in (None, "latest") else None  # a path: the first phase only
        adapter = grpo.run_grpo_phases(run.cfg, load_data(data_dir), adapter, later, resume,
                                       run.fresh)
    return adapter


def key_args(trainer) -> list[str]:
    """The arguments show_args lists: every setting the kit passes to TRL by name (the fields
    SFTSettings / GRPOSettings share with the trainer's config), then the kit's own choices a
    reader checks."""
    from haiku_kit.config import GRPOSettings, SFTSettings
    from haiku_kit.train.common import passthrough_names

    if hasattr(trainer, "reward_funcs"):
        settings, extra = GRPOSettings, ["epsilon_high", "reward_weights"]
    else:
        settings, extra = SFTSettings, ["assistant_only_loss", "completion_only_loss"]
    names = passthrough_names(settings, type(trainer.args))
    return [*names, *(n for n in extra if n not in names), "seed", "output_dir"]


def show_args(trainer) -> None:
    """The trainer's class and key arguments (all of them: `trainer.args`)."""
    rows = [f"| `{name}` | `{enum_value(getattr(trainer.args, name, None))}` |"
            for name in key_args(trainer)]
    _show_markdown(f"**{type(trainer).__module__}.{type(trainer).__name__}**, {len(trainer.train_dataset)} "
                   "training rows\n\n| argument | value |\n|---|---|\n" + "\n".join(rows))


def train_sft(run: Run, data_dir: str | Path) -> Path | None:
    """Load, build, train and save SFT in one call (None when the preset has no SFT)."""
    if not has_sft(run.cfg):
        print(f"this preset trains no SFT phase (phases: {run.cfg.phases}); skipped")
        return None
    model, tokenizer = load_model(run)
    trainer = sft_trainer(run, model, tokenizer, data_dir)
    train_phase(trainer)
    return distill.distil_after_sft(run.cfg, model, tokenizer, save_sft(run, trainer),
                                    load_data(data_dir), run.resume, run.fresh)


def train_grpo(run: Run, data_dir: str | Path, sft_adapter: str | Path | None) -> Path | None:
    """Every GRPO phase of the preset in one call (None when it has none)."""
    if not grpo_phases(run.cfg):
        print(f"this preset trains no GRPO phase (phases: {run.cfg.phases}); skipped")
        return None
    start = grpo_start(run, sft_adapter)
    model, tokenizer = load_model(run, adapter=start, rollouts=True)
    trainer = grpo_trainer(run, model, tokenizer, data_dir, start)
    train_phase(trainer)
    return save_grpo(run, trainer, data_dir)


# --------------------------------------------------------------------------- evaluation and report


def evaluate_model(run: Run, name: str, data_dir: str | Path, adapter: str | Path | None = None,
                   constrained: bool = False):
    """Generate for the first eval.n_prompts eval prompts with the base model (+ adapter), score
    and save to RUN/eval/NAME. A trained model whose phase was skipped (adapter None) -> None.

    constrained=True decodes with the syllable-constrained decoder into the row
    "NAME + constrained", beside the free row; it runs only where the preset's
    eval.constrained is on (else None).

    Under a launch the main process evaluates (one model, every prompt: the numbers do not
    depend on the process count) and the others wait for its result, which all return."""
    return ranks.on_main(_evaluate_model, run, name, data_dir, adapter, constrained)


def _evaluate_model(run: Run, name: str, data_dir, adapter, constrained: bool):
    if adapter is None and name != "base":
        print(f"no '{name}' model in this run (phases: {run.cfg.phases}); nothing to evaluate")
        return None
    if constrained:
        if not run.cfg.eval.constrained:
            print("eval.constrained is off in this preset: no constrained row "
                  "(--set eval.constrained=true adds one)")
            return None
        name = constrained_name(name)
    rows, train_answers = load_eval_data(str(_require(Path(data_dir), "manifest.json", "splits")))
    train_answers += distill.distilled_answers(run.cfg)
    plan = eval_plan(run.cfg.eval)
    if plan.protocol == "reference":  # the reference's prompts; the overlap still against this run's training
        rows = load_eval_data(run.cfg.eval.reference_data)[0]
    n = plan.n_prompts
    extra = {"constrained": True, "candidates": run.cfg.eval.candidates} if constrained else {}
    result = evaluate_rows(run.cfg, name, rows[:n] if n else rows, train_answers, adapter, **extra)
    result.meta.update(preset=run.preset, schedule=schedule(run.cfg, name.removesuffix(CONSTRAINED)))
    result.save(run.paths.eval_dir(name))
    return result


def evaluate_rows(cfg, name: str, rows: list[dict], train_answers, adapter=None, **settings):
    """Load the config's model (+ adapter) and score it on rows ({topic, prompt}) with the
    config's eval settings under its eval.protocol (protocol.eval_plan: the reference protocol
    fixes k, max_new_tokens and the sampling); `settings` (k, max_new_tokens, ...) override
    those."""
    e = cfg.eval
    plan = eval_plan(e)
    if adapter is not None:
        adapter = str(_require(Path(adapter), "adapter_config.json", "LoRA adapter"))
    model, tokenizer = load_from_config(cfg, adapter, trainable=False)
    args = {"k": plan.k, "seed": e.seed, "max_new_tokens": plan.max_new_tokens,
            "batch_size": e.batch_size, "protocol": plan.protocol}
    args.update(settings)
    sampling = SamplingSettings(temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k)
    result = run_eval(model, rows, tokenizer=tokenizer, train_answers=train_answers,
                      sampling=sampling, name=name, **args)
    result.meta.update(model=cfg.model.name, adapter=adapter)
    return result


def make_report(run: Run, results: dict[str, str | Path]) -> Path:
    """Stage 05: compare the saved evaluations this preset makes and write RUN/report/;
    `results` names their folders (a name left out: its place in the run folder). Under a
    launch the main process writes it, the others wait."""
    return ranks.on_main(_make_report, run, results)


def _make_report(run: Run, results: dict[str, str | Path]) -> Path:
    loaded = {
        name: EvalResult.load(_require(Path(results.get(name) or run.paths.eval_dir(name)),
                                       "result.json", f"'{name}' eval"))
        for name in expected_evals(run.cfg)
    }
    samples = run.paths.phase_dir("grpo") / "samples.jsonl"
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
