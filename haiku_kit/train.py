"""SFT and GRPO training from a RunConfig (TRL 1.15), on CPU (hf, fp32) or GPU (Unsloth, 4-bit).

Import order matters for the Unsloth backend: `modeling.load_model` imports unsloth, which must
happen before trl/transformers are imported, so trl is imported inside the functions, after the
model is loaded, and haiku_kit.callbacks never imports transformers.

Outputs (RUN = cfg.output_dir): RUN/<stage>/adapter/ (LoRA, safetensors), log.jsonl + log.csv,
training.png, effective.yaml (the settings the trainer really used), checkpoints/ (resumable),
and for GRPO samples.jsonl. RUN/config.yaml gets the effective config.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from haiku_kit.callbacks import (
    CollapseCallback,
    HackingMonitor,
    JsonlLogger,
    RewardRecorder,
    SampleLogger,
    plot_training,
    write_csv,
)
from haiku_kit.config import (
    GRPOSettings,
    RunConfig,
    grpo_phase_settings,
    resolve_config,
    save_config,
    stage_dir_name,
)
from haiku_kit.errors import ConfigError, DataError, HaikuKitError, ModelLoadError
from haiku_kit.modeling import stop_token_ids

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------- shared helpers


def run_root(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir).expanduser().resolve()


def resolve_device(cfg: RunConfig) -> str:
    if cfg.model.device != "auto":
        if cfg.model.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("model.device=cuda but no CUDA GPU is available; use model.device=cpu")
        return cfg.model.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_data_dir(cfg: RunConfig) -> Path:
    """Where the run's splits are: data.splits_dir if set, else RUN/data."""
    return Path(cfg.data.splits_dir).expanduser() if cfg.data.splits_dir else run_root(cfg) / "data"


def load_run_data(cfg: RunConfig):
    """The run's DatasetDict: data.splits_dir if set, else RUN/data (built from data.source if absent)."""
    from haiku_kit.data import load_splits

    folder = run_data_dir(cfg)
    if cfg.data.splits_dir:
        if not (folder / "manifest.json").is_file():
            raise DataError(
                f"data.splits_dir={folder} holds no dataset splits (no manifest.json); build them with "
                f"`haiku-kit data build --out {folder}` or unset data.splits_dir to build into RUN/data"
            )
        return load_splits(folder)
    if not (folder / "manifest.json").is_file():
        build_run_splits(cfg, folder)
    return load_splits(folder)


def build_run_splits(cfg: RunConfig, folder: Path) -> Path:
    """Build cfg.data.source into sft/rl/eval splits in `folder`, as the config says."""
    from haiku_kit.data import build_splits, load_source

    logger.info("building dataset splits from %s into %s", cfg.data.source, folder)
    build_splits(
        load_source(cfg.data.source),
        folder,
        fractions=tuple(cfg.data.fractions),
        seed=cfg.data.seed,
        min_similarity=cfg.data.min_similarity,
        sources=[cfg.data.source],
    )
    return folder


def _split(dataset, name: str):
    """Accept a Dataset, a DatasetDict (take `name`), or a list of rows."""
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        if name not in dataset:
            raise DataError(f"the dataset has no {name!r} split (splits: {', '.join(dataset)})")
        return dataset[name]
    if isinstance(dataset, list):
        return Dataset.from_list(dataset)
    return dataset


def _cap(dataset, n: int | None):
    return dataset.select(range(min(n, len(dataset)))) if n else dataset


def backend_for(cfg: RunConfig) -> str:
    """cfg.model.backend, where "auto" on a CPU run means plain transformers + peft."""
    if cfg.model.backend == "auto" and resolve_device(cfg) == "cpu":
        return "hf"
    return cfg.model.backend


def load_for(cfg: RunConfig, adapter: str | Path | None = None, trainable: bool = True):
    """The config's model + tokenizer: with a trainable LoRA (fresh, or `adapter`) for training,
    or with `adapter` only (or none) for evaluation."""
    from haiku_kit.modeling import LoraSettings, load_model

    m = cfg.model
    lora = LoraSettings(
        r=m.lora.r, alpha=m.lora.alpha, dropout=m.lora.dropout, target_modules=tuple(m.lora.target_modules)
    )
    return load_model(
        m.name,
        backend=backend_for(cfg),
        load_in_4bit=m.load_in_4bit,
        lora=lora if trainable else None,
        max_seq_length=m.max_seq_length,
        adapter=str(adapter) if adapter else None,
        seed=cfg.seed,
    )





