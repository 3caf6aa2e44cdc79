"""Reward curricula: reward weights that change with the training step.

Why: harsh penalties from step 0 collapse a small policy to empty or near-empty answers (the
cheapest way to avoid a penalty is to say nothing), after which every completion of a group
scores the same and GRPO has no gradient. A curriculum starts with soft penalties (or none)
while the model learns the form, then hardens them.

A curriculum is a list of segments, each `{until_step, weights | scales, ramp}`:
- `until_step`: the segment holds for global steps < until_step; the last segment may leave it out
  (None: forever).
- `weights`: {reward name: weight} replacing the RewardSpec's weight; `scales`: {reward name:
  factor} multiplying it. Names left out keep the spec's weight.
- `ramp`: "step" (default) holds the segment's values; "linear" moves them linearly to the next
  segment's values by `until_step`.

Example, penalties from 10% to full strength over the first 50 steps:
    [{"until_step": 50, "scales": {"length_penalty": 0.1, "prompt_copy_penalty": 0.1},
      "ramp": "linear"},
     {"scales": {}}]

`CurriculumCallback(curriculum, spec).attach(trainer)` applies it to TRL's GRPOTrainer, which
keeps the weights in the tensor `trainer.reward_weights` and multiplies the per-function
rewards by it after every generation. The callback overwrites that tensor in place at
`on_step_begin` (before the step generates and scores its completions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from haiku_kit.errors import ConfigError
from haiku_kit.train.callbacks import Callback
from haiku_kit.train.rewards import RewardSpec

RAMPS = ("step", "linear")


@dataclass
class Segment:
    until_step: int | None = None
    weights: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    ramp: str = "step"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"until_step": self.until_step}
        if self.weights:
            out["weights"] = dict(self.weights)
        if self.scales:
            out["scales"] = dict(self.scales)
        if self.ramp != "step":
            out["ramp"] = self.ramp
        return out


def _segment(data: Any, i: int) -> Segment:
    where = f"curriculum segment {i}"
    if isinstance(data, Segment):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - {"until_step", "weights", "scales", "ramp"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {', '.join(unknown)} (until_step, weights, scales, ramp)"
        )
    until = data.get("until_step")
    if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 0):
        raise ConfigError(f"{where}: until_step must be a step number >= 0 or null, got {until!r}")
    ramp = data.get("ramp", "step")
    if ramp not in RAMPS:
        raise ConfigError(f"{where}: ramp must be one of {', '.join(RAMPS)}, got {ramp!r}")
    tables = {}
    for key in ("weights", "scales"):
        table = data.get(key) or {}
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {key} must map reward names to numbers, got {table!r}")
        for name, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key}.{name} must be a number, got {value!r}")
        tables[key] = {str(k): float(v) for k, v in table.items()}
    return Segment(until, tables["weights"], tables["scales"], ramp)


class RewardCurriculum:
    """Reward weights as a function of the global step (see the module docstring)."""

    def __init__(self, segments: list[dict | Segment]):
        if not segments:
            raise ConfigError("a curriculum needs at least one segment")
        self.segments = [_segment(s, i) for i, s in enumerate(segments)]
        previous = -1
        for i, segment in enumerate(self.segments):
            if segment.until_step is None:
                if i != len(self.segments) - 1:
                    raise ConfigError(
                        f"curriculum segment {i}: only the last segment may omit until_step"
                    )
                continue
            if segment.until_step <= previous:
                raise ConfigError(
                    f"curriculum segment {i}: until_step {segment.until_step} must be greater than "
                    f"the previous segment's ({previous})"
                )
            previous = segment.until_step
        if self.segments[-1].ramp == "linear":
            raise ConfigError("curriculum: the last segment cannot ramp (there is no next segment)")

    @classmethod
    def from_dict(cls, data: Any) -> RewardCurriculum:
        """From a list of segments or {"segments": [...]}."""
        if isinstance(data, RewardCurriculum):
            return data
        if isinstance(data, dict):
            data = data.get("segments", data.get("phases"))  # "phases": the old key
        if not isinstance(data, list):
            raise ConfigError(f"a curriculum is a list of segments, got {data!r}")
        return cls(data)

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.segments]

    def validate(self, spec: RewardSpec) -> None:
        """Every reward a segment names must be in the spec."""
        for i, segment in enumerate(self.segments):
            for name in [*segment.weights, *segment.scales]:
                if name not in spec.names:
                    raise ConfigError(
                        f"curriculum segment {i} names reward {name!r}, which the reward spec "
                        f"does not use ({', '.join(spec.names)})"
                    )

    def _values(self, segment: Segment, spec: RewardSpec) -> list[float]:
        return [
            segment.weights.get(name, base) * segment.scales.get(name, 1.0)
            for name, base in zip(spec.names, spec.weights)
        ]

    def segment_index(self, step: int) -> int:
        for i, segment in enumerate(self.segments):
            if segment.until_step is None or step < segment.until_step:
                return i
        return len(self.segments) - 1  # past every until_step: the last segment holds

    def weights_at(self, step: int, spec: RewardSpec) -> list[float]:
        """The reward weights (in spec order) for this global step."""
        self.validate(spec)
        i = self.segment_index(step)
        segment = self.segments[i]
        values = self._values(segment, spec)
        if segment.ramp != "linear" or step >= (segment.until_step or 0):
            return values
        start = self.segments[i - 1].until_step if i > 0 else 0
        target = self._values(self.segments[i + 1], spec)
        t = (step - start) / max(1, segment.until_step - start)
        return [a + (b - a) * t for a, b in zip(values, target)]


class CurriculumCallback(Callback):
    """Applies a RewardCurriculum to a GRPOTrainer's `reward_weights` at each step begin.

    Usage: `trainer.add_callback(CurriculumCallback(curriculum, spec).attach(trainer))`, where
    `spec` is the RewardSpec the trainer was built with (same names, same order). The current
    weights are also logged as `curriculum/<reward name>` when the trainer has TRL's metrics.
    """

    def __init__(self, curriculum: RewardCurriculum | list[dict], spec: RewardSpec):
        self.curriculum = RewardCurriculum.from_dict(curriculum)
        self.spec = spec
        self.curriculum.validate(spec)
        self.trainer = None
        self.history: list[tuple[int, list[float]]] = []

    def attach(self, trainer) -> CurriculumCallback:
        weights = getattr(trainer, "reward_weights", None)
        if weights is None or len(weights) != len(self.spec.names):
            raise ConfigError(
                f"CurriculumCallback: the trainer has {0 if weights is None else len(weights)} "
                f"reward weights but the spec names {len(self.spec.names)} rewards"
            )
        self.trainer = trainer
        return self

    def apply(self, step: int) -> list[float]:
        if self.trainer is None:
            raise ConfigError("CurriculumCallback is not attached: call .attach(trainer) first")
        weights = self.curriculum.weights_at(step, self.spec)
        tensor = self.trainer.reward_weights
        for i, w in enumerate(weights):
            tensor[i] = w  # in place: TRL reads this tensor when it scores each generation batch
        self.history.append((step, weights))
        metrics = getattr(self.trainer, "_metrics", None)
        if isinstance(metrics, dict) and "train" in metrics:
            for name, w in zip(self.spec.names, weights):
                metrics["train"][f"curriculum/{name}"].append(w)
        return weights

    def on_step_begin(self, args, state, control, **kwargs):
        self.apply(state.global_step)
