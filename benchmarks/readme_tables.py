"""Print the README's results rows and its poem comparison from the results files.

    python benchmarks/readme_tables.py

Every figure comes from benchmarks/results/NAME/MODEL.json (written by efficacy.py --publish);
tests/test_readme.py checks the README's rows against those files, so paste, never type.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"sft": "SFT", "sft+constrained": "SFT + constrained", "grpo": "SFT→GRPO",
          "grpo+constrained": "SFT→GRPO + constrained"}
# (results folder, the preset and seed, the prompts it was measured on)
SETS = [
    ("demo", "`cpu-demo` seed 0 (`make demo`)", "its eval split, 64"),
    ("demo-seed1", "`cpu-demo` seed 1", "its eval split, 64"),
    ("demo-dev", "`cpu-demo` seed 0", "reference dev rows 0-127"),
    ("demo-test", "`cpu-demo` seed 0", "reference test rows 128-591"),
]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def row(folder: str, model: str, run: str, prompts: str) -> str | None:
    path = RESULTS / folder / f"{model}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    m, ci = data["metrics"], data["ci"]
    good = f"{pct(m['good'])} [{100 * ci['good'][0]:.1f}, {100 * ci['good'][1]:.1f}]"
    rel = path.relative_to(RESULTS.parents[1]).as_posix()
    return (f"| {run} | {prompts} | [{MODELS[model]}]({rel}) | {good} | {pct(m['haiku'])} | "
            f"{pct(m['fluent'])} | {m['similarity']:+.3f} |")


def results_table() -> str:
    lines = ["| run | prompts × 1 sample | model | good | valid | reads as English | Similarity |",
             "|---|---|---|---|---|---|---|"]
    for folder, run, prompts in SETS:
        lines += [r for model in MODELS if (r := row(folder, model, run, prompts))]
    return "\n".join(lines)


def poems(samples_md: Path, section: str) -> list[tuple[str, str, bool]]:
    """(topic, poem, good) of one model's section of a report's samples.md, in order."""
    text = samples_md.read_text(encoding="utf-8")
    part = re.split(r"^## ", text, flags=re.MULTILINE)
    body = next(p for p in part if p.startswith(section + "\n"))
    out = []
    for entry in body.split("**Topic:** ")[1:]:
        topic = entry.split("  \n", 1)[0].strip()
        verdict = entry.split("\n", 2)[1]
        poem = " / ".join(line[2:].strip() for line in entry.splitlines() if line.startswith("> "))
        out.append((topic, poem, "**good**" in verdict))
    return out


def poems_table(before=("previous-demo", "grpo"), after=("demo", "SFT→GRPO + constrained")) -> str:
    old = poems(RESULTS / before[0] / "samples.md", before[1])
    new = poems(RESULTS / after[0] / "samples.md", after[1])
    lines = ["| topic | previous release: SFT→GRPO, free | this release: SFT→GRPO + constrained |",
             "|---|---|---|"]
    for (topic, a, a_good), (topic_b, b, b_good) in zip(old, new):
        if topic != topic_b:
            sys.exit(f"the two draws are not of the same prompts: {topic!r} / {topic_b!r}")
        mark = lambda good: " ✓" if good else ""
        lines.append(f"| {topic} | {a}{mark(a_good)} | {b}{mark(b_good)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(results_table())
    print()
    print(poems_table())
