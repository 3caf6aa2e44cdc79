"""The run folder: where every artifact of a run lives, one source of truth.

```
RUN/config.yaml  timings.json  data/  eval/{base,sft,grpo}/  sft/adapter/  grpo/adapter/
    grpo-VARIANT/adapter/ (earlier GRPO phases of a multi-phase preset)  report/  notebooks/
```

Two words meet here. A *stage* is a pipeline stage (STAGES: data, baseline, sft, grpo, report):
a notebook `haiku-kit pipeline` runs, reading the artifacts of earlier ones by path. A *phase*
is one training run of the config's `phases` ("sft", "grpo", "grpo:VARIANT", where VARIANT names
a `grpo_variants` entry): what the sft and grpo stages train, each phase in its own folder.
Everything that asks "which GRPO phases", "where does GRPO start" or "where does phase X write"
asks this module.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from haiku_kit import ranks
from haiku_kit.config import RunConfig, grpo_variant_settings
from haiku_kit.errors import HaikuKitError

STAGES = ("data", "baseline", "sft", "grpo", "report")
NOTEBOOKS = {  # the notebook that runs each stage
    "data": "01_data.ipynb",
    "baseline": "02_baseline.ipynb",
    "sft": "03_sft.ipynb",
    "grpo": "04_grpo.ipynb",
    "report": "05_report.ipynb",
}


class PipelineError(HaikuKitError):
    """The pipeline cannot start or resume (bad stage name, missing artifacts)."""


@dataclass(frozen=True)
class Artifact:
    """One artifact a stage writes: a folder under the run, checked by a marker file in it."""

    param: str  # notebook parameter name that receives its path
    rel_dir: str
    marker: str
    stage: str  # the pipeline stage that writes it


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

    @classmethod
    def of(cls, cfg: RunConfig) -> RunPaths:
        return cls(run_root(cfg))

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

    @property
    def sft_adapter(self) -> Path:
        return self.artifact("sft_adapter")

    def phase_dir(self, folder: str) -> Path:
        """A training phase's folder (adapter/, log.jsonl, checkpoints/...): see phase_dir_name."""
        return self.root / folder

    def eval_dir(self, name: str) -> Path:
        """RUN/eval/NAME; a constrained row "sft + constrained" lives in RUN/eval/sft+constrained."""
        return self.root / "eval" / name.replace(" ", "")


def run_root(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir).expanduser().resolve()


def run_data_dir(cfg: RunConfig) -> Path:
    """Where the run's splits are: data.splits_dir if set, else RUN/data."""
    return Path(cfg.data.splits_dir).expanduser() if cfg.data.splits_dir else run_root(cfg) / "data"


# --------------------------------------------------------------------------- training phases


def has_sft(cfg: RunConfig) -> bool:
    return "sft" in cfg.phases


def grpo_phases(cfg: RunConfig) -> list[str]:
    """The config's GRPO phases in order ("grpo" or "grpo:VARIANT")."""
    return [s for s in cfg.phases if s.startswith("grpo")]


def variant_of(phase: str) -> str | None:
    """"grpo:sparse" -> "sparse"; "grpo" -> None."""
    return phase.partition(":")[2] or None


def phase_dir_name(cfg: RunConfig, phase: str) -> str:
    """Folder name in the run folder: sft, grpo for the last GRPO phase, grpo-VARIANT for earlier ones."""
    if phase == "sft":
        return "sft"
    phases = grpo_phases(cfg)
    if not phases or phase == phases[-1]:
        return "grpo"
    return "grpo-" + (variant_of(phase) or str(phases.index(phase)))


def grpo_starts_from_sft(init: str, sft_ready: bool) -> bool:
    """The one rule for where GRPO starts: grpo.init "sft" starts from the run's SFT adapter,
    "auto" does when that adapter is ready (on disk; in a pipeline, when the preset trains SFT
    first), "base" and an explicit path never do."""
    return init == "sft" or (init == "auto" and sft_ready)


