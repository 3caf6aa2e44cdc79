"""The GRPO learning curve: per step, the valid-haiku share and mean syllable distance of the
step's rollouts (RUN/grpo/samples.jsonl holds every completion), judged like the eval."""

from __future__ import annotations

import json
from pathlib import Path

from haiku_kit import haiku as hk


def learning_curve(samples_path: str | Path) -> list[dict]:
    """Per GRPO step, from the rollouts in samples.jsonl (every completion of the step): the
    valid-haiku share and the mean syllable distance, judged like the eval (extract_poem +
    check)."""
    path = Path(samples_path)
    by_step: dict[int, list[str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                by_step.setdefault(int(row["step"]), []).append(str(row["completion"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of an interrupted run
    curve = []
    for step, texts in sorted(by_step.items()):
        checks = [hk.check(hk.extract_poem(t).poem) for t in texts]
        curve.append({"step": step, "n": len(checks),
                      "valid": sum(c.is_haiku for c in checks) / len(checks),
                      "distance": sum(c.distance for c in checks) / len(checks)})
    return curve


def plot_learning_curve(curve: list[dict], path: Path) -> Path | None:
    """Valid-haiku share and mean syllable distance of the rollouts, per GRPO step."""
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(steps, [c["valid"] for c in curve], marker=".")
    top.set_ylabel("valid haiku (rollouts)")
    top.set_ylim(0, 1)
    bottom.plot(steps, [c["distance"] for c in curve], marker=".", color="tab:red")
    bottom.set_ylabel("mean syllable distance")
    bottom.set_xlabel("GRPO step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle("GRPO learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
