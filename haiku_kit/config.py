"""Run configuration as data: YAML presets (with `base:` inheritance), overrides, config files.

A preset is a YAML file in haiku_kit/resources/presets/. `load_preset(name)` merges it over its
`base` chain and builds a `RunConfig` (schema in settings.py); `apply_overrides(cfg,
["grpo.max_steps=2"])` changes dotted keys with values parsed as YAML scalars. Unknown keys
raise `ConfigError` listing the valid ones. The settings classes are re-exported here, so
`from haiku_kit.config import RunConfig` keeps working.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from haiku_kit.errors import ConfigError
from haiku_kit.settings import (  # noqa: F401 - the schema, re-exported as the config API
    REWARD_PRESETS,
    CollapseSettings,
    DataSettings,
    EvalSettings,
    GRPOSettings,
    LoraSettings,
    ModelSettings,
    MonitorSettings,
    RunConfig,
    SFTSettings,
    deep_merge,
    field_types,
    grpo_phase_settings,
    is_settings_class,
    validate,
)

PRESET_DIR = Path(__file__).resolve().parent / "resources" / "presets"


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
    data = read_yaml(path, "preset file")
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        data = deep_merge(_read_preset(base, (*seen, name)), data)
    data.setdefault("name", path.stem)
    return data


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's data; ConfigError naming the file, line and column when it is not valid."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path}: not UTF-8 text ({err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {path}: not valid YAML ({where}{problem}); fix the file") from None


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
            tp = field_types(cls)[part] if cls is not None else None
            if cls is not None and is_settings_class(tp):
                cls = tp
                valid_here = [f.name for f in dataclasses.fields(tp)]
            else:
                cls = None  # a free-form mapping (grpo_phases, rewards): any key goes
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
    return RunConfig.from_dict(data)


# --------------------------------------------------------------------------- config files


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
    data = read_yaml(path, "config file")
    data.pop("effective", None)
    return RunConfig.from_dict(data)


def resolve_config(preset: str, overrides: list[str], run_dir: str | Path) -> RunConfig:
    """The preset with the overrides applied and output_dir pointing at the run folder."""
    cfg = apply_overrides(load_preset(preset), list(overrides))
    return dataclasses.replace(cfg, output_dir=str(Path(run_dir).resolve()))