def schedule(cfg: RunConfig, name: str) -> str:
    """The training behind an eval row, in steps: "base model", "SFT 100", or the phases up to
    GRPO's last ("SFT 100 -> sparse GRPO 1,000 -> dense GRPO 1,000")."""
    if name == "base":
        return "base model"
    parts = [f"SFT {cfg.sft.max_steps:,}" if cfg.sft.max_steps > 0 else "SFT"] * has_sft(cfg)
    if name == "grpo":
        for phase in grpo_phases(cfg):
            variant = variant_of(phase)
            steps = grpo_variant_settings(cfg, variant).max_steps
            parts.append(f"{variant + ' ' if variant else ''}GRPO {steps:,}")
    return " -> ".join(parts)


CONSTRAINED = " + constrained"


def constrained_name(name: str) -> str:
    """The eval row of a model decoded with the syllable-constrained decoder: "sft + constrained"."""
    return name + CONSTRAINED


def expected_evals(cfg: RunConfig) -> list[str]:
    """The evaluations a run of this config makes: base, then each trained model, each followed
    by its "+ constrained" row when eval.constrained is on (beside the free row, never instead)."""
    trained = ["sft"] * has_sft(cfg) + ["grpo"] * bool(grpo_phases(cfg))
    names = ["base"]
    for name in trained:
        names += [name, constrained_name(name)] if cfg.eval.constrained else [name]
    return names


# --------------------------------------------------------------------------- pipeline stages


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return stage


def trains_nothing(stage: str, cfg: RunConfig) -> bool:
    """A training pipeline stage whose phase the preset does not list."""
    return (stage == "sft" and not has_sft(cfg)) or (stage == "grpo" and not grpo_phases(cfg))


def stage_inputs(stage: str, cfg: RunConfig) -> tuple[str, ...]:
    """The artifacts `stage` reads under this config (a subset of STAGE_INPUTS[stage])."""
    if stage == "grpo" and not grpo_starts_from_sft(cfg.grpo.init, has_sft(cfg)):
        return ("data_dir",)
    if stage == "report":  # the free rows; "+ constrained" rows are read from RUN/eval/
        return tuple(f"{name}_result" for name in expected_evals(cfg)
                     if not name.endswith(CONSTRAINED))
    return STAGE_INPUTS[check_stage(stage)]


def stage_outputs(stage: str, cfg: RunConfig) -> list[str]:
    """The artifacts `stage` writes under this config (none for a stage the preset skips)."""
    if trains_nothing(stage, cfg):
        return []
    return [a.param for a in ARTIFACTS.values() if a.stage == check_stage(stage)]


def missing_artifacts(stage: str, paths: RunPaths, cfg: RunConfig) -> list[str]:
    """Inputs of `stage` (under this config) absent from the run folder, as readable lines."""
    missing = []
    for param in stage_inputs(check_stage(stage), cfg):
        art = ARTIFACTS[param]
        marker = paths.artifact(param) / art.marker
        if not marker.is_file():
            missing.append(f"{marker} (written by stage '{art.stage}')")
    return missing


# --------------------------------------------------------------------------- one writer per run


LOCK_NAME = ".lock"


class RunInUse(HaikuKitError):
    """Another process is writing this run folder."""


@contextlib.contextmanager
def hold_run(root: str | Path, command: str = "haiku-kit"):
    """Hold RUN/.lock while a command writes the run folder: a second writer (another
    `train`, `pipeline` or `demo` on the same folder) fails at once with one line naming the
    holder's pid, host and command, instead of moving its checkpoints aside mid-run. The lock is
    the kernel's (flock): it goes with the holder's process, so a killed run leaves no stale lock.

    Under a multi-process launch (torchrun, accelerate launch) the main process holds it for the
    whole launch; the others take no lock (they write nothing to the run folder, ranks.py), so
    the processes of one run never wait for each other's lock. A second launch on the same folder
    fails in its main process, and the launcher then stops that launch's other processes."""
    import fcntl
    import socket

    root = Path(root)
    if not ranks.is_main():
        yield root / LOCK_NAME
        return
    if root.exists() and not root.is_dir():
        raise HaikuKitError(f"{root} is a file, not a run folder: choose another --out / run_dir")
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUse(f"{root} is in use by {holder}; wait for it to finish or stop it "
                           "(one writer per run folder)") from None
        handle.seek(0)
        handle.truncate()
        launch = f", main of {ranks.processes()} processes" if ranks.launched() else ""
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}{launch}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock
