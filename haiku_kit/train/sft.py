"""Supervised fine-tuning (TRL SFTTrainer) of the config's model on the SFT split.

The steps notebook 03 shows: `sft_setup(cfg, model, tokenizer)` returns what SFTTrainer is built
from (SFTConfig's keyword arguments as a dict, the formatted dataset, the kit's callbacks), the
notebook writes `SFTConfig(**kit.args)` and `SFTTrainer(...)` itself, `kit.attach(trainer)` adds
the kit's bookkeeping, `trainer.train()` trains, `save_sft(cfg, trainer)` writes RUN/sft/adapter
(LoRA, safetensors), the log CSV and plot and the settings the trainer really used.
`sft_trainer` makes the same calls (SFTSetup.trainer); `run_sft(cfg)` does it all (the CLI).

Every SFTSettings field that SFTConfig also has goes to TRL by name (common.passthrough_names).
trl is imported inside the functions, after the model is loaded: with the Unsloth backend,
`import unsloth` must come first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haiku_kit.config import RunConfig, check_launch
from haiku_kit.data.splits import load_run_data
from haiku_kit.errors import DataError
from haiku_kit.model.backends import resolve_device
from haiku_kit.model.chat import text_tokenizer
from haiku_kit.model.load import load_from_config
from haiku_kit.runs import RunPaths
from haiku_kit.train.callbacks import JsonlLogger
from haiku_kit.train.callbacks import attach as attach_live_view
from haiku_kit.train.checkpoints import choose_checkpoint
from haiku_kit.train.common import (
    KitPhase,
    batch_effective,
    cap_rows,
    config_args,
    install_cpu_logprob_fallback,
    passthrough_names,
    plain,
    precision_name,
    record_effective,
    save_trained_adapter,
    select_split,
    start_stage,
    train_phase,
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


@dataclass
class SFTSetup:
    """What trl.SFTTrainer is built from, as notebook 03 shows it: `args` (SFTConfig's keyword
    arguments, a dict to read and edit), `train_dataset` (formatted for the loss mask: a
    "messages" column, or prompt/completion), `callbacks` (the kit's log). The notebook and the
    CLI (`trainer()`) make the same two TRL calls with them, then `attach(trainer)`."""

    args: dict[str, Any]
    train_dataset: Any
    callbacks: list
    loss_mask: str  # "assistant" or "completion"
    phase: KitPhase | None = None  # None: a bare trainer (distill.py records its own phase)
    cfg: RunConfig | None = None

    def config(self):
        """trl.SFTConfig(**self.args)."""
        from trl import SFTConfig

        return SFTConfig(**self.args)

    def trainer(self, model, tokenizer):
        """The kit's own path to what notebook 03's cells write out: SFTConfig, SFTTrainer, attach."""
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=self.config(),
            train_dataset=self.train_dataset,
            processing_class=tokenizer,
            callbacks=self.callbacks,
        )
        return self.attach(trainer)

    def attach(self, trainer):
        """After SFTTrainer(...): what saving needs (trainer.kit_phase), the effective settings
        recorded, the live view. Returns the trainer."""
        trainer.loss_mask_mode = self.loss_mask
        if self.phase is not None:
            trainer.kit_phase = self.phase
            record_effective(self.cfg, self.phase.phase, self.phase.folder, sft_effective(trainer))
            if self.cfg.live_every > 0:
                attach_live_view(trainer, every=self.cfg.live_every)
        return trainer


def sft_pieces(cfg: RunConfig, model, tokenizer, dataset, phase_dir: Path, device: str) -> SFTSetup:
    """SFTTrainer's pieces over `dataset` (rows with a chat "messages" column), logging to phase_dir."""
    install_cpu_logprob_fallback()
    mode = choose_loss_mask(tokenizer, cfg.sft.loss_mask)
    args = sft_config_args(cfg, phase_dir, device, model, mode)
    return SFTSetup(args, sft_examples(dataset, mode), [JsonlLogger(phase_dir / "log.jsonl")], mode)


def sft_config_args(cfg: RunConfig, phase_dir: Path, device: str, model, mode: str) -> dict[str, Any]:
    """SFTConfig's keyword arguments: every SFTSettings field SFTConfig has, by name
    (common.config_args), the kit's choices (the loss mask `mode`, no packing), then
    sft.trainer_args."""
    from trl import SFTConfig

    return config_args(SFTConfig, cfg, cfg.sft, phase_dir, device, model, {
        "packing": False,
        "assistant_only_loss": mode == "assistant",
        "completion_only_loss": mode == "completion",
        "dataset_num_proc": None,
    }, "sft")


def build_sft_trainer(cfg: RunConfig, model, tokenizer, dataset, phase_dir: Path, device: str):
    """TRL's SFTTrainer over `dataset` (rows with a chat "messages" column), logging to phase_dir."""
    return sft_pieces(cfg, model, tokenizer, dataset, phase_dir, device).trainer(model, tokenizer)


def sft_setup(cfg: RunConfig, model, tokenizer, dataset=None, resume_from_checkpoint=None,
              fresh=False) -> SFTSetup:
    """The pieces of the trl.SFTTrainer for this config on the SFT split (of `dataset`, else the
    run's data), in RUN/sft, which resumes its newest checkpoint by default
    (`resume_from_checkpoint`: "latest", a path, False) or, with `fresh`, starts over with the
    old state moved aside (resume.py)."""
    phase_dir = RunPaths.of(cfg).phase_dir("sft")
    device = resolve_device(cfg)
    data = cap_rows(select_split(dataset if dataset is not None else load_run_data(cfg), "sft"),
                    cfg.data.max_sft_rows)
    resume = start_stage(phase_dir, resume_from_checkpoint, fresh)
    setup = sft_pieces(cfg, model, tokenizer, data, phase_dir, device)
    setup.phase = KitPhase("sft", phase_dir, device, tokenizer, resume, cfg.sft, rows=len(data))
    setup.cfg = cfg
    return setup


def sft_trainer(
    cfg: RunConfig, model, tokenizer, dataset=None, resume_from_checkpoint=None, fresh=False
):
    """The trl.SFTTrainer of sft_setup. Train with
    trainer.train(resume_from_checkpoint=trainer.kit_phase.resume), then save_sft."""
    return sft_setup(cfg, model, tokenizer, dataset, resume_from_checkpoint, fresh).trainer(model, tokenizer)


def sft_effective(trainer) -> dict:
    """The settings the SFT trainer really uses: every SFTSettings field SFTConfig has, and the
    kit's own choices."""
    from haiku_kit.config import SFTSettings

    a, kit = trainer.args, trainer.kit_phase
    return {
        "loss_mask": trainer.loss_mask_mode,
        "assistant_only_loss": a.assistant_only_loss,
        "completion_only_loss": a.completion_only_loss,
        **{name: plain(getattr(a, name)) for name in passthrough_names(SFTSettings, type(a))},
        "gradient_checkpointing": a.gradient_checkpointing,
        **batch_effective(a),
        "precision": precision_name(a),
        "precision_reason": training_precision(kit.device, trainer.model).reason,
        "device": kit.device,
        "train_rows": kit.rows,
        "trainer_args": dict(kit.settings.trainer_args or {}),
    }


def save_sft(cfg: RunConfig, trainer) -> Path:
    """After trainer.train(): the log CSV and plot, the effective settings (as trained, with any
    change made to trainer.args), and the adapter in RUN/sft/adapter, whose path it returns."""
    kit = trainer.kit_phase
    write_logs(kit.folder)
    record_effective(cfg, "sft", kit.folder, sft_effective(trainer))
    return save_trained_adapter(trainer, kit.folder / "adapter")


def run_sft(
    cfg: RunConfig, dataset=None, resume_from_checkpoint=None, callbacks=(), fresh=False,
    then=None,
) -> Path:
    """Load the config's model with a fresh LoRA, train it on the SFT split (resuming RUN/sft's
    newest checkpoint unless `fresh`), save; returns RUN/sft/adapter, or what
    `then(model, tokenizer, adapter)` returns (the CLI: distill.distil_after_sft)."""
    check_launch(cfg)  # a launch of several processes: hf backend
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
