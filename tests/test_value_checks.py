"""Training numbers are checked when the config is resolved, before any model loads."""

from __future__ import annotations

import pytest

from haiku_kit.config import list_presets, load_preset
from haiku_kit.errors import ConfigError


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_passes(preset):
    load_preset(preset)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.learning_rate=0", "sft.learning_rate=0.0: must be a positive number"),
        ("grpo.learning_rate=.nan", "grpo.learning_rate=nan: must be a positive number"),
        ("grpo.max_steps=-1", "grpo.max_steps=-1: must be a positive number of steps"),
        ("sft.max_steps=-2", "sft.max_steps=-2: must be a positive number of steps, or -1"),
        ("sft.per_device_train_batch_size=0", "sft.per_device_train_batch_size=0: must be"),
        ("grpo.save_steps=0", "grpo.save_steps=0: must be a whole number of at least 1"),
        ("sft.warmup_ratio=1.5", "sft.warmup_ratio=1.5: must be at least 0 and below 1"),
        ("grpo_variants={a: {max_steps: 0}}", "grpo_variants.a.max_steps=0: must be a positive"),
    ],
)
def test_bad_numbers_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_preset("cpu-smoke", [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sft_epochs_sentinel_is_accepted():
    cfg = load_preset("cpu-smoke", ["sft.max_steps=-1", "sft.num_train_epochs=2"])
    assert cfg.sft.max_steps == -1
    with pytest.raises(ConfigError, match="sft.num_train_epochs=0"):
        load_preset("cpu-smoke", ["sft.max_steps=-1", "sft.num_train_epochs=0"])
