"""GRPO (TRL GRPOTrainer) with verifiable rewards, from the SFT adapter or the base model.

Three steps, each visible in notebook 04: `start_adapter(cfg)` says where GRPO starts (the one
rule: runs.grpo_starts_from_sft), `grpo_trainer(cfg, model, tokenizer)` builds the real
trl.GRPOTrainer, `trainer.train()` trains, `save_grpo(cfg, trainer)` writes the adapter, logs,
samples and effective settings (and applies a collapse rollback). `run_grpo` does all of it for
one GRPO phase, `run_grpo_phases` for every GRPO phase of the config, each continuing from the
previous one's adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from haiku_kit.config import GRPOSettings, RunConfig, grpo_variant_settings
from haiku_kit.data.splits import load_run_data, sft_answers
from haiku_kit.errors import ConfigError, DataError, ModelLoadError
from haiku_kit.generate.sampling import install_fast_topk_topp
from haiku_kit.model.backends import grpo_generation_args, resolve_device
from haiku_kit.model.chat import stop_token_ids
from haiku_kit.model.load import check_adapter_dir, load_from_config, save_adapter
from haiku_kit.runs import RunPaths, grpo_phases, grpo_starts_from_sft, phase_dir_name, variant_of
from haiku_kit.train import callbacks as live
from haiku_kit.train.callbacks import (
    CollapseCallback,
    HackingMonitor,
    JsonlLogger,
    RewardRecorder,
    SampleLogger,
)
from haiku_kit.train.checkpoints import choose_checkpoint, find_checkpoint
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
from haiku_kit.train.curriculum import CurriculumCallback
from haiku_kit.train.rewards import RewardSpec

logger = logging.getLogger(__name__)


def grpo_examples(dataset):
    """prompt (chat messages) plus the columns rewards read (topic, haiku, source_id)."""
    if "prompt" not in dataset.column_names or "topic" not in dataset.column_names:
        raise DataError(
            f"the GRPO dataset needs 'prompt' and 'topic' columns (columns: {', '.join(dataset.column_names)})"
        )
    keep = [c for c in ("prompt", "topic", "haiku", "source_id") if c in dataset.column_names]
    return dataset.select_columns(keep)


def with_extra_topics(data, source: str, splits, seed: int = 0):
    """The RL prompts plus grpo.extra_topics' prompt-only topics ("" none; "embedded": the kit's
    resources/prompt_topics.txt), shuffled in; a topic near an eval topic of `splits` or equal
    to an RL topic is left out. Rewards judge a poem by its topic, so no poem is needed."""
    if not source:
        return data
    from datasets import Dataset, concatenate_datasets

    from haiku_kit.data.sources import load_topic_list
    from haiku_kit.data.topics import fresh_topics
    from haiku_kit.verify.text import build_prompt

    avoid = list(splits["eval"]["topic"]) if hasattr(splits, "keys") and "eval" in splits else []
    topics = fresh_topics(load_topic_list(source), avoid, list(data["topic"]))
    extra = [{"prompt": build_prompt(t), "topic": t, "haiku": "", "source_id": f"extra:{i}"}
             for i, t in enumerate(topics)]
    extra = Dataset.from_list([{c: row[c] for c in data.column_names} for row in extra],
                              features=data.features)
    logger.info("GRPO prompts: %d of the RL split + %d extra topics", len(data), len(extra))
    return concatenate_datasets([data, extra]).shuffle(seed=seed)


def start_adapter(cfg: RunConfig, s: GRPOSettings | None = None, init_adapter=None,
                  previous: Path | None = None) -> Path | None:
    """Where GRPO starts: an explicit adapter/checkpoint, the previous phase's adapter, or
    grpo.init (runs.grpo_starts_from_sft: "auto" = RUN/sft/adapter when it is there, else the
    base model). None means the base model."""
    s = s or cfg.grpo
    choice = str(init_adapter if init_adapter is not None else previous if previous is not None else s.init)
    sft_adapter = RunPaths.of(cfg).sft_adapter
    if choice in ("auto", "sft", "base"):
        sft_ready = (sft_adapter / "adapter_config.json").is_file()
        if not grpo_starts_from_sft(choice, sft_ready):
            return None
        choice = str(sft_adapter)
    path = Path(choice).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"GRPO start point {path} does not exist (grpo.init / init_adapter)")
    if not (path / "adapter_config.json").is_file():
        ckpt = find_checkpoint(path)
        if ckpt is not None and (ckpt / "adapter_config.json").is_file():
            path = ckpt
    return check_adapter_dir(path)


def build_grpo_trainer(cfg: RunConfig, s: GRPOSettings, model, tokenizer, dataset, phase_dir: Path, device: str,
                       train_answers=()):
    """TRL's GRPOTrainer with the phase's rewards, monitors, collapse detector and curriculum."""
    install_cpu_logprob_fallback()
    install_fast_topk_topp()  # TRL's rollouts call model.generate: CPU top-p inside top-k, same draws
    from trl import GRPOConfig, GRPOTrainer

    spec = RewardSpec.from_dict(s.rewards)
    recorder = RewardRecorder(spec.names)
    fast = bool(cfg.model.fast_inference)
    generation = grpo_generation_args(fast, cfg.model.gpu_memory_utilization, stop_token_ids(model, tokenizer))
    try:
        args = trainer_config(GRPOConfig, dict(
            **common_args(cfg, s, phase_dir, device, model),
            num_generations=s.num_generations,
            generation_batch_size=s.generation_batch_size,
            max_completion_length=s.max_completion_length,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repetition_penalty=s.repetition_penalty,
            **generation,
            loss_type=s.loss_type,
            beta=s.beta,
            epsilon=s.epsilon,
            epsilon_high=s.epsilon if s.epsilon_high is None else s.epsilon_high,
            num_iterations=s.num_iterations,
            scale_rewards=s.scale_rewards,
            mask_truncated_completions=s.mask_truncated_completions,
            reward_weights=spec.reward_weights(),
            remove_unused_columns=False,
            log_completions=s.log_completions,
        ), s.trainer_args, "grpo")
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
        SampleLogger(phase_dir / "samples.jsonl", s.sample_every, s.samples_to_print),
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
        callbacks=[monitor, collapse, JsonlLogger(phase_dir / "log.jsonl")],
    )
    recorder.weights_fn = lambda: trainer.reward_weights.tolist()
    if s.curriculum:
        trainer.add_callback(CurriculumCallback(s.curriculum, spec).attach(trainer))
    trainer.reward_spec, trainer.monitor, trainer.collapse = spec, monitor, collapse
    return trainer


def grpo_effective(trainer) -> dict:
    """The settings the GRPO trainer really uses; warns where the trainer changed a configured one."""
    a, kit = trainer.args, trainer.kit_phase
    s, device, init = kit.settings, kit.device, kit.start
    values = {
        "init_adapter": str(init) if init else "base",
        "rewards": trainer.reward_spec.to_dict(),
        "curriculum": s.curriculum,
        "loss_type": a.loss_type,
        "gradient_checkpointing": a.gradient_checkpointing,
        "beta": a.beta,
        "epsilon": a.epsilon,
        "epsilon_high": a.epsilon_high,
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
        "use_vllm": a.use_vllm,
        "generation_kwargs": dict(a.generation_kwargs or {}),
        "learning_rate": a.learning_rate,
        "lr_scheduler_type": enum_value(a.lr_scheduler_type),
        "max_grad_norm": a.max_grad_norm,
        "optim": enum_value(a.optim),
        "max_steps": a.max_steps,
        "precision": precision_name(a),
        "precision_reason": training_precision(device, trainer.model).reason,
        "device": device,
        "report_to": a.report_to,
        "log_completions": a.log_completions,
        "trainer_args": dict(s.trainer_args or {}),
    }
    wanted = {
        "loss_type": s.loss_type, "beta": s.beta, "num_generations": s.num_generations,
        "epsilon_high": s.epsilon if s.epsilon_high is None else s.epsilon_high,
        "mask_truncated_completions": s.mask_truncated_completions,
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
    }
    for key, value in wanted.items():
        if values[key] != value:  # e.g. Unsloth rewrote it
            logger.warning("GRPO setting %s=%r was changed to %r by the trainer", key, value, values[key])
    return values


def _rollback(trainer, collapse: CollapseCallback) -> Path | None:
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


def _phase_dir(cfg: RunConfig, variant: str | None) -> Path:
    phase = f"grpo:{variant}" if variant else "grpo"
    return RunPaths.of(cfg).phase_dir(phase_dir_name(cfg, phase if phase in cfg.phases else "grpo"))


def grpo_trainer(cfg: RunConfig, model, tokenizer, dataset=None, variant: str | None = None,
                 start: Path | None = None, resume_from_checkpoint=None, fresh=False):
    """The trl.GRPOTrainer of one GRPO phase ("grpo", or "grpo:VARIANT") on the RL split (of
    `dataset`, else the run's data), in a clean phase folder (kept when resuming). `start` is
    the adapter the model was loaded with (recorded). Train with trainer.train(), then save_grpo."""
    s = grpo_variant_settings(cfg, variant)
    phase = f"grpo:{variant}" if variant else "grpo"
    phase_dir = _phase_dir(cfg, variant)
    device = resolve_device(cfg)
    splits = dataset if dataset is not None else load_run_data(cfg)
    data = cap_rows(grpo_examples(select_split(splits, "rl")), cfg.data.max_rl_rows)
    data = with_extra_topics(data, s.extra_topics, splits, seed=cfg.seed)
    resume = start_stage(phase_dir, resume_from_checkpoint, fresh)
    trainer = build_grpo_trainer(cfg, s, model, tokenizer, data, phase_dir, device, sft_answers(cfg))
    trainer.kit_phase = KitPhase(phase, phase_dir, device, tokenizer, resume, s, start, len(data))
    record_effective(cfg, phase, phase_dir, grpo_effective(trainer))
    if cfg.live_every > 0:
        live.attach(trainer, every=cfg.live_every)
    return trainer


def save_grpo(cfg: RunConfig, trainer) -> Path:
    """After trainer.train(): logs, effective settings, the collapse report (and rollback when
    grpo.collapse.action=rollback), and the adapter, whose path it returns."""
    kit = trainer.kit_phase
    write_logs(kit.folder)
    record_effective(cfg, kit.phase, kit.folder, grpo_effective(trainer))
    collapse = trainer.collapse
    if collapse.collapsed:
        report = {"step": collapse.detector.fired_at, "reason": collapse.detector.reason,
                  "action": collapse.settings.action}
        if collapse.settings.action == "rollback":
            restored = _rollback(trainer, collapse)
            report["restored_from"] = str(restored) if restored else None
        (kit.folder / "collapse.yaml").write_text(yaml.safe_dump(report), encoding="utf-8")
    return save_adapter(trainer.model, kit.tokenizer, kit.folder / "adapter")


def run_grpo(
    cfg: RunConfig,
    dataset=None,
    init_adapter: str | Path | None = None,
    resume_from_checkpoint: str | Path | bool | None = None,
    variant: str | None = None,
    previous: Path | None = None,
    callbacks=(),
    fresh: bool | str = False,
) -> Path:
    """One GRPO phase with the configured rewards; returns RUN/<grpo phase>/adapter.

    Starts from `init_adapter` (an adapter folder or a GRPO checkpoint-N, to continue training)
    or grpo.init (auto: RUN/sft/adapter if present, else the base model).
    The phase resumes its newest checkpoint by default (optimizer, scheduler and step
    restored); `resume_from_checkpoint` ("latest", a path, False) and `fresh` (start over, the
    old state moved aside; "delete" deletes it) change that (resume.py).
    `variant` picks a grpo_variants entry (phases "grpo:VARIANT")."""
    s = grpo_variant_settings(cfg, variant)
    choose_checkpoint(_phase_dir(cfg, variant), resume_from_checkpoint, fresh)  # before loading
    init = start_adapter(cfg, s, init_adapter, previous)
    logger.info("GRPO %s starts from %s", variant or "grpo", init or "the base model")
    model, tokenizer = load_from_config(cfg, adapter=init)
    trainer = grpo_trainer(
        cfg, model, tokenizer, dataset, variant, init, resume_from_checkpoint, fresh
    )
    for cb in callbacks:
        trainer.add_callback(cb)
    train_phase(trainer)
    return save_grpo(cfg, trainer)


def run_grpo_phases(cfg: RunConfig, dataset=None, previous: Path | None = None,
                    phases: list[str] | None = None, resume=None, fresh=False) -> Path | None:
    """Every GRPO phase of cfg.phases in order (plain "grpo" when none is listed), or `phases`;
    each continues from the previous adapter (`previous`: where the first starts, None = grpo.init).
    `resume`/`fresh` as in run_grpo, for every phase (a checkpoint path: the first phase only)."""
    for phase in (grpo_phases(cfg) or ["grpo"]) if phases is None else phases:
        previous = Path(run_grpo(cfg, dataset, variant=variant_of(phase), previous=previous,
                                 resume_from_checkpoint=resume, fresh=fresh))
        resume = resume if resume in (None, False, True, "latest") else None
    return previous
