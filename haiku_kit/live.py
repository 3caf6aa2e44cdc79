"""Watching training as it runs: live curves in a notebook, one compact line per log in a terminal.

`attach(trainer)` is all a caller needs: in a Jupyter kernel it adds `LiveView`, one figure under
one display handle, redrawn every `every` logging steps (reward components, valid-haiku share,
syllable distance, loss); everywhere it swaps transformers' progress bar for one that prints a
compact line per logging step instead of a raw dict.
"""

from __future__ import annotations

import math
from typing import Any

from haiku_kit.callbacks import Callback

# Short names for the log keys a reader scans first, in the order the line shows them.
LINE_KEYS = (
    ("loss", "loss"),
    ("reward", "reward"),
    ("monitor/valid_share", "haiku"),
    ("monitor/mean_distance", "dist"),
    ("frac_reward_zero_std", "zero_std"),
    ("learning_rate", "lr"),
    ("completions/mean_length", "len"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def compact_line(logs: dict[str, Any], step: int, max_steps: int | None = None) -> str:
    """``step 12/140 | loss 1.234 | reward 0.41 | haiku 0.12 | ...`` from one log entry."""
    parts = [f"step {step}/{max_steps}" if max_steps and max_steps > 0 else f"step {step}"]
    for key, short in LINE_KEYS:
        value = _number(logs.get(key))
        if value is not None:
            parts.append(f"{short} {value:.2e}" if short == "lr" else f"{short} {value:.3g}")
    for key in sorted(logs):
        if key.startswith("rewards/") and key.endswith("/mean"):
            value = _number(logs[key])
            if value is not None:
                parts.append(f"{key[len('rewards/'):-len('/mean')]} {value:.3g}")
    return " | ".join(parts)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill included), False in a terminal or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def panels(history: list[dict[str, Any]]) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    """(title, {series name: [(step, value)]}) for each panel that has data."""
    def series(key: str) -> list[tuple[int, float]]:
        return [(h["step"], v) for h in history if (v := _number(h.get(key))) is not None]

    reward_keys = sorted({k for h in history for k in h
                          if k.startswith("rewards/") and k.endswith("/mean")})
    wanted = [
        ("reward components", {"reward": "reward",
                               **{k[len("rewards/"):-len("/mean")]: k for k in reward_keys}}),
        ("valid haiku share", {"haiku": "monitor/valid_share"}),
        ("mean syllable distance", {"distance": "monitor/mean_distance"}),
        ("loss", {"loss": "loss"}),
    ]
    out = []
    for title, keys in wanted:
        data = {name: pts for name, key in keys.items() if (pts := series(key))}
        if data:
            out.append((title, data))
    return out


class LiveView(Callback):
    """One live figure in a notebook, redrawn in place every ``every`` logging steps."""

    def __init__(self, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.history: list[dict[str, Any]] = []
        self.handle = None
        self.draws = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:
            return
        self.history.append({"step": state.global_step, **logs})
        if len(self.history) % self.every == 0:
            self.draw()

    def on_train_end(self, args, state, control, **kwargs):
        if self.history:
            self.draw()

    def figure(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        found = panels(self.history)
        fig, axes = plt.subplots(1, max(1, len(found)), figsize=(4 * max(1, len(found)), 3),
                                 squeeze=False)
        for ax, (title, data) in zip(axes[0], found):
            for name, pts in data.items():
                ax.plot(*zip(*pts), marker=".", label=name)
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if len(data) > 1:
                ax.legend(fontsize="x-small")
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = self.figure()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
        self.draws += 1


def compact_progress():
    """transformers' progress bar, printing `compact_line` per log instead of the raw dict."""
    from transformers.trainer_callback import ProgressCallback

    class CompactProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if (state.is_world_process_zero and self.training_bar is not None and logs
                    and "train_runtime" not in logs):
                self.training_bar.write(compact_line(logs, state.global_step, state.max_steps))

    return CompactProgress()


def attach(trainer, every: int = 1, notebook: bool | None = None) -> LiveView | None:
    """Compact terminal lines always; a LiveView in a notebook. Returns the LiveView, if any."""
    from transformers.trainer_callback import ProgressCallback

    if trainer.callback_handler.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(compact_progress())
    if not (in_notebook() if notebook is None else notebook):
        return None
    view = LiveView(every)
    trainer.add_callback(view)
    return view
