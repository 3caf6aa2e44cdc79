"""TRL plumbing SFT and GRPO share: trainer arguments, checkpoints and resuming, the phase
folder, the record of the settings the trainer really used, and the CPU log-prob kernel.

A training phase is built (sft.sft_trainer / grpo.grpo_trainer), trained (`trainer.train()`,
or `train_phase` which also saves a checkpoint on Ctrl-C) and saved (sft.save_sft /
grpo.save_grpo). What the saving step needs is kept on the trainer as `trainer.kit_phase`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from haiku_kit import ranks
from haiku_kit.config import RunConfig, save_config
from haiku_kit.env import write_env_json
from haiku_kit.errors import ConfigError, DataError, TrainingInterrupted
from haiku_kit.model.backends import Precision, choose_precision, gpu_capabilities
from haiku_kit.model.load import save_adapter
from haiku_kit.runs import run_root
from haiku_kit.train.callbacks import plot_training, write_csv
from haiku_kit.train.checkpoints import prepare_phase

logger = logging.getLogger(__name__)

@dataclass
class KitPhase:
    """A built training phase: what saving it after trainer.train() needs."""

    phase: str  # "sft", "grpo" or "grpo:VARIANT"
    folder: Path  # RUN/<phase folder>
    device: str
    tokenizer: Any
    resume: str | None = None  # the checkpoint train_phase resumes from
    settings: Any = None  # the phase's SFTSettings / GRPOSettings
    start: Path | None = None  # GRPO: the adapter it started from (None: the base model)
    rows: int = 0


# --------------------------------------------------------------------------- datasets


def select_split(dataset, name: str):
    """Accept a Dataset, a DatasetDict (take `name`), or a list of rows."""
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        if name not in dataset:
            raise DataError(f"the dataset has no {name!r} split (splits: {', '.join(dataset)})")
        return dataset[name]
    if isinstance(dataset, list):
        return Dataset.from_list(dataset)
    return dataset


def cap_rows(dataset, n: int | None):
    return dataset.select(range(min(n, len(dataset)))) if n else dataset


# --------------------------------------------------------------------------- arguments


def training_precision(device: str, model) -> Precision:
    """bf16 only at compute capability >= 8.0; Gemma 3 in float32 below that (as Unsloth)."""
    if device == "cpu":
        return choose_precision("cpu")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return choose_precision("cuda", gpu_capabilities(), model_type)


def _precision(device: str, model) -> dict[str, Any]:
    return {"use_cpu": device == "cpu", **training_precision(device, model).trainer_flags()}


def passthrough_names(settings, config_cls) -> list[str]:
    """The fields of `settings` (SFTSettings / GRPOSettings, class or instance) that `config_cls`
    (trl.SFTConfig / GRPOConfig) also has: each goes to TRL by name, so a TRL setting is added to
    the kit by adding one field to the settings dataclass."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_cls)}
    return [f.name for f in dataclasses.fields(settings) if f.name in known]


def common_args(cfg: RunConfig, s, out: Path, device: str, model) -> dict[str, Any]:
    """The kit's own choices and translations SFT and GRPO share: values computed from a setting
    (max_steps <= 0 -> -1, warmup_ratio -> warmup_steps, no 8-bit optimizer on a CPU, report_to
    checked), and arguments no setting names (output folder, seed, precision...)."""
    report_to = report_targets(s.report_to, ("grpo" if hasattr(s, "num_generations") else "sft") + ".report_to")
    prepare_trackers(report_to, run_root(cfg))
    return dict(
        output_dir=str(out / "checkpoints"),
        max_steps=s.max_steps if s.max_steps > 0 else -1,
        warmup_steps=s.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the steps
        optim=s.optim if device != "cpu" or "8bit" not in s.optim else "adamw_torch",
        save_strategy="steps",
        report_to=report_to,
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **gradient_checkpointing_args(cfg.model.gradient_checkpointing, device, model),
        **_precision(device, model),
    )


