"""Showing a stage's results inline in a notebook: `*_markdown` builds the text (tests read
it), `show_*` displays it and returns None, so a show call at the end of a cell prints nothing
twice. Outside IPython the text is printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from haiku_kit import report
from haiku_kit.data import load_splits
from haiku_kit.showcase import TRY_TOPICS, tried_markdown, try_it


def _display(*objs: Any) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python without IPython: print the text parts
        for obj in objs:
            print(getattr(obj, "data", obj))
        return
    display(*objs)


def _show_markdown(text: str) -> None:
    try:
        from IPython.display import Markdown
    except ImportError:
        _display(text)
    else:
        _display(Markdown(text))


def show_images(folder: str | Path) -> None:
    try:
        from IPython.display import Image
    except ImportError:
        return
    for png in sorted(Path(folder).glob("*.png")):
        _display(Image(filename=str(png)))


def data_markdown(data_dir: str | Path, n: int = 3) -> str:
    """Rows kept by each filter, split sizes and a few example rows of the sft split."""
    splits = load_splits(str(data_dir))
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    kept = " → ".join(f"{k} {v}" for k, v in manifest.get("stages", {}).items())
    lines = [f"Rows kept by each filter: {kept}", ""] if kept else []
    lines += ["| split | rows |", "|---|---:|"]
    lines += [f"| {name} | {len(ds)} |" for name, ds in splits.items()]
    lines += ["", "**Examples (sft split)**", ""]
    for row in splits["sft"].select(range(min(n, len(splits["sft"])))):
        lines += [f"*{row['topic']}*", "", *(f"> {ln}  " for ln in row["haiku"].splitlines()), ""]
    return "\n".join(lines)


def result_markdown(result: Any, title: str = "model") -> str:
    """The metrics of one evaluation with their 95% confidence intervals."""
    if result is None:
        return f"*{title}: not part of this run*"
    return f"### {title}\n\n" + report.compare({title: result}).markdown()


def samples_markdown(result: Any, title: str = "model", n: int = 5) -> str:
    """A few of the model's poems with the verifier's verdict."""
    return "" if result is None else report.samples_markdown({title: result}, n)


def training_markdown(stage_dir: str | Path, last: int = 5) -> str:
    """The last few log lines of an SFT or GRPO run."""
    log = Path(stage_dir) / "log.jsonl"
    rows = log.read_text().splitlines()[-last:] if log.is_file() else []
    return "\n".join(["```", *rows, "```"]) if rows else f"(no training log in {stage_dir})"


def report_markdown(report_dir: str | Path) -> str:
    """The comparison table and the sample poems of RUN/report/."""
    report_dir = Path(report_dir)
    text = (report_dir / "table.md").read_text()
    samples = report_dir / "samples.md"
    return text + ("\n" + samples.read_text() if samples.is_file() else "")


def show_data(data_dir: str | Path, n: int = 3) -> None:
    _show_markdown(data_markdown(data_dir, n))


def show_result(result: Any, title: str = "model") -> None:
    _show_markdown(result_markdown(result, title))


def show_samples(result: Any, title: str = "model", n: int = 5) -> None:
    _show_markdown(samples_markdown(result, title, n))


def show_tried(model, tokenizer, topics=TRY_TOPICS, constrained: bool = True):
    """Write one haiku per topic with `model`, free and constrained, and show them as a table."""
    tried = try_it(model, tokenizer, topics, constrained=constrained)
    _show_markdown(tried_markdown(tried))
    return tried


def show_training(stage_dir: str | Path, last: int = 5) -> None:
    """The training curves and the last few log lines."""
    show_images(stage_dir)
    _show_markdown(training_markdown(stage_dir, last))


def show_report(report_dir: str | Path) -> None:
    """The comparison table, the plots, then the sample poems."""
    report_dir = Path(report_dir)
    _show_markdown((report_dir / "table.md").read_text())
    show_images(report_dir)
    if (report_dir / "samples.md").is_file():
        _show_markdown((report_dir / "samples.md").read_text())
