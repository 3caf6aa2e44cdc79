"""Make a batch scoring function a safe TRL reward: it never raises into the trainer.

`@reward(floor=...)` wraps `f(prompts, completions, **columns) -> list`: the result is always
one plain float per completion; when the batch fails, samples are re-scored one by one so only
the offending ones get the floor; the first failure of each reward is logged once (with the
sample truncated), later ones are counted in ERROR_COUNTS.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger("haiku_kit.rewards")

_warned: set[str] = set()
ERROR_COUNTS: dict[str, int] = {}


def reset_error_log() -> None:
    """Forget which rewards already logged an error (tests; a new training run)."""
    _warned.clear()
    ERROR_COUNTS.clear()


def _truncate(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _as_float(value: Any, floor: float) -> float:
    if hasattr(value, "item"):  # torch / numpy scalars
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return floor
    return value + 0.0 if math.isfinite(value) else floor  # + 0.0 turns -0.0 into 0.0


def reward(floor: float) -> Callable[[Callable], Callable]:
    """Make a batch scoring function a safe TRL reward with this floor value.

    The wrapped function may raise; the wrapper then re-scores sample by sample so only the
    offending samples get the floor, logs the first failure of this reward once, and always
    returns one plain float per completion.
    """

    def decorate(fn: Callable) -> Callable:
        name = fn.__name__

        def score(prompts, completions, kwargs) -> list[float]:
            out = fn(prompts, completions, **kwargs)
            if len(out) != len(completions):
                raise ValueError(f"returned {len(out)} scores for {len(completions)} completions")
            return [_as_float(v, floor) for v in out]

        @functools.wraps(fn)
        def wrapper(prompts=None, completions=None, **kwargs) -> list[float]:
            completions = list(completions or [])
            n = len(completions)
            prompts = list(prompts) if prompts is not None else [""] * n
            try:
                return score(prompts, completions, kwargs)
            except Exception:
                log.debug(
                    "reward %s: batch failed, re-scoring sample by sample", name, exc_info=True
                )
            results = []
            for i in range(n):
                one = {k: _slice(v, i, n) for k, v in kwargs.items()}
                try:
                    results.append(score(prompts[i : i + 1], completions[i : i + 1], one)[0])
                except Exception as err:  # noqa: BLE001 - a reward never raises into the trainer
                    _report(name, completions[i], err, floor)
                    results.append(floor)
            return results

        wrapper.floor = floor
        return wrapper

    return decorate


def _slice(value: Any, i: int, n: int) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == n:
        return value[i : i + 1]
    return value


def _report(name: str, sample: Any, err: Exception, floor: float) -> None:
    ERROR_COUNTS[name] = ERROR_COUNTS.get(name, 0) + 1
    if name in _warned:
        return
    _warned.add(name)
    log.warning(
        "reward %s failed (%s: %s) on completion %s; scored as its floor %s "
        "(later errors of this reward are counted in rewards.ERROR_COUNTS, not logged)",
        name,
        type(err).__name__,
        err,
        _truncate(sample),
        floor,
    )
