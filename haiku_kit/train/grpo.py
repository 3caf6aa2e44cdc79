"""GRPO (TRL GRPOTrainer) with verifiable rewards, from the SFT adapter or the base model.

The steps notebook 04 shows: `start_adapter(cfg)` says where GRPO starts (the one rule:
runs.grpo_starts_from_sft), `grpo_setup(cfg, model, tokenizer)` returns what GRPOTrainer is built
from (GRPOConfig's keyword arguments as a dict, the wrapped reward functions, the prompts, the
kit's callbacks), the notebook writes `GRPOConfig(**kit.args)` and `GRPOTrainer(...)` itself,
`kit.attach(trainer)` adds the kit's bookkeeping, `trainer.train()` trains, `save_grpo(cfg,
trainer)` writes the adapter, logs, samples and effective settings (and applies a collapse
rollback). `grpo_trainer` makes the same calls (GRPOSetup.trainer); `run_grpo` does all of it for
one GRPO phase, `run_grpo_phases` for every GRPO phase of the config, each continuing from the
previous one's adapter.

Every GRPOSettings field that GRPOConfig also has goes to TRL by name (common.passthrough_names),
so a TRL setting is one field of GRPOSettings; grpo_translations keeps the kit's few own meanings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from haiku_kit import ranks
from haiku_kit.config import GRPOSettings, RunConfig, check_launch, grpo_variant_settings
from haiku_kit.data.splits import load_run_data, sft_answers
from haiku_kit.errors import ConfigError, DataError, ModelLoadError
from haiku_kit.generate.sampling import install_fast_topk_topp
from haiku_kit.model.backends import grpo_generation_args, resolve_device
from haiku_kit.model.chat import stop_token_ids
from haiku_kit.model.load import check_adapter_dir, load_from_config
from haiku_kit.runs import RunPaths, grpo_phases, grpo_starts_from_sft, phase_dir_name, variant_of
from haiku_kit.train.callbacks import (
    CollapseCallback,
    HackingMonitor,
    JsonlLogger,
    RewardRecorder,
    SampleLogger,
)
from haiku_kit.train.callbacks import attach as attach_live_view
from haiku_kit.train.checkpoints import choose_checkpoint, find_checkpoint
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


def grpo_translations(s: GRPOSettings) -> dict:
    """The GRPOSettings fields whose kit meaning differs from GRPOConfig's: epsilon_high None is
    epsilon (passed explicitly either way: given none, Unsloth sets 0.28 for loss_type="dapo"
    while TRL keeps epsilon, so the backends would differ)."""
    return {"epsilon_high": s.epsilon if s.epsilon_high is None else s.epsilon_high}


@dataclass
class GRPOSetup:
    """What trl.GRPOTrainer is built from, as notebook 04 shows it: `args` (GRPOConfig's keyword
    arguments, a dict to read and edit), `reward_funcs` (the spec's rewards, each wrapped so
    every scored batch also reaches the sample log, the reward-hacking monitor and the collapse
    detector), `train_dataset` (the RL prompts with the columns rewards read), `callbacks`
    (monitor, collapse detector, log). The notebook and the CLI (`trainer()`) make the same two
    TRL calls with them, then `attach(trainer)`."""

    args: dict[str, Any]
    reward_funcs: list
    train_dataset: Any
    callbacks: list
    spec: RewardSpec
    settings: GRPOSettings
    recorder: RewardRecorder
    monitor: HackingMonitor
    collapse: CollapseCallback
    phase: KitPhase | None = None  # None: a bare trainer (no phase folder bookkeeping)
    cfg: RunConfig | None = None

    def config(self):
        """trl.GRPOConfig(**self.args); TRL's batch-size error said as the kit's settings."""
        from trl import GRPOConfig

        try:
            return GRPOConfig(**self.args)
        except ValueError as err:
            if "divisible" in str(err):
                n = self.settings.num_generations
                raise ConfigError(
                    f"{err}. Fix: make grpo.per_device_train_batch_size x gradient_accumulation_steps "
                    f"(or grpo.generation_batch_size) a multiple of grpo.num_generations={n}"
                ) from err
            raise

    def trainer(self, model, tokenizer):
        """The kit's own path to what notebook 04's cells write out: GRPOConfig, GRPOTrainer, attach."""
        from trl import GRPOTrainer

        args = self.config()
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=self.reward_funcs,
            args=args,
            train_dataset=self.train_dataset,
            processing_class=tokenizer,
            callbacks=self.callbacks,
        )
        return self.attach(trainer)

    def attach(self, trainer):
        """After GRPOTrainer(...): the recorder reads the trainer's live reward weights, the
        curriculum (grpo.curriculum) changes them, saving finds what it needs on the trainer
        (kit_phase, reward_spec, monitor, collapse); the effective settings are recorded and the
        live view attached. Returns the trainer."""
        self.recorder.weights_fn = lambda: trainer.reward_weights.tolist()
        if self.settings.curriculum:
            trainer.add_callback(CurriculumCallback(self.settings.curriculum, self.spec).attach(trainer))
        trainer.reward_spec, trainer.monitor, trainer.collapse = self.spec, self.monitor, self.collapse
        if self.phase is not None:
            trainer.kit_phase = self.phase
            record_effective(self.cfg, self.phase.phase, self.phase.folder, grpo_effective(trainer))
            if self.cfg.live_every > 0:
                attach_live_view(trainer, every=self.cfg.live_every)
        return trainer


def grpo_config_args(cfg: RunConfig, s: GRPOSettings, phase_dir: Path, device: str, model,
                     stop_ids) -> dict[str, Any]:
    """GRPOConfig's keyword arguments for one phase: every GRPOSettings field GRPOConfig has, by
    name (common.config_args), the kit's translations (grpo_translations) and choices (how
    completions are generated, the reward weights, the dataset columns rewards read kept), then
    grpo.trainer_args."""
    from trl import GRPOConfig

    fast = bool(cfg.model.fast_inference)
    generation = grpo_generation_args(fast, cfg.model.gpu_memory_utilization, stop_ids, s.use_vllm)
    return config_args(GRPOConfig, cfg, s, phase_dir, device, model, dict(
        **generation,
        **grpo_translations(s),
        reward_weights=RewardSpec.from_dict(s.rewards).reward_weights(),
        remove_unused_columns=False,
    ), "grpo")


def grpo_pieces(cfg: RunConfig, s: GRPOSettings, model, tokenizer, dataset, phase_dir: Path, device: str,
                train_answers=()) -> GRPOSetup:
    """GRPOTrainer's pieces with the phase's rewards, monitors, collapse detector and log."""
    install_cpu_logprob_fallback()
    install_fast_topk_topp()  # TRL's rollouts call model.generate: CPU top-p inside top-k, drawn among them
    spec = RewardSpec.from_dict(s.rewards)
    recorder = RewardRecorder(spec.names)
    args = grpo_config_args(cfg, s, phase_dir, device, model, stop_token_ids(model, tokenizer))
    monitor = HackingMonitor(s.monitor, train_answers)
    collapse = CollapseCallback(s.collapse)
    recorder.listeners += [
        SampleLogger(phase_dir / "samples.jsonl", s.sample_every, s.samples_to_print),
        monitor,
        collapse,
    ]
    return GRPOSetup(
        args=args,
        reward_funcs=recorder.wrap_all(spec.reward_funcs()),
        train_dataset=grpo_examples(dataset),
        # monitor before the logger: it adds its shares to the logged entry
        callbacks=[monitor, collapse, JsonlLogger(phase_dir / "log.jsonl")],
        spec=spec, settings=s, recorder=recorder, monitor=monitor, collapse=collapse,
    )


def build_grpo_trainer(cfg: RunConfig, s: GRPOSettings, model, tokenizer, dataset, phase_dir: Path, device: str,
                       train_answers=()):
    """TRL's GRPOTrainer with the phase's rewards, monitors, collapse detector and curriculum."""
    setup = grpo_pieces(cfg, s, model, tokenizer, dataset, phase_dir, device, train_answers)
    return setup.trainer(model, tokenizer)


def grpo_effective(trainer) -> dict:
    """The settings the GRPO trainer really uses (every GRPOSettings field GRPOConfig has, and the
    kit's own choices); warns where the trainer changed a configured one."""
    a, kit = trainer.args, trainer.kit_phase
    s, device, init = kit.settings, kit.device, kit.start
    names = passthrough_names(s, type(a))
    values = {
        "init_adapter": str(init) if init else "base",
        "rewards": trainer.reward_spec.to_dict(),
        "curriculum": s.curriculum,
        **{name: plain(getattr(a, name)) for name in names},
        "gradient_checkpointing": a.gradient_checkpointing,
        "steps_per_generation": a.steps_per_generation,
        **batch_effective(a),  # global_batch: completions per optimizer step
        "stop_token_ids": list(getattr(trainer, "eos_token_ids", [])),
        "use_vllm": a.use_vllm,
        "generation_kwargs": dict(a.generation_kwargs or {}),
        "precision": precision_name(a),
        "precision_reason": training_precision(device, trainer.model).reason,
        "device": device,
        "trainer_args": dict(s.trainer_args or {}),
    }
    # As configured: the settings passed by name (and translated), where set and not overridden
    # by trainer_args; the common ones the kit computes (max_steps, optim, ...) are not compared.
    wanted = {name: getattr(s, name) for name in names}
    wanted.update(grpo_translations(s))
    skip = set(s.trainer_args or {}) | {"max_steps", "optim", "report_to"}
    for key, value in wanted.items():
        if value is not None and key not in skip and values[key] != value:  # e.g. Unsloth rewrote it
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


def grpo_setup(cfg: RunConfig, model, tokenizer, dataset=None, variant: str | None = None,
               start: Path | None = None, resume_from_checkpoint=None, fresh=False) -> GRPOSetup:
    """The pieces of one GRPO phase's trl.GRPOTrainer ("grpo", or "grpo:VARIANT") on the RL split
    (of `dataset`, else the run's data), in a clean phase folder (kept when resuming). `start`
    is the adapter the model was loaded with (recorded)."""
    s = grpo_variant_settings(cfg, variant)
    phase = f"grpo:{variant}" if variant else "grpo"
    phase_dir = _phase_dir(cfg, variant)
    device = resolve_device(cfg)
    splits = dataset if dataset is not None else load_run_data(cfg)
    data = cap_rows(grpo_examples(select_split(splits, "rl")), cfg.data.max_rl_rows)
    data = with_extra_topics(data, s.extra_topics, splits, seed=cfg.seed)
    resume = start_stage(phase_dir, resume_from_checkpoint, fresh)
    setup = grpo_pieces(cfg, s, model, tokenizer, data, phase_dir, device, sft_answers(cfg))
    setup.phase = KitPhase(phase, phase_dir, device, tokenizer, resume, s, start, len(data))
    setup.cfg = cfg
    return setup


def grpo_trainer(cfg: RunConfig, model, tokenizer, dataset=None, variant: str | None = None,
                 start: Path | None = None, resume_from_checkpoint=None, fresh=False):
    """The trl.GRPOTrainer of grpo_setup. Train with trainer.train(), then save_grpo."""
    setup = grpo_setup(cfg, model, tokenizer, dataset, variant, start, resume_from_checkpoint, fresh)
    return setup.trainer(model, tokenizer)


def save_grpo(cfg: RunConfig, trainer) -> Path:
    """After trainer.train(): logs, effective settings, the collapse report (and rollback when
    grpo.collapse.action=rollback), and the adapter, whose path it returns."""
    kit = trainer.kit_phase
    write_logs(kit.folder)
    record_effective(cfg, kit.phase, kit.folder, grpo_effective(trainer))
    collapse = trainer.collapse
    if collapse.collapsed:  # every process: the detector decides on all processes' rewards
        report = {"step": collapse.detector.fired_at, "reason": collapse.detector.reason,
                  "action": collapse.settings.action}
        if collapse.settings.action == "rollback":
            restored = _rollback(trainer, collapse)
            report["restored_from"] = str(restored) if restored else None
        ranks.main_only((kit.folder / "collapse.yaml").write_text, yaml.safe_dump(report),
                        encoding="utf-8")
    return save_trained_adapter(trainer, kit.folder / "adapter")


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
    check_launch(cfg)  # a launch of several processes: hf backend
    s = grpo_variant_settings(cfg, variant)
    choose_checkpoint(_phase_dir(cfg, variant), resume_from_checkpoint, fresh)  # before loading
    init = start_adapter(cfg, s, init_adapter, previous)
    logger.info("GRPO %s starts from %s", variant or "grpo", init or "the base model")
    model, tokenizer = load_from_config(cfg, adapter=init, rollouts=True)
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