def gradient_checkpointing_args(value: str, device: str, model) -> dict[str, Any]:
    """TRL's gradient_checkpointing for model.gradient_checkpointing. "auto": TRL's default (on)
    on a GPU; off on a CPU, where memory is not the limit and recomputing the forward in the
    backward cost SFT 1.2-1.3x per step (research/log.md E12). "unsloth" is on for TRL too: the
    Unsloth model was built with use_gradient_checkpointing="unsloth" (backends.
    unsloth_peft_kwargs) and its trainer keeps that mode. A model loaded through transformers +
    peft (the hf backend: every CPU run) refuses "unsloth"."""
    if value == "unsloth" and getattr(model, "_haiku_kit_backend", None) == "hf":
        raise ConfigError("model.gradient_checkpointing=unsloth needs the unsloth backend on a CUDA GPU "
                          "(this model loaded through transformers + peft); use on, off or auto")
    if value == "auto":
        return {"gradient_checkpointing": False} if device == "cpu" else {}
    return {"gradient_checkpointing": value != "off"}


def config_args(config_cls, cfg: RunConfig, s, out: Path, device: str, model, kit: dict[str, Any],
                phase: str) -> dict[str, Any]:
    """The keyword arguments of `config_cls` (trl.SFTConfig / GRPOConfig) for one phase, as a dict
    a notebook shows and may edit: every field of the settings `s` that config_cls also has, by
    name (passthrough_names); the kit's shared choices (common_args) and this phase's (`kit`) on
    top; then the user's `<phase>.trainer_args`, checked against config_cls's fields."""
    args = {name: getattr(s, name) for name in passthrough_names(s, config_cls)}
    args.update(common_args(cfg, s, out, device, model))
    args.update(kit)
    return with_trainer_args(config_cls, args, s.trainer_args, phase)


def report_targets(value, key: str) -> str | list[str]:
    """report_to as transformers takes it: "none", "all", or a list of tracker names."""
    if isinstance(value, str) and value in ("none", "all"):
        return value
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{key}: expected a tracker name (tensorboard, trackio, wandb, ...) or a list, got {value!r}")
    return list(names) or "none"


def prepare_trackers(report_to, run_dir: Path) -> None:
    """Keep trackio's local store inside the run (RUN/trackio) unless TRACKIO_DIR says otherwise.
    trackio reads TRACKIO_DIR once, on import, so this must run before the trainer imports it."""
    if "trackio" not in report_to:
        return
    os.environ.setdefault("TRACKIO_DIR", str(Path(run_dir).resolve() / "trackio"))
    trackio_utils = sys.modules.get("trackio.utils")
    if trackio_utils is not None and str(trackio_utils.TRACKIO_DIR) != os.environ["TRACKIO_DIR"]:
        logger.warning("trackio was imported before training: it logs to %s", trackio_utils.TRACKIO_DIR)


def with_trainer_args(config_cls, kit_args: dict[str, Any], overrides: dict[str, Any],
                      phase: str) -> dict[str, Any]:
    """kit_args with the user's `<phase>.trainer_args` merged on top. A key config_cls does not
    know is named; overriding a setting the kit chose warns. TRL checks every value when the
    config is built."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_cls)}
    args = dict(kit_args)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"{phase}.trainer_args: {config_cls.__name__} has no field {key!r}")
        if key in args and args[key] != value:
            logger.warning("%s.trainer_args.%s=%r overrides the kit's setting %r", phase, key, value, args[key])
        args[key] = value
    return args


def trainer_config(config_cls, kit_args: dict[str, Any], overrides: dict[str, Any], phase: str):
    """config_cls(**kit_args) with the user's `<phase>.trainer_args` merged on top (with_trainer_args)."""
    return config_cls(**with_trainer_args(config_cls, kit_args, overrides, phase))


def plain(value):
    """An argument's value as YAML writes it: an enum (SchedulerType, OptimizerNames) as its value."""
    import enum

    return value.value if isinstance(value, enum.Enum) else value