def _text_tokenizer(tokenizer):
    return getattr(tokenizer, "tokenizer", tokenizer)


def _precision(device: str, model) -> dict[str, Any]:
    if device == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    import torch

    bf16 = torch.cuda.is_bf16_supported()
    return {"use_cpu": False, "bf16": bf16, "fp16": not bf16}


def _common_args(cfg: RunConfig, s, out: Path, device: str, model) -> dict[str, Any]:
    return dict(
        output_dir=str(out / "checkpoints"),
        max_steps=s.max_steps if s.max_steps > 0 else -1,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the steps
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        optim=s.optim if device != "cpu" or "8bit" not in s.optim else "adamw_torch",
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        logging_steps=s.logging_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        report_to="none",
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **_precision(device, model),
    )


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint-N folder under out_dir (or out_dir/checkpoints)."""
    out_dir = Path(out_dir)
    found = []
    for folder in (out_dir, out_dir / "checkpoints"):
        if folder.is_dir():
            found += [
                (int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()
            ]
    return max(found)[1] if found else None


def resolve_resume(resume: str | Path | bool | None, stage_dir: Path) -> str | None:
    """True / "latest" -> newest checkpoint in the stage folder; a path -> checked path."""
    if resume in (None, False, ""):
        return None
    if resume is True or str(resume) == "latest":
        ckpt = find_checkpoint(stage_dir)
        if ckpt is None:
            raise ModelLoadError(f"resume_from_checkpoint=latest but {stage_dir / 'checkpoints'} holds no checkpoint-N")
        return str(ckpt)
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    if not (path / "trainer_state.json").is_file():
        nested = find_checkpoint(path)
        if nested is None:
            raise ModelLoadError(
                f"{path} is not a trainer checkpoint (no trainer_state.json, no checkpoint-N inside); "
                f"to start from an adapter instead, pass it as init_adapter"
            )
        path = nested
    return str(path)


def _save_interrupt_checkpoint(trainer) -> Path:
    trainer._save_checkpoint(trainer.model, trial=None)
    ckpt = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    msg = (
        f"interrupted at step {trainer.state.global_step}: checkpoint saved to {ckpt}; "
        f"resume with resume_from_checkpoint={ckpt}"
    )
    logger.warning(msg)
    print(msg, file=sys.stderr)
    return ckpt


def _train(trainer, stage_dir: Path, resume: str | None) -> None:
    """trainer.train() that saves a checkpoint on Ctrl-C and always writes the CSV and plot."""
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        _save_interrupt_checkpoint(trainer)
        raise
    finally:
        log = stage_dir / "log.jsonl"
        if log.is_file():
            write_csv(log, stage_dir / "log.csv")
            try:
                plot_training(log, stage_dir / "training.png")
            except Exception as err:  # noqa: BLE001 - a plot must never lose a finished training run
                logger.warning("could not plot %s: %s", log, err)


def _record_effective(cfg: RunConfig, stage: str, stage_dir: Path, values: dict) -> None:
    for key, value in values.items():
        logger.info("%s effective %s = %r", stage, key, value)
    (stage_dir / "effective.yaml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    config_path = run_root(cfg) / "config.yaml"
    effective = {}
    if config_path.is_file():
        effective = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("effective") or {}
    effective[stage] = values
    save_config(cfg, config_path, extra={"effective": effective})


def _fresh_stage_dir(stage_dir: Path, resume: str | None) -> None:
    """Start a stage in a clean folder, except for what resuming needs (checkpoints, logs)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        return
    for name in ("log.jsonl", "log.csv", "samples.jsonl", "training.png", "collapse.yaml"):
        (stage_dir / name).unlink(missing_ok=True)
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)


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


# --------------------------------------------------------------------------- SFT


