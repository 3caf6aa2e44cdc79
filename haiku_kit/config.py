"""Run configuration as data: dataclasses, YAML presets (with `base:` inheritance) and overrides.

A preset is a YAML file in haiku_kit/resources/presets/. `load_preset(name)` merges it over its
`base` chain and builds a `RunConfig`; `apply_overrides(cfg, ["grpo.max_steps=2"])` changes
dotted keys with values parsed as YAML scalars. Unknown keys raise `ConfigError` listing the
valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from haiku_kit.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "resources" / "presets"


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    name: str = "embedded"  # "embedded", a local folder, or a hub id (GPU presets)
    backend: str = "auto"  # auto | hf | unsloth
    load_in_4bit: bool = False
    max_seq_length: int = 512
    device: str = "auto"  # auto | cpu | cuda
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    source: str = "embedded"  # "embedded", a csv/jsonl/json path, or "hub:NAME"
    splits_dir: str | None = None  # an existing data.build_splits folder; None -> RUN/data
    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3])  # sft, rl, eval
    min_similarity: float = 0.5
    max_sft_rows: int | None = None  # cap the SFT split (CPU presets)
    max_rl_rows: int | None = None  # cap the RL split


@dataclass
class SFTSettings:
    max_steps: int = 100  # <= 0: train num_train_epochs instead
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    max_length: int = 256
    optim: str = "adamw_torch"
    # "assistant": SFTConfig.assistant_only_loss on the chat "messages" column;
    # "completion": prompt/completion columns with completion_only_loss. "auto" tries
    # assistant and falls back to completion when the template cannot mask the turn.
    loss_mask: str = "auto"
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2


@dataclass
class MonitorSettings:
    """Thresholds of the reward-hacking monitor (shares in [0, 1]); crossing one warns loudly."""

    copy_prompt: float = 0.2
    train_overlap: float = 0.2
    zero_std: float = 0.8
    clipped: float = 0.5


@dataclass
class CollapseSettings:
    enabled: bool = True
    metric: str = "mean"  # mean | max (of the weighted reward per generation batch)
    window: int = 5  # rolling window of earlier steps the current value is compared with
    drop: float = 0.5  # fires when value < baseline - drop * max(|baseline|, min_scale)
    min_scale: float = 0.5
    patience: int = 2  # consecutive bad steps before firing
    empty_share: float = 0.5  # share of empty completions that counts as a bad step
    action: str = "stop"  # stop | rollback (final adapter = last checkpoint before collapse)


@dataclass
class GRPOSettings:
    init: str = "auto"  # auto (RUN/sft/adapter if present, else base) | base | sft | a path
    max_steps: int = 20
    learning_rate: float = 5e-6
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 0.1
    optim: str = "adamw_torch"
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    generation_batch_size: int | None = None  # None: per_device_train_batch_size * accumulation
    num_generations: int = 4
    max_completion_length: int = 40
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64  # raw sampling without top-k produced junk on the 270M model
    min_p: float | None = None
    repetition_penalty: float = 1.0
    # Set explicitly because Unsloth and TRL versions change their defaults silently.
    loss_type: str = "dapo"
    beta: float = 0.0
    epsilon: float = 0.2
    num_iterations: int = 1
    scale_rewards: str = "group"
    # Truncated completions keep their (low) reward: masking them would hide rambling.
    mask_truncated_completions: bool = False
    rewards: Any = "dense"  # a RewardSpec preset name, or {names: [...], weights: [...]}
    curriculum: list[dict] | None = None  # RewardCurriculum stages [{until_step, weights|scales}]
    logging_steps: int = 1
    save_steps: int = 10
    save_total_limit: int = 3
    sample_every: int = 1  # write prompts/completions/rewards to samples.jsonl every N steps
    samples_to_print: int = 2
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    collapse: CollapseSettings = field(default_factory=CollapseSettings)


@dataclass
class EvalSettings:
    n_prompts: int = 50
    k: int = 4
    max_new_tokens: int = 64
    batch_size: int = 8
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    seed: int = 0

    @property
    def n(self) -> int:
        return self.n_prompts

    @property
    def sampling(self):
        """These settings as haiku_kit.evaluate.SamplingSettings."""
        from haiku_kit.evaluate import SamplingSettings

        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTSettings = field(default_factory=SFTSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output_dir: str = "runs/run"
    seed: int = 0
    name: str = "custom"
    description: str = ""
    # Stages in order: "sft", "grpo" (cfg.grpo as is) or "grpo:PHASE" (cfg.grpo updated with
    # grpo_phases[PHASE]; a PHASE that is not listed but names a RewardSpec preset means
    # {rewards: PHASE}). Each GRPO phase starts from the previous stage's adapter.
    stages: list[str] = field(default_factory=lambda: ["sft", "grpo"])
    grpo_phases: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        cfg = _build(cls, data or {}, "")
        validate(cfg)
        return cfg


# --------------------------------------------------------------------------- building / types


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}; valid keys"
                f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(valid)}"
            )
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(tp, value, key: str):
    """Check `value` against the annotation `tp`, converting int->float and nested dicts."""
    if _is_dataclass_type(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if tp is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


CHOICES = {
    "model.backend": ("auto", "hf", "unsloth"),
    "model.device": ("auto", "cpu", "cuda"),
    "sft.loss_mask": ("auto", "assistant", "completion"),
    "grpo.collapse.metric": ("mean", "max"),
    "grpo.collapse.action": ("stop", "rollback"),
    "grpo.scale_rewards": ("group", "batch", "none"),
    "grpo.loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
}


def _get(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: RunConfig) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")
    for stage in cfg.stages:
        kind, _, phase = stage.partition(":")
        if kind not in ("sft", "grpo") or (kind == "sft" and phase):
            raise ConfigError(f"stages: unknown stage {stage!r}; use sft, grpo or grpo:PHASE")
    for phase in cfg.grpo_phases:
        grpo_phase_settings(cfg, phase)  # unknown keys in a phase fail at load time
    g = cfg.grpo
    if g.num_generations < 2:
        raise ConfigError(f"grpo.num_generations={g.num_generations}: GRPO needs at least 2")
    gen_batch = g.generation_batch_size or g.per_device_train_batch_size * g.gradient_accumulation_steps
    if gen_batch % g.num_generations:
        raise ConfigError(
            f"generation batch {gen_batch} (grpo.generation_batch_size, or per_device_train_batch_size "
            f"{g.per_device_train_batch_size} x gradient_accumulation_steps "
            f"{g.gradient_accumulation_steps}) is not divisible by grpo.num_generations="
            f"{g.num_generations}: each prompt's {g.num_generations} completions must land in the same "
            f"batch. Fix: set grpo.per_device_train_batch_size (or generation_batch_size) to a multiple "
            f"of {g.num_generations}, e.g. grpo.per_device_train_batch_size={g.num_generations}."
        )
    if g.generation_batch_size and g.generation_batch_size % g.per_device_train_batch_size:
        raise ConfigError(
            f"grpo.generation_batch_size={g.generation_batch_size} must be a multiple of "
            f"grpo.per_device_train_batch_size={g.per_device_train_batch_size}"
        )


# --------------------------------------------------------------------------- presets


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_preset(name: str, seen: tuple[str, ...] = ()) -> dict:
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(list_presets())}")
    if name in seen:
        raise ConfigError(f"preset {name!r} inherits from itself: {' -> '.join((*seen, name))}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        data = deep_merge(_read_preset(base, (*seen, name)), data)
    data.setdefault("name", path.stem)
    return data


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("rewards",):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_preset(name: str, overrides: list[str] | None = None) -> RunConfig:
    """Build the config of a packaged preset (or a YAML file path), then apply overrides."""
    data = _read_preset(name)
    data["name"] = name if not Path(name).suffix else data.get("name", Path(name).stem)
    cfg = RunConfig.from_dict(data)
    return apply_overrides(cfg, overrides or [])


# --------------------------------------------------------------------------- overrides


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. grpo.max_steps=2)")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(cfg: RunConfig, overrides: list[str] | dict) -> RunConfig:
    """Return a new config with dotted `key=value` overrides applied (values parsed as YAML)."""
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    data = cfg.to_dict()
    for key, value in items:
        node, valid_here = data, [f.name for f in dataclasses.fields(RunConfig)]
        cls: Any = RunConfig
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if cls is not None and part not in valid_here:
                where = ".".join(parts[:i])
                raise ConfigError(
                    f"unknown config key {key!r}; valid keys{' under ' + where if where else ''}: "
                    f"{', '.join(valid_here)}"
                )
            if last:
                node[part] = value
                break
            tp = _hints(cls)[part] if cls is not None else None
            if cls is not None and _is_dataclass_type(tp):
                cls = tp
                valid_here = [f.name for f in dataclasses.fields(tp)]
            else:
                cls = None  # a free-form mapping (grpo_phases, rewards): any key goes
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
    return RunConfig.from_dict(data)


# --------------------------------------------------------------------------- stages


def grpo_phase_settings(cfg: RunConfig, phase: str | None) -> GRPOSettings:
    """cfg.grpo with the phase's changes applied (phase None or "" -> cfg.grpo)."""
    if not phase:
        return cfg.grpo
    if phase in cfg.grpo_phases:
        changes = cfg.grpo_phases[phase] or {}
    else:
        from haiku_kit.rewards import RewardSpec

        try:
            RewardSpec.preset(phase)
        except Exception as err:
            raise ConfigError(
                f"GRPO phase {phase!r} is neither in grpo_phases ({', '.join(cfg.grpo_phases) or 'none'}) "
                f"nor a reward preset name"
            ) from err
        changes = {"rewards": phase}
    merged = deep_merge(dataclasses.asdict(cfg.grpo), changes)
    return _build(GRPOSettings, merged, f"grpo_phases.{phase}.")


def stage_dir_name(cfg: RunConfig, stage: str) -> str:
    """Folder name in the run folder: sft, grpo for the last GRPO stage, grpo-PHASE for earlier ones."""
    if stage == "sft":
        return "sft"
    grpo_stages = [s for s in cfg.stages if s.startswith("grpo")]
    if not grpo_stages or stage == grpo_stages[-1]:
        return "grpo"
    return "grpo-" + (stage.partition(":")[2] or str(grpo_stages.index(stage)))


def save_config(cfg: RunConfig, path: str | Path, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict()
    if extra is None and path.is_file():  # keep the effective values training recorded
        previous = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        extra = {"effective": previous["effective"]} if previous.get("effective") else None
    if extra:
        data = {**data, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.pop("effective", None)
    return RunConfig.from_dict(data)


def resolve_config(preset: str, overrides: list[str], run_dir: str | Path) -> RunConfig:
    """The preset with the overrides applied and output_dir pointing at the run folder."""
    cfg = apply_overrides(load_preset(preset), list(overrides))
    return dataclasses.replace(cfg, output_dir=str(Path(run_dir).resolve()))
