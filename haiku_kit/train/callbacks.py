"""Training callbacks: JSONL/CSV log, sample log, hacking monitor, collapse detector, plots.

GRPO samples are captured by wrapping the reward functions (`RewardRecorder`): TRL calls every
reward function with the same prompts/completions list, so the wrapper sees each completion
and every reward component without reading trainer internals, which change between versions.

Under several processes (ranks.py) each scores its own share of the completions: the logs and
the sample log are the main process's to write (its share of the samples), the monitor's shares
are the main process's batch, and the collapse detector decides on every process's rewards, so
that all of them stop at the same step.

The callbacks are duck-typed (any `on_*` event is a no-op unless defined) so this module never
imports transformers: with the Unsloth backend, `import unsloth` must come first.

Watching training as it runs: live curves in a notebook, one compact line per log in a terminal.

`attach(trainer)` is all a caller needs: in a Jupyter kernel it adds `LiveView`, one figure under
one display handle, redrawn every `every` logging steps (reward components, valid-haiku share,
syllable distance, loss); everywhere it swaps transformers' progress bar for one that prints a
compact line per logging step instead of a raw dict.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haiku_kit import ranks
from haiku_kit.config import CollapseSettings, MonitorSettings
from haiku_kit.verify.haiku import extract_poem
from haiku_kit.verify.text import completion_text, copies_prompt, normalize, prompt_text

logger = logging.getLogger(__name__)


class Callback:
    """Trainer-compatible callback base: every event not defined is a no-op."""

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


# --------------------------------------------------------------------------- reward capture


@dataclass
class RewardBatch:
    step: int
    prompts: list
    completions: list
    topics: list
    components: dict[str, list[float]] = field(default_factory=dict)
    weights: list[float] = field(default_factory=list)

    @property
    def totals(self) -> list[float]:
        names = list(self.components)
        out = []
        for i in range(len(self.completions)):
            total = 0.0
            for name, w in zip(names, self.weights or [1.0] * len(names)):
                v = self.components[name][i]
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    total += w * v
            out.append(total)
        return out

    def rows(self) -> list[dict]:
        totals = self.totals
        return [
            {
                "step": self.step,
                "topic": self.topics[i] if i < len(self.topics) else None,
                "prompt": prompt_text(self.prompts[i]),
                "completion": _text(self.completions[i]),
                "rewards": {n: _num(v[i]) for n, v in self.components.items()},
                "total": totals[i],
            }
            for i in range(len(self.completions))
        ]


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class RewardRecorder:
    """Wraps reward functions; when every component of a batch is in, calls the listeners."""

    def __init__(self, names: list[str], weights_fn: Callable[[], list[float]] | None = None):
        self.names = list(names)
        self.weights_fn = weights_fn or (lambda: [1.0] * len(self.names))
        self.listeners: list[Callable[[RewardBatch], None]] = []
        self._batch: RewardBatch | None = None
        self._completions_id: int | None = None

    def wrap(self, fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def wrapped(prompts, completions, **kwargs):
            rewards = fn(prompts=prompts, completions=completions, **kwargs)
            self.record(name, prompts, completions, kwargs, list(rewards))
            return rewards

        wrapped.__name__ = name  # TRL names the logged metric rewards/<__name__>/mean
        return wrapped

    def wrap_all(self, funcs: list[Callable]) -> list[Callable]:
        return [self.wrap(f, n) for f, n in zip(funcs, self.names)]

    def record(self, name: str, prompts, completions, kwargs: dict, rewards: list) -> None:
        if self._batch is None or self._completions_id != id(completions):
            state = kwargs.get("trainer_state")
            self._batch = RewardBatch(
                # generated for the optimizer step about to run: TRL logs it as global_step + 1
                step=int(getattr(state, "global_step", 0)) + 1,
                prompts=list(prompts),
                completions=list(completions),
                topics=list(kwargs.get("topic") or []),
            )
            self._completions_id = id(completions)
        self._batch.components[name] = rewards
        if all(n in self._batch.components for n in self.names):
            batch, self._batch, self._completions_id = self._batch, None, None
            batch.components = {n: batch.components[n] for n in self.names}
            batch.weights = [float(w) for w in self.weights_fn()]
            for listener in self.listeners:
                listener(batch)


class SampleLogger:
    """Writes prompts, completions and every reward component to JSONL every N steps."""

    def __init__(self, path: str | Path, every: int = 1, n_print: int = 2):
        self.path = Path(path)
        self.every = max(1, every)
        self.n_print = n_print

    def __call__(self, batch: RewardBatch) -> None:
        if batch.step != 1 and batch.step % self.every or not ranks.is_main():
            return
        rows = batch.rows()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for row in rows[: self.n_print]:
            parts = ", ".join(f"{k}={v:.2f}" for k, v in row["rewards"].items() if v is not None)
            poem = row["completion"].strip().replace("\n", " / ")
            print(f"[step {row['step']}] {row['topic']!r}: {poem!r}  total={row['total']:.2f} ({parts})")


# --------------------------------------------------------------------------- hacking monitor

def _poem(text: str) -> str:
    try:
        return extract_poem(text).poem
    except Exception:  # noqa: BLE001 - a monitor never stops training: fall back to the raw text
        return text


def _text(completion: Any) -> str:
    """Whatever came back, as text: logs must show it even when it is not a completion."""
    return completion_text(completion, strict=False)


def judged_shares(texts: list[str], topics: list[str], prompts: list[str]) -> dict[str, float]:
    """The eval's headline parts on one batch of completions: the share that is a valid 5-7-5
    haiku, that reads as English by the judge's rules, and that is good (valid, fluent, on topic
    by MiniLM and no copy: verify.judge, without its word-order model), plus the mean syllable
    distance. A rising reward with a flat good share is a reward being gamed. {} when the judge
    fails: a monitor never stops training."""
    if not texts:
        return {}
    try:
        from haiku_kit.verify.haiku import check
        from haiku_kit.verify.judge import Judge

        verdicts = Judge().judge(texts, topics, prompts)
        distances = [check(v.poem).distance for v in verdicts]
    except Exception as err:  # noqa: BLE001 - a monitor never stops training
        logger.warning("monitor: the judge failed on a batch (%s); shares skipped", err)
        return {}
    n = len(verdicts)
    return {"monitor/valid_share": sum(v.valid for v in verdicts) / n,
            "monitor/fluent_share": sum(v.fluent for v in verdicts) / n,
            "monitor/good_share": sum(v.good for v in verdicts) / n,
            "monitor/mean_distance": sum(distances) / n}


class HackingMonitor(Callback):
    """Share of completions that copy the prompt (text.copies_prompt, the eval's measure) or
    reproduce an SFT answer, plus TRL's frac_reward_zero_std and clipped-completion ratio;
    warns loudly past a threshold. Also logs the judge's shares (judged_shares): valid, fluent,
    good and the mean syllable distance of each scored batch."""

    def __init__(self, settings: MonitorSettings | None = None, train_answers: Iterable[str] = ()):
        self.settings = settings or MonitorSettings()
        self.train_answers = {normalize(a) for a in train_answers if normalize(a)}
        self.latest: dict[str, float] = {}
        self.warnings: list[str] = []

    def __call__(self, batch: RewardBatch) -> None:
        texts = [_text(c) for c in batch.completions]
        poems = [_poem(t) for t in texts]
        topics = [str(t or "") for t in batch.topics] or [""] * len(texts)
        n = max(1, len(texts))
        # Raw text, not the extracted poem: an instruction echoed back can look like a preamble.
        self.latest["monitor/copy_prompt_share"] = sum(
            copies_prompt(t, prompt_text(p), topic)
            for t, p, topic in zip(texts, batch.prompts, topics)
        ) / n
        self.latest["monitor/train_overlap_share"] = (
            sum(normalize(p) in self.train_answers for p in poems) / n if self.train_answers else 0.0
        )
        self.latest["monitor/empty_share"] = sum(not t.strip() for t in texts) / n
        self.latest.update(judged_shares(texts, topics, [prompt_text(p) for p in batch.prompts]))

    def check(self, logs: dict) -> list[str]:
        s = self.settings
        values = {
            "copy_prompt_share": (self.latest.get("monitor/copy_prompt_share"), s.copy_prompt),
            "train_overlap_share": (self.latest.get("monitor/train_overlap_share"), s.train_overlap),
            "frac_reward_zero_std": (logs.get("frac_reward_zero_std"), s.zero_std),
            "completions/clipped_ratio": (logs.get("completions/clipped_ratio"), s.clipped),
        }
        alerts = []
        for name, (value, limit) in values.items():
            if value is not None and value > limit:
                alerts.append(f"{name}={value:.2f} > {limit:.2f}")
        return alerts

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs and "reward" not in logs:
            return
        logs.update(self.latest)
        for alert in self.check(logs):
            msg = f"!!! REWARD-HACKING MONITOR at step {state.global_step}: {alert}"
            self.warnings.append(msg)
            logger.warning(msg)
            print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- collapse detector


class CollapseDetector:
    """Fires when the reward falls sharply against a rolling window of earlier steps, or when
    completions go empty, for `patience` consecutive steps. Pure: feed it values with observe()."""

    def __init__(self, settings: CollapseSettings | None = None):
        self.s = settings or CollapseSettings()
        self.history: deque[float] = deque(maxlen=max(1, self.s.window))
        self.bad_streak = 0
        self.fired_at: int | None = None
        self.reason: str | None = None

    def observe(self, step: int, value: float, empty_share: float = 0.0) -> str | None:
        """Returns the reason on the step it fires, else None."""
        if self.fired_at is not None:
            return None
        why = None
        if empty_share >= self.s.empty_share:
            why = f"{empty_share:.0%} of completions are empty"
        elif len(self.history) >= self.s.window:
            baseline = sum(self.history) / len(self.history)
            if self.s.metric == "max":
                baseline = max(self.history)
            limit = baseline - self.s.drop * max(abs(baseline), self.s.min_scale)
            if value < limit:
                why = f"reward {self.s.metric} {value:.3f} fell below {limit:.3f} (window baseline {baseline:.3f})"
        if why is None:
            self.bad_streak = 0
            self.history.append(value)
            return None
        self.bad_streak += 1
        if self.bad_streak >= self.s.patience:
            self.fired_at, self.reason = step, why
            return why
        return None


class CollapseCallback(Callback):
    """Feeds the detector from reward batches; stops training when it fires. The rollback
    itself (final adapter = last checkpoint saved before the collapse) happens in grpo.py."""

    def __init__(self, settings: CollapseSettings | None = None):
        self.detector = CollapseDetector(settings)
        self.settings = self.detector.s
        self.checkpoints: list[int] = []  # steps of checkpoints saved before the collapse
        self._pending: tuple[int, float, float] | None = None

    def __call__(self, batch: RewardBatch) -> None:
        totals = batch.totals
        if not totals:
            return
        value = max(totals) if self.settings.metric == "max" else sum(totals) / len(totals)
        empty = sum(not _text(c).strip() for c in batch.completions) / len(totals)
        self._pending = (batch.step, value, empty)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.settings.enabled or self._pending is None:
            return
        step, value, empty = self._everyone(self._pending)
        self._pending = None
        reason = self.detector.observe(step, value, empty)
        if reason:
            msg = f"!!! COLLAPSE at step {state.global_step}: {reason}; stopping ({self.settings.action})"
            logger.warning(msg)
            print(msg, file=sys.stderr)
            control.should_training_stop = True
            control.should_save = False

    def _everyone(self, pending: tuple[int, float, float]) -> tuple[int, float, float]:
        """The step's value over every process's completions (each scored its own share), so
        that every process's detector sees the same values and stops at the same step."""
        shares = ranks.gather(pending)
        if len(shares) == 1:
            return pending
        values = [v for _, v, _ in shares]
        value = max(values) if self.settings.metric == "max" else sum(values) / len(values)
        return pending[0], value, sum(e for _, _, e in shares) / len(shares)

    def on_save(self, args, state, control, **kwargs):
        if self.detector.fired_at is None:
            self.checkpoints.append(state.global_step)

    @property
    def collapsed(self) -> bool:
        return self.detector.fired_at is not None


# --------------------------------------------------------------------------- logs and plots


def _main_process(state) -> bool:
    """The trainer's word on whether this is the main process (True for a bare state)."""
    return bool(getattr(state, "is_world_process_zero", True))


PEAK_MEMORY_FILE = "peak_memory.json"


def gpu_memory() -> dict:
    """This process's peak and reserved GPU memory so far in GiB
    (torch.cuda.max_memory_allocated / memory_reserved); {} without CUDA."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    return {"peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "reserved_gib": round(torch.cuda.memory_reserved() / 2**30, 2)}


class JsonlLogger(Callback):
    """Appends every trainer log entry to log.jsonl; writes log.csv when training ends, and on a
    GPU the process's peak memory beside it (peak_memory.json, to set a preset's batch by)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The trainer logs on every process; its logged values are already every process's.
        if not logs or not _main_process(state):
            return
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=float) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if _main_process(state) and self.path.is_file():
            write_csv(self.path, self.path.with_suffix(".csv"))
        memory = gpu_memory()
        if _main_process(state) and memory:
            (self.path.parent / PEAK_MEMORY_FILE).write_text(
                json.dumps({**memory, "step": getattr(state, "global_step", None)}) + "\n",
                encoding="utf-8")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_csv(jsonl_path: str | Path, csv_path: str | Path) -> Path:
    rows = read_jsonl(jsonl_path)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with Path(csv_path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return Path(csv_path)


def plot_training(jsonl_path: str | Path, png_path: str | Path) -> Path | None:
    """Reward components, loss and completion length over steps, one panel each."""
    rows = [r for r in read_jsonl(jsonl_path) if "train_runtime" not in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        return list(zip(*pts)) if pts else None

    reward_keys = [k for k in rows[-1] if k.startswith("rewards/") and k.endswith("/mean")]
    panels = []
    if reward_keys or series("reward"):
        panels.append(("reward", ["reward", *reward_keys]))
    panels.append(("loss", ["loss"]))
    if series("completions/mean_length"):
        panels.append(("completion length (tokens)", ["completions/mean_length"]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels):
        for key in keys:
            s = series(key)
            if s:
                ax.plot(s[0], s[1], marker=".", label=key.removeprefix("rewards/").removesuffix("/mean"))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


# -------------------- live --------------------

# Short names for the log keys a reader scans first, in the order the line shows them.
LINE_KEYS = (
    ("loss", "loss"),
    ("reward", "reward"),
    ("monitor/valid_share", "haiku"),
    ("monitor/good_share", "good"),
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
        ("valid and good haiku share", {"valid": "monitor/valid_share",
                                        "good": "monitor/good_share"}),
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