def sft_examples(dataset, mode: str):
    """Only the columns SFTTrainer needs: "messages" (assistant mode) or prompt/completion."""
    if "messages" not in dataset.column_names:
        raise DataError(f"the SFT dataset has no 'messages' column (columns: {', '.join(dataset.column_names)})")
    if mode == "assistant":
        return dataset.select_columns(["messages"])

    def split(row):
        msgs = row["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise DataError(f"SFT row {row.get('source_id', '?')}: the last message must be the assistant's")
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return dataset.map(split, remove_columns=dataset.column_names)


def choose_loss_mask(tokenizer, requested: str = "auto") -> str:
    """"assistant" when the chat template masks the assistant turn including its <end_of_turn>
    (TRL's own checks), else "completion" (prompt/completion columns, prefix-diff mask)."""
    if requested != "auto":
        return requested
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    tok = _text_tokenizer(tokenizer)
    try:
        template = None if has_generation_markers(tok.chat_template) else get_training_chat_template(tok)
        if is_chat_template_stop_token_trained(tok, chat_template=template):
            return "assistant"
    except Exception as err:  # noqa: BLE001 - an unknown template: TRL cannot patch it
        logger.info("assistant-only loss unavailable (%s); using completion-only loss", err)
    return "completion"


def build_sft_trainer(cfg: RunConfig, model, tokenizer, dataset, stage_dir: Path, device: str):
    install_cpu_logprob_fallback()
    from trl import SFTConfig, SFTTrainer

    s = cfg.sft
    mode = choose_loss_mask(tokenizer, s.loss_mask)
    args = SFTConfig(
        **_common_args(cfg, s, stage_dir, device, model),
        num_train_epochs=s.num_train_epochs,
        max_length=s.max_length,
        packing=False,
        assistant_only_loss=mode == "assistant",
        completion_only_loss=mode == "completion",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_examples(dataset, mode),
        processing_class=tokenizer,
        callbacks=[JsonlLogger(stage_dir / "log.jsonl")],
    )
    trainer.loss_mask_mode = mode
    return trainer


def run_sft(cfg: RunConfig, dataset=None, resume_from_checkpoint=None, callbacks=()) -> Path:
    """Supervised fine-tuning on the SFT split's chat messages; returns RUN/sft/adapter."""
    from haiku_kit.modeling import save_adapter

    stage_dir = run_root(cfg) / "sft"
    device = resolve_device(cfg)
    model, tokenizer = load_for(cfg)
    # Data after the model: building splits may import transformers (unsloth must come first).
    data = _cap(_split(dataset if dataset is not None else load_run_data(cfg), "sft"), cfg.data.max_sft_rows)
    resume = resolve_resume(resume_from_checkpoint, stage_dir)
    _fresh_stage_dir(stage_dir, resume)
    trainer = build_sft_trainer(cfg, model, tokenizer, data, stage_dir, device)
    for cb in callbacks:
        trainer.add_callback(cb)
    a = trainer.args
    _record_effective(
        cfg,
        "sft",
        stage_dir,
        {
            "loss_mask": trainer.loss_mask_mode,
            "assistant_only_loss": a.assistant_only_loss,
            "completion_only_loss": a.completion_only_loss,
            "max_steps": a.max_steps,
            "learning_rate": a.learning_rate,
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps,
            "max_length": a.max_length,
            "optim": str(getattr(a.optim, "value", a.optim)),
            "precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "fp32",
            "device": device,
            "train_rows": len(data),
        },
    )
    _train(trainer, stage_dir, resume)
    return save_adapter(trainer.model, tokenizer, stage_dir / "adapter")


# --------------------------------------------------------------------------- GRPO


def grpo_examples(dataset):
    """prompt (chat messages) plus the columns rewards read (topic, haiku, source_id)."""
    if "prompt" not in dataset.column_names or "topic" not in dataset.column_names:
        raise DataError(
            f"the GRPO dataset needs 'prompt' and 'topic' columns (columns: {', '.join(dataset.column_names)})"
        )
    keep = [c for c in ("prompt", "topic", "haiku", "source_id") if c in dataset.column_names]
    return dataset.select_columns(keep)


def resolve_init_adapter(cfg: RunConfig, s: GRPOSettings, init_adapter, previous: Path | None = None):
    """Where GRPO starts: an explicit adapter/checkpoint, the previous stage, RUN/sft, or the base."""
    from haiku_kit.modeling import check_adapter_dir

    choice = init_adapter if init_adapter is not None else previous if previous is not None else s.init
    choice = str(choice)
    sft_adapter = run_root(cfg) / "sft" / "adapter"
    if choice == "base":
        return None
    if choice == "auto":
        return sft_adapter if (sft_adapter / "adapter_config.json").is_file() else None
    if choice == "sft":
        choice = str(sft_adapter)
    path = Path(choice).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"GRPO start point {path} does not exist (grpo.init / init_adapter)")
    if not (path / "adapter_config.json").is_file():
        ckpt = find_checkpoint(path)
        if ckpt is not None and (ckpt / "adapter_config.json").is_file():
            path = ckpt
    return check_adapter_dir(path)


