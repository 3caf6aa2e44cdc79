"""Supervised fine-tuning (TRL SFTTrainer) of the config's model on the SFT split.

Three steps, each visible in notebook 03: `sft_trainer(cfg, model, tokenizer)` builds the real
trl.SFTTrainer (change `trainer.args` before training if you like), `trainer.train()` trains,
`save_sft(cfg, trainer)` writes RUN/sft/adapter (LoRA, safetensors), the log CSV and plot and
the settings the trainer really used. `run_sft(cfg)` does all three (the CLI).

trl is imported inside the functions, after the model is loaded: with the Unsloth backend,
`import unsloth` must come first.
"""

from __future__ import annotations

import logging
from pathlib import Path

from haiku_kit.config import RunConfig
from haiku_kit.data.splits import load_run_data
from haiku_kit.errors import DataError
from haiku_kit.model.backends import resolve_device
from haiku_kit.model.chat import text_tokenizer
from haiku_kit.model.load import load_from_config, save_adapter
from haiku_kit.runs import RunPaths
from haiku_kit.train import callbacks as live
from haiku_kit.train.callbacks import JsonlLogger
from haiku_kit.train.checkpoints import choose_checkpoint
from haiku_kit.train.common import (
    KitPhase,
    cap_rows,
    common_args,
    enum_value,
    install_cpu_logprob_fallback,
    precision_name,
    record_effective,
    select_split,
    start_stage,
    train_phase,
    trainer_config,
    training_precision,
    write_logs,
)

logger = logging.getLogger(__name__)


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

    tok = text_tokenizer(tokenizer)
    try:
        template = None if has_generation_markers(tok.chat_template) else get_training_chat_template(tok)
        if is_chat_template_stop_token_trained(tok, chat_template=template):
            return "assistant"
    except Exception as err:  # noqa: BLE001 - an unknown template: TRL cannot patch it
        logger.info("assistant-only loss unavailable (%s); using completion-only loss", err)
    return "completion"


def build_sft_trainer(cfg: RunConfig, model, tokenizer, dataset, phase_dir: Path, device: str):
    """TRL's SFTTrainer over `dataset` (rows with a chat "messages" column), logging to phase_dir."""
    install_cpu_logprob_fallback()
    from trl import SFTConfig, SFTTrainer

    s = cfg.sft
    mode = choose_loss_mask(tokenizer, s.loss_mask)
    args = trainer_config(SFTConfig, dict(
        **common_args(cfg, s, phase_dir, device, model),
        num_train_epochs=s.num_train_epochs,
        max_length=s.max_length,
        packing=False,
        assistant_only_loss=mode == "assistant",
        completion_only_loss=mode == "completion",
        dataset_num_proc=None,
    ), s.trainer_args, "sft")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_examples(dataset, mode),
        processing_class=tokenizer,
        callbacks=[JsonlLogger(phase_dir / "log.jsonl")],
    )
    trainer.loss_mask_mode = mode
    return trainer


def sft_trainer(
    cfg: RunConfig, model, tokenizer, dataset=None, resume_from_checkpoint=None, fresh=False
):
    """The trl.SFTTrainer for this config on the SFT split (of `dataset`, else the run's data).
    RUN/sft resumes its newest checkpoint by default (`resume_from_checkpoint`: "latest", a path,
    False) or, with `fresh`, starts over with the old state moved aside (resume.py). Train with
    trainer.train(resume_from_checkpoint=trainer.kit_phase.resume), then save_sft."""
    phase_dir = RunPaths.of(cfg).phase_dir("sft")
    device = resolve_device(cfg)
    data = cap_rows(select_split(dataset if dataset is not None else load_run_data(cfg), "sft"),
                    cfg.data.max_sft_rows)
    resume = start_stage(phase_dir, resume_from_checkpoint, fresh)
    trainer = build_sft_trainer(cfg, model, tokenizer, data, phase_dir, device)
    trainer.kit_phase = KitPhase("sft", phase_dir, device, tokenizer, resume, cfg.sft, rows=len(data))
    record_effective(cfg, "sft", phase_dir, sft_effective(trainer))
    if cfg.live_every > 0:
        live.attach(trainer, every=cfg.live_every)
    return trainer


def sft_effective(trainer) -> dict:
    """The settings the SFT trainer really uses."""
    a, kit = trainer.args, trainer.kit_phase
    return {
        "loss_mask": trainer.loss_mask_mode,
        "assistant_only_loss": a.assistant_only_loss,
        "completion_only_loss": a.completion_only_loss,
        "max_steps": a.max_steps,
        "learning_rate": a.learning_rate,
        "per_device_train_batch_size": a.per_device_train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "gradient_checkpointing": a.gradient_checkpointing,
        "max_length": a.max_length,
        "optim": enum_value(a.optim),
        "precision": precision_name(a),
        "precision_reason": training_precision(kit.device, trainer.model).reason,
        "device": kit.device,
        "train_rows": kit.rows,
        "report_to": a.report_to,
        "trainer_args": dict(kit.settings.trainer_args or {}),
    }


def save_sft(cfg: RunConfig, trainer) -> Path:
    """After trainer.train(): the log CSV and plot, the effective settings (as trained, with any
    change made to trainer.args), and the adapter in RUN/sft/adapter, whose path it returns."""
    kit = trainer.kit_phase
    write_logs(kit.folder)
    record_effective(cfg, "sft", kit.folder, sft_effective(trainer))
    return save_adapter(trainer.model, kit.tokenizer, kit.folder / "adapter")


def run_sft(
    cfg: RunConfig, dataset=None, resume_from_checkpoint=None, callbacks=(), fresh=False,
    then=None,
) -> Path:
    """Load the config's model with a fresh LoRA, train it on the SFT split (resuming RUN/sft's
    newest checkpoint unless `fresh`), save; returns RUN/sft/adapter, or what
    `then(model, tokenizer, adapter)` returns (the CLI: distill.distil_after_sft)."""
    # A bad --resume/--fresh fails before the model loads.
    choose_checkpoint(RunPaths.of(cfg).phase_dir("sft"), resume_from_checkpoint, fresh)
    model, tokenizer = load_from_config(cfg)
    # Data after the model: building splits may import transformers (unsloth must come first).
    trainer = sft_trainer(cfg, model, tokenizer, dataset, resume_from_checkpoint, fresh)
    for cb in callbacks:
        trainer.add_callback(cb)
    train_phase(trainer)
    adapter = save_sft(cfg, trainer)
    return then(model, tokenizer, adapter) if then else adapter