# --------------------------------------------------------------------------- checkpoints and the phase folder


def start_stage(phase_dir: Path, resume: str | Path | bool | None, fresh: bool | str) -> str | None:
    """Make the phase folder ready (resume.prepare_phase: the newest checkpoint by default, old
    state moved aside on a fresh start, never deleted); the checkpoint to resume from, or None.
    Under several processes the main one decides and moves, the others resume what it chose."""
    checkpoint = ranks.on_main(prepare_phase, phase_dir, resume, fresh).checkpoint
    if checkpoint and ranks.launched():
        # here, not only in train_phase: a notebook calls trainer.train() itself, and a resumed
        # launch on CPU processes needs it (it touches only storages tagged "cpu:N")
        allow_indexed_cpu_location()
    return checkpoint


def _save_interrupt_checkpoint(trainer) -> TrainingInterrupted:
    """Save a checkpoint on Ctrl-C; the exception to raise says where (rerunning resumes it)."""
    trainer._save_checkpoint(trainer.model, trial=None)
    step = trainer.state.global_step
    ckpt = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    logger.warning("interrupted at step %s: checkpoint saved to %s", step, ckpt)
    return TrainingInterrupted(str(ckpt), step)


def write_logs(phase_dir: Path) -> None:
    """log.csv and training.png from the phase's log.jsonl (a plot never loses a finished run);
    the main process writes them, the others wait."""
    ranks.main_only(_write_logs, phase_dir)


def _write_logs(phase_dir: Path) -> None:
    log = phase_dir / "log.jsonl"
    if not log.is_file():
        return
    write_csv(log, phase_dir / "log.csv")
    try:
        plot_training(log, phase_dir / "training.png")
    except Exception as err:  # noqa: BLE001 - a plot must never lose a finished training run
        logger.warning("could not plot %s: %s", log, err)


def train_phase(trainer) -> None:
    """trainer.train() resuming where the phase says, saving a checkpoint on Ctrl-C, and always
    writing the CSV and plot."""
    kit = trainer.kit_phase
    if kit.resume and kit.device == "cpu" and ranks.launched():
        allow_indexed_cpu_location()
    try:
        trainer.train(resume_from_checkpoint=kit.resume)
    except BaseException as err:
        # No waiting for the other processes on the way out: they may be stuck in the step
        # this one left, and the launcher stops them when this one exits.
        if ranks.is_main():
            _write_logs(kit.folder)
        if isinstance(err, KeyboardInterrupt):
            raise _save_interrupt_checkpoint(trainer) from None
        raise
    write_logs(kit.folder)


def allow_indexed_cpu_location() -> None:
    """Let torch.load map storages to "cpu:0". Resuming on several CPU processes, transformers
    5.17 loads the optimizer state with map_location=args.device, which accelerate makes
    torch.device("cpu", 0) there, and torch 2.13 knows no storage location "cpu:0" (RuntimeError:
    don't know how to restore data location). Registered once; other locations are untouched."""
    import torch.serialization as ts

    if getattr(allow_indexed_cpu_location, "done", False):
        return

    def restore(storage, location: str):
        return storage.cpu() if location.startswith("cpu:") else None

    ts.register_package(99, lambda obj: None, restore)
    allow_indexed_cpu_location.done = True


def record_effective(cfg: RunConfig, phase: str, phase_dir: Path, values: dict) -> None:
    """The settings the trainer really uses, in RUN/<phase>/effective.yaml and RUN/config.yaml.

    RUN/<phase>/config.yaml keeps the whole config this phase ran with: RUN/config.yaml is
    rewritten by each CLI call, so a run trained in two calls with different overrides would
    otherwise keep only the last call's. The main process writes them, the others wait."""
    ranks.main_only(_record_effective, cfg, phase, phase_dir, values)


