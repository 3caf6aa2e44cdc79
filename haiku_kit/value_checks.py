"""Numbers in the training settings, checked before any model loads (one line per problem).

Sentinels: `sft.max_steps = -1` trains `sft.num_train_epochs` epochs instead of a step count.
GRPO has no epoch setting, so `grpo.max_steps` must be a positive number of steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["missing_file_problem", "training_value_problem"]

_POSITIVE_INTS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "save_steps",
    "max_length",
    "max_completion_length",
    "num_generations",
    "num_iterations",
)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_value_problem(prefix: str, settings: Any) -> str | None:
    """Why one stage's settings (sft, or grpo and its phases) cannot train, or None."""
    lr = getattr(settings, "learning_rate", None)
    if not _number(lr) or lr <= 0:
        return f"{prefix}.learning_rate={lr!r}: must be a positive number, e.g. 2e-4"
    steps = getattr(settings, "max_steps", None)
    epochs_allowed = hasattr(settings, "num_train_epochs")
    if (
        not isinstance(steps, int)
        or isinstance(steps, bool)
        or (steps < 1 and not (epochs_allowed and steps == -1))
    ):
        also = f", or -1 to train {prefix}.num_train_epochs epochs" if epochs_allowed else ""
        return f"{prefix}.max_steps={steps!r}: must be a positive number of steps{also}"
    if epochs_allowed and steps == -1:
        epochs = settings.num_train_epochs
        if not _number(epochs) or epochs <= 0:
            return f"{prefix}.num_train_epochs={epochs!r}: must be positive when max_steps=-1"
    for name in _POSITIVE_INTS:
        value = getattr(settings, name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{prefix}.{name}={value!r}: must be a whole number of at least 1"
    warmup = getattr(settings, "warmup_ratio", 0.0)
    if not _number(warmup) or not 0 <= warmup < 1:
        return f"{prefix}.warmup_ratio={warmup!r}: must be at least 0 and below 1"
    return None


def missing_file_problem(key: str, value: str) -> str | None:
    """Why a file setting ("" for none, "embedded" for the kit's own) names no file, or None."""
    if value in ("", "embedded") or Path(value).is_file():
        return None
    return f"{key}={value!r}: no such file (or use 'embedded', or '' for none)"