def _reward_spec(s: GRPOSettings):
    from haiku_kit.rewards import RewardSpec

    return RewardSpec.from_dict(s.rewards)


def build_grpo_trainer(cfg: RunConfig, s: GRPOSettings, model, tokenizer, dataset, stage_dir: Path, device: str,
                       train_answers=()):
    install_cpu_logprob_fallback()
    from trl import GRPOConfig, GRPOTrainer

    spec = _reward_spec(s)
    recorder = RewardRecorder(spec.names)
    gen_kwargs = {"eos_token_id": stop_token_ids(model, tokenizer)}
    try:
        args = GRPOConfig(
            **_common_args(cfg, s, stage_dir, device, model),
            num_generations=s.num_generations,
            generation_batch_size=s.generation_batch_size,
            max_completion_length=s.max_completion_length,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repetition_penalty=s.repetition_penalty,
            generation_kwargs=gen_kwargs,
            loss_type=s.loss_type,
            beta=s.beta,
            epsilon=s.epsilon,
            num_iterations=s.num_iterations,
            scale_rewards=s.scale_rewards,
            mask_truncated_completions=s.mask_truncated_completions,
            reward_weights=spec.reward_weights(),
            remove_unused_columns=False,
            log_completions=False,
        )
    except ValueError as err:
        if "divisible" in str(err):
            raise ConfigError(
                f"{err}. Fix: make grpo.per_device_train_batch_size x gradient_accumulation_steps (or "
                f"grpo.generation_batch_size) a multiple of grpo.num_generations={s.num_generations}"
            ) from err
        raise
    monitor = HackingMonitor(s.monitor, train_answers)
    collapse = CollapseCallback(s.collapse)
    recorder.listeners += [
        SampleLogger(stage_dir / "samples.jsonl", s.sample_every, s.samples_to_print),
        monitor,
        collapse,
    ]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=recorder.wrap_all(spec.reward_funcs()),
        args=args,
        train_dataset=grpo_examples(dataset),
        processing_class=tokenizer,
        # monitor before the logger: it adds its shares to the logged entry
        callbacks=[monitor, collapse, JsonlLogger(stage_dir / "log.jsonl")],
    )
    recorder.weights_fn = lambda: trainer.reward_weights.tolist()
    if s.curriculum:
        from haiku_kit.curriculum import CurriculumCallback

        trainer.add_callback(CurriculumCallback(s.curriculum, spec).attach(trainer))
    trainer.reward_spec, trainer.monitor, trainer.collapse = spec, monitor, collapse
    return trainer


def _grpo_effective(trainer, s: GRPOSettings, device: str, init) -> dict:
    a = trainer.args
    values = {
        "init_adapter": str(init) if init else "base",
        "rewards": trainer.reward_spec.to_dict(),
        "curriculum": s.curriculum,
        "loss_type": a.loss_type,
        "beta": a.beta,
        "epsilon": a.epsilon,
        "scale_rewards": a.scale_rewards,
        "mask_truncated_completions": a.mask_truncated_completions,
        "num_generations": a.num_generations,
        "per_device_train_batch_size": a.per_device_train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "generation_batch_size": a.generation_batch_size,
        "steps_per_generation": a.steps_per_generation,
        "num_iterations": a.num_iterations,
        "max_completion_length": a.max_completion_length,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "top_k": a.top_k,
        "stop_token_ids": list(getattr(trainer, "eos_token_ids", [])),
        "learning_rate": a.learning_rate,
        "lr_scheduler_type": str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)),
        "max_grad_norm": a.max_grad_norm,
        "optim": str(getattr(a.optim, "value", a.optim)),
        "max_steps": a.max_steps,
        "precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "fp32",
        "device": device,
    }
    wanted = {
        "loss_type": s.loss_type, "beta": s.beta, "num_generations": s.num_generations,
        "mask_truncated_completions": s.mask_truncated_completions,
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
    }
    for key, value in wanted.items():
        if values[key] != value:  # e.g. Unsloth rewrote it
            logger.warning("GRPO setting %s=%r was changed to %r by the trainer", key, value, values[key])
    return values