def _record_effective(cfg: RunConfig, phase: str, phase_dir: Path, values: dict) -> None:
    for key, value in values.items():
        logger.info("%s effective %s = %r", phase, key, value)
    (phase_dir / "effective.yaml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    save_config(cfg, phase_dir / "config.yaml", extra={})
    write_env_json(run_root(cfg))  # RUN/env.json: the versions and GPU this training ran with
    config_path = run_root(cfg) / "config.yaml"
    effective = {}
    if config_path.is_file():
        effective = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("effective") or {}
    effective[phase] = values
    save_config(cfg, config_path, extra={"effective": effective})


def batch_effective(args, per_step: int | None = None) -> dict[str, int]:
    """The process count and the global batch the trainer really uses: rows (SFT) or
    completions (GRPO) per optimizer step, over every process."""
    n = int(args.world_size)
    per_step = args.per_device_train_batch_size if per_step is None else per_step
    return {"processes": n, "global_batch": per_step * n * args.gradient_accumulation_steps}


def save_trained_adapter(trainer, folder: Path) -> Path:
    """The trainer's LoRA adapter (safetensors) and tokenizer in `folder`, written by the main
    process; the others wait. Under DeepSpeed ZeRO-3 or FSDP each process holds a shard of the
    weights: every process takes part in gathering them (accelerate's get_state_dict) first."""
    state_dict = None
    if ranks.launched() and (getattr(trainer, "is_fsdp_enabled", False) or _zero3(trainer)):
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return ranks.on_main(save_adapter, trainer.model, trainer.kit_phase.tokenizer, folder,
                         state_dict=state_dict)


def _zero3(trainer) -> bool:
    plugin = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
    return bool(plugin is not None and getattr(plugin, "zero_stage", 0) == 3)


def precision_name(args) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def enum_value(value) -> str:
    return str(getattr(value, "value", value))


# --------------------------------------------------------------------------- CPU log-prob kernel


class TorchChunkedLogProb:
    """Pure-torch stand-in for TRL's Triton `ChunkedLogProbFunction` (same arguments and outputs).

    TRL 1.15's SFT and GRPO losses call that kernel through a fused LM head; torch's CPU builds
    ship without Triton, so the kernel is None there and training fails. This computes the same
    per-token values from full logits, in row chunks to bound memory; autograd does the rest."""

    ROWS = 256

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
              outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")):
        import torch

        parts: dict[str, list] = {k: [] for k in ("logp", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")}
        for start in range(0, hidden.shape[0], TorchChunkedLogProb.ROWS):
            h = hidden[start:start + TorchChunkedLogProb.ROWS].float()
            t = targets[start:start + TorchChunkedLogProb.ROWS]
            z = h @ weight.float().t()
            if bias is not None:
                z = z + bias.float()
            z = z * logit_scale
            if softcap:
                z = softcap * torch.tanh(z / softcap)
            z = z / temperature
            logsm = torch.log_softmax(z, dim=-1)
            parts["logp"].append(logsm.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "entropy" in outputs:
                parts["entropy"].append(-(logsm.exp() * logsm).sum(-1))
            if "log_sum_sq_probs" in outputs:
                parts["log_sum_sq_probs"].append(torch.logsumexp(2 * logsm, dim=-1))
            if "mean_logits" in outputs:
                parts["mean_logits"].append(z.mean(-1))
            if "is_top1" in outputs:
                parts["is_top1"].append(z.argmax(-1) == t)
        cat = {k: torch.cat(v) if v else None for k, v in parts.items()}
        if cat["logp"] is None:  # no tokens at all
            cat["logp"] = hidden.new_zeros((0,), dtype=torch.float32) + 0 * hidden.sum()
        return cat["logp"], cat["entropy"], cat["log_sum_sq_probs"], cat["mean_logits"], cat["is_top1"]


def install_cpu_logprob_fallback() -> bool:
    """Use TorchChunkedLogProb when TRL's Triton kernel is unavailable; True if installed."""
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None:
        return False
    trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
    logger.info("Triton is not available: TRL's fused log-prob kernel replaced by a pure-torch version")
    return True