def _rollback(trainer, collapse: CollapseCallback, stage_dir: Path) -> Path | None:
    """Load the adapter of the last checkpoint saved before the collapse into the model."""
    good = [s for s in collapse.checkpoints if s < (collapse.detector.fired_at or 0) + 1]
    ckpts = Path(trainer.args.output_dir)
    for step in sorted(good, reverse=True):
        weights = ckpts / f"checkpoint-{step}" / "adapter_model.safetensors"
        if weights.is_file():
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(trainer.model, load_file(str(weights)))
            return weights.parent
    logger.warning("collapse rollback: no checkpoint saved before the collapse; keeping the current weights")
    return None


def run_grpo(
    cfg: RunConfig,
    dataset=None,
    init_adapter: str | Path | None = None,
    resume_from_checkpoint: str | Path | bool | None = None,
    phase: str | None = None,
    previous: Path | None = None,
    callbacks=(),
) -> Path:
    """GRPO with the configured rewards; returns RUN/<grpo stage>/adapter.

    Starts from `init_adapter` (an adapter folder or a GRPO checkpoint-N, to continue training)
    or grpo.init (auto: RUN/sft/adapter if present, else the base model).
    `resume_from_checkpoint` (a checkpoint path, or True/"latest") resumes an interrupted run with
    the Trainer's own mechanism: optimizer, scheduler and step restored.
    `phase` picks a grpo_phases entry (stages "grpo:PHASE")."""
    from haiku_kit.modeling import save_adapter

    s = grpo_phase_settings(cfg, phase)
    stage = f"grpo:{phase}" if phase else "grpo"
    stage_dir = run_root(cfg) / stage_dir_name(cfg, stage if stage in cfg.stages else "grpo")
    device = resolve_device(cfg)
    resume = resolve_resume(resume_from_checkpoint, stage_dir)
    init = resolve_init_adapter(cfg, s, init_adapter, previous)
    logger.info("GRPO %s starts from %s", stage, init or "the base model")
    model, tokenizer = load_for(cfg, adapter=init)
    data = _cap(grpo_examples(_split(dataset if dataset is not None else load_run_data(cfg), "rl")),
                cfg.data.max_rl_rows)
    _fresh_stage_dir(stage_dir, resume)
    trainer = build_grpo_trainer(cfg, s, model, tokenizer, data, stage_dir, device, _sft_answers(cfg))
    for cb in callbacks:
        trainer.add_callback(cb)
    _record_effective(cfg, stage, stage_dir, _grpo_effective(trainer, s, device, init))
    _train(trainer, stage_dir, resume)
    collapse = trainer.collapse
    if collapse.collapsed:
        report = {"step": collapse.detector.fired_at, "reason": collapse.detector.reason,
                  "action": collapse.settings.action}
        if collapse.settings.action == "rollback":
            restored = _rollback(trainer, collapse, stage_dir)
            report["restored_from"] = str(restored) if restored else None
        (stage_dir / "collapse.yaml").write_text(yaml.safe_dump(report), encoding="utf-8")
    return save_adapter(trainer.model, tokenizer, stage_dir / "adapter")


def _sft_answers(cfg: RunConfig) -> list[str]:
    """The SFT split's answers, for the train-overlap share (when the run's data is on disk)."""
    folder = run_data_dir(cfg)
    if not (folder / "manifest.json").is_file():
        return []
    try:
        from haiku_kit.data import load_splits

        return list(load_splits(folder)["sft"]["haiku"])
    except Exception as err:  # noqa: BLE001 - the monitor is optional
        logger.info("train-overlap monitor disabled: %s", err)
        return []


# --------------------------------------------------------------------------- stages / CLI


def run_grpo_stages(cfg: RunConfig, dataset=None, previous: Path | None = None) -> Path | None:
    """Every GRPO stage of cfg.stages in order (plain "grpo" when none is listed); each phase
    continues from the previous adapter (`previous`: where the first starts, None = grpo.init)."""
    for stage in [st for st in cfg.stages if st.startswith("grpo")] or ["grpo"]:
        phase = stage.partition(":")[2] or None
        previous = Path(run_grpo(cfg, dataset, phase=phase, previous=previous))
    return previous


def cli_train(args) -> int:
    """`haiku-kit train {sft,grpo} --preset P --set k=v --out RUN`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(args.preset, list(args.overrides or []), args.out)
        save_config(cfg, run_root(cfg) / "config.yaml")
        if args.stage == "sft":
            out = run_sft(cfg)
        else:
            out = run_grpo_stages(cfg)
    except KeyboardInterrupt:
        print("interrupted; a checkpoint was saved (see above)", file=sys.stderr)
        return 130
    except (HaikuKitError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"adapter saved to {out}")
    return 0
