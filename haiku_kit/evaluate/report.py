"""Compare evaluation results: a table in the reference's format, plots, samples and failures.

The reference printed `Model | Haiku | Similarity | Total | Duplicates`; the table keeps those
columns (Haiku = the kit's verifier on the extracted poem) and adds the reference's own pyphen
Haiku score and Total for a like-for-like comparison, with 95% bootstrap CIs.

The GRPO learning curve: per step, the valid-haiku share and mean syllable distance of the
step's rollouts (RUN/grpo/samples.jsonl holds every completion), judged like the eval.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haiku_kit.evaluate.protocol import reference_markdown
from haiku_kit.evaluate.scoring import PATTERN, EvalResult, paired_difference
from haiku_kit.verify import haiku as hk


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


# -------------------- report --------------------

# (column title, metric key, shown as percent)
COLUMNS = (
    ("Good", "good", False),
    ("Fluent", "fluent", False),
    ("On topic", "on_topic", False),
    ("Original", "original", False),
    ("Haiku", "haiku", False),
    ("Similarity", "similarity", False),
    ("Total", "total", False),
    ("Train overlap", "train_overlap", True),
    ("Near-dup overlap", "train_near", True),
    ("Haiku (pyphen)", "pyphen_haiku", False),
    ("Total (pyphen)", "pyphen_total", False),
    ("3 lines", "three_lines", False),
    ("Mean syllable distance", "distance", False),
    ("Preamble", "preamble", True),
    ("Prompt copy", "prompt_copy", True),
    ("Hit token limit", "hit_limit", True),
)
BAR_METRICS = ("haiku", "pyphen_haiku", "similarity", "total")


def _fmt(value: float | None, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}%" if percent else f"{value:.4f}"


@dataclass
class ComparisonTable:
    """One row per model: metric values with their CIs."""

    names: list[str]
    results: list[EvalResult]

    def _cell(self, result: EvalResult, key: str, percent: bool) -> str:
        value = result.metrics.get(key)
        text = _fmt(value, percent)
        lo, hi = result.ci.get(key, [math.nan, math.nan])
        if text != "n/a" and not math.isnan(lo):
            text += f" [{_fmt(lo, percent)}, {_fmt(hi, percent)}]"
        return text

    def markdown(self) -> str:
        head = ["Model", "n", *(title for title, _, _ in COLUMNS)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, result in zip(self.names, self.results):
            cells = [name, str(result.meta.get("n", len(result.records)))]
            cells += [self._cell(result, key, pct) for _, key, pct in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Values are means over all outputs with 95% bootstrap CIs (prompts "
                     "resampled). Good: valid and fluent and on topic and original, as the "
                     "judge says (docs/judge.md), each part in its own column; Haiku (valid): "
                     "the kit's verifier on the extracted poem; Haiku "
                     "(pyphen): the reference's counter on the raw output; Similarity: "
                     "cos(topic, output) - 0.5; Total = Haiku + Similarity.")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        head = ["model", "n"]
        for _, key, _ in COLUMNS:
            head += [key, f"{key}_ci_low", f"{key}_ci_high"]
        writer.writerow(head)
        for name, result in zip(self.names, self.results):
            row: list = [name, result.meta.get("n", len(result.records))]
            for _, key, _ in COLUMNS:
                lo, hi = result.ci.get(key, [math.nan, math.nan])
                row += [result.metrics.get(key, math.nan), lo, hi]
            writer.writerow(row)
        return buf.getvalue()

    def pass_at_k_markdown(self) -> str:
        ks = sorted({k for r in self.results for k in r.pass_at_k})
        if ks == [1] or not ks:
            return ""
        lines = ["| Model | " + " | ".join(f"pass@{k}" for k in ks) + " |",
                 "|" + "---|" * (len(ks) + 1)]
        for name, result in zip(self.names, self.results):
            cells = [_fmt(result.pass_at_k.get(k), False) if k in result.pass_at_k else "n/a"
                     for k in ks]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def compare(results: dict[str, EvalResult]) -> ComparisonTable:
    """The comparison table of several runs, in the given order."""
    if not results:
        raise ValueError("compare: no results given")
    return ComparisonTable(list(results), list(results.values()))


# --------------------------------------------------------------------------- the terminal summary


SUMMARY_COLUMNS = (
    ("Good", "good", ""),
    ("Haiku", "haiku", ""),
    ("Similarity", "similarity", ""),
    ("Total", "total", ""),
    ("Train overlap", "train_overlap", "%"),
)


def summary_table(results: dict[str, Any]) -> str:
    """The headline metrics (the reference's columns) with 95% CIs, narrow enough for a
    terminal; RUN/report/table.md has every column."""

    def cell(result, key: str, unit: str) -> str:
        scale = 100 if unit else 1
        value, (lo, hi) = result.metrics[key], result.ci[key]
        return f"{value * scale:.3f}{unit} [{lo * scale:.3f}{unit}, {hi * scale:.3f}{unit}]"

    # "Good" needs the judge (results saved before it, or scored without similarity, lack it)
    columns = [c for c in SUMMARY_COLUMNS
               if c[1] != "good" or all("good" in r.metrics for r in results.values())]
    head = ["Model", "n", *(title for title, _, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, str(len(r.records)), *(cell(r, k, u) for _, k, u in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- failures


def failure_types(record: dict) -> list[str]:
    """Failure kinds of one output: empty, wrong line count, line i off by n, preamble, copy."""
    kinds = []
    if record.get("empty"):
        kinds.append("empty")
    elif record["lines"] != len(PATTERN):
        lines = record["lines"]
        kinds.append(f"wrong line count: {lines if lines < 6 else '6+'}")
    else:
        for i, err in enumerate(record["line_errors"], 1):
            if err:
                kinds.append(f"line {i} off by {err:+d}")
    if record.get("preamble"):
        kinds.append("preamble")
    if record.get("prompt_copy"):
        kinds.append("prompt copy")
    if record.get("hit_limit"):
        kinds.append("hit token limit")
    return kinds


def failure_analysis(results: dict[str, EvalResult]) -> str:
    """Markdown: per model, how many outputs show each failure kind, with one example each."""
    parts = [
        "# Failure analysis\n",
        "An output can show several kinds. Line errors are the verifier's signed error of the "
        + "closest pronunciation (3-line outputs only).\n",
    ]
    for name, result in results.items():
        counts: Counter = Counter()
        examples: dict[str, dict] = {}
        for record in result.records:
            for kind in failure_types(record):
                counts[kind] += 1
                examples.setdefault(kind, record)
        n = len(result.records)
        parts.append(f"## {name}\n")
        if not counts:
            parts.append(f"No failures in {n} outputs.\n")
            continue
        parts.append("| Failure | Count | Share |\n|---|---|---|")
        for kind, count in counts.most_common():
            parts.append(f"| {kind} | {count} | {100 * count / n:.1f}% |")
        parts.append("")
        for kind, _ in counts.most_common():
            ex = examples[kind]
            parts.append(f"**{kind}** (topic: {ex['topic']}); verdict: {ex['reason']}\n")
            parts.append(_quote(ex["completion"]))
    return "\n".join(parts) + "\n"


def _quote(text: str, limit: int = 400) -> str:
    text = text if len(text) <= limit else text[:limit] + " [...]"
    return "\n".join("> " + (line or " ") for line in (text or "(empty)").split("\n")) + "\n"


def samples_markdown(results: dict[str, EvalResult], samples: int = 12, seed: int = 0) -> str:
    """`samples` outputs of each model drawn at random (seeded, never chosen: the same prompts
    for every model when they scored the same ones), with their counts and the judge's verdict."""
    import random

    parts = ["# Sample outputs\n",
             f"{samples} outputs per model, drawn at random (seed {seed}), not chosen.\n"]
    for name, result in results.items():
        parts.append(f"## {name}\n")
        picked = sorted(random.Random(seed).sample(range(len(result.records)),
                                                   min(samples, len(result.records))))
        for record in (result.records[i] for i in picked):
            counts = ", ".join("/".join(map(str, c)) or "0" for c in record["counts"][:5])
            if len(record["counts"]) > 5:
                counts += f", ... ({len(record['counts'])} lines)"
            verdict = "haiku" if record["is_haiku"] else record["reason"]
            sim = record.get("similarity")
            sim_text = "n/a" if sim is None or math.isnan(sim) else f"{sim:+.3f}"
            judged = ""
            if record.get("good") is not None:
                judged = "; **good**" if record["good"] else "; not good: " + "; ".join(
                    record.get("judge_reasons") or ["not valid"])
            parts.append(f"**Topic:** {record['topic']}  \n"
                         f"syllables: {counts or '-'}; {verdict}; similarity {sim_text}{judged}\n")
            parts.append(_quote(record["completion"]))
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, x, series: dict[str, list[float]], errors: dict | None = None) -> None:
    """One bar per series at each x, side by side (optional symmetric-or-2xN error bars)."""
    width = 0.8 / max(1, len(series))
    for j, (name, heights) in enumerate(series.items()):
        yerr = None if errors is None else errors[name]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, heights, width, yerr=yerr,
               capsize=3 if yerr is not None else 0, label=name)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_metrics(results: dict[str, EvalResult], path: Path) -> Path:
    """Grouped bars per metric, one bar per model, with 95% CI whiskers."""
    import numpy as np

    plt = _pyplot()
    names = list(results)
    x = np.arange(len(BAR_METRICS))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(BAR_METRICS) * max(1, len(names) / 2)), 4))
    series, errors = {}, {}
    for name in names:
        result = results[name]
        values = np.array([result.metrics.get(m, math.nan) for m in BAR_METRICS], dtype=float)
        ci = np.array([result.ci.get(m, [math.nan, math.nan]) for m in BAR_METRICS], dtype=float)
        series[name] = np.nan_to_num(values)
        errors[name] = np.nan_to_num(np.abs(np.vstack([values - ci[:, 0], ci[:, 1] - values])))
    _grouped_bars(ax, x, series, errors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, ["Haiku", "Haiku (pyphen)", "Similarity", "Total"])
    ax.set_ylabel("score (95% CI)")
    ax.set_title("Evaluation metrics")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_syllable_errors(results: dict[str, EvalResult], path: Path) -> Path:
    """Per line, the histogram of signed syllable errors (3-line outputs), one series per model."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PATTERN), figsize=(4 * len(PATTERN), 3.5), sharey=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        key = f"line{i + 1}"
        hists = {n: {int(e): c for e, c in r.distributions["line_errors"].get(key, {}).items()}
                 for n, r in results.items()}
        errors = sorted({e for h in hists.values() for e in h}) or [0]
        # At least -3..+3 so models compare on one scale; the long tail is clipped at +-8.
        lo, hi = max(min(min(errors), -3), -8), min(max(max(errors), 3), 8)
        x = np.arange(lo, hi + 1)
        series = {}
        for name, hist in hists.items():
            total = sum(hist.values()) or 1
            series[name] = [sum(c for e, c in hist.items()
                                if e == v or (v == lo and e < lo) or (v == hi and e > hi)) / total
                            for v in x]
        _grouped_bars(ax, x, series)
        ax.set_xticks(x, [f"<={v}" if v == lo and v == -8 else f">={v}" if v == hi and v == 8
                          else f"{v:+d}" for v in x])
        ax.set_title(f"line {i + 1} (target {PATTERN[i]})")
        ax.set_xlabel("syllables - target")
    np.atleast_1d(axes)[0].set_ylabel("share of 3-line outputs")
    np.atleast_1d(axes)[-1].legend(fontsize="small")
    return _save(fig, path)


def plot_line_counts(results: dict[str, EvalResult], path: Path) -> Path:
    """Share of outputs by number of lines, one series per model."""
    import numpy as np

    plt = _pyplot()
    counts = {n: {int(k): v for k, v in r.distributions["line_counts"].items()}
              for n, r in results.items()}
    keys = sorted({min(k, 8) for c in counts.values() for k in c}) or [0]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _grouped_bars(ax, x, {
        name: [sum(v for k, v in c.items() if min(k, 8) == key) / (sum(c.values()) or 1)
               for key in keys]
        for name, c in counts.items()
    })
    ax.set_xticks(x, [f"{k}+" if k == 8 else str(k) for k in keys])
    ax.set_xlabel("lines in the extracted poem")
    ax.set_ylabel("share of outputs")
    ax.legend(fontsize="small")
    return _save(fig, path)


# --------------------------------------------------------------------------- verdict


def verdict(results: dict[str, EvalResult], before: str = "sft", after: str = "grpo",
            metric: str = "haiku") -> str | None:
    """One line: how far `after` moved `metric` from `before`, whether their 95% CIs overlap,
    and, when both scored the same prompts, the paired difference with its 95% CI."""
    if before not in results or after not in results:
        return None
    a, b = results[before], results[after]
    if metric not in a.metrics or metric not in b.metrics:
        return None
    (lo_a, hi_a), (lo_b, hi_b) = (r.ci.get(metric, [math.nan, math.nan]) for r in (a, b))
    diff, overlap = 100 * (b.metrics[metric] - a.metrics[metric]), not (lo_b > hi_a or hi_b < lo_a)
    line = (f"{after.upper()} vs {before.upper()}: {diff:+.1f} points of {metric}, "
            f"95% CIs {'overlap' if overlap else 'do not overlap'}")
    paired = paired_difference(a, b, metric)
    if paired is None:
        return line
    mean, low, high = (100 * v for v in paired)
    return f"{line}; paired on the same prompts: {mean:+.1f} [{low:+.1f}, {high:+.1f}]"


# --------------------------------------------------------------------------- report


def write_report(results: dict[str, EvalResult], out_dir: str | Path, samples: int = 12,
                 curve: list[dict] | None = None) -> Path:
    """Write table.md, table.csv, metrics.png, syllable_errors.png, line_counts.png,
    samples.md and failures.md into out_dir (and learning_curve.png/json for a GRPO `curve`,
    see learning_curve); return the path of report.md linking them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = compare(results)
    (out / "table.md").write_text(table.markdown(), encoding="utf-8")
    (out / "table.csv").write_text(table.csv(), encoding="utf-8")
    plot_metrics(results, out / "metrics.png")
    plot_syllable_errors(results, out / "syllable_errors.png")
    plot_line_counts(results, out / "line_counts.png")
    (out / "samples.md").write_text(samples_markdown(results, samples), encoding="utf-8")
    (out / "failures.md").write_text(failure_analysis(results), encoding="utf-8")

    parts = ["# Evaluation report\n", table.markdown()]
    for metric in ("good", "haiku"):
        line = verdict(results, metric=metric)
        if line:
            parts.append(line + "\n")
    reference = reference_markdown(results)  # results evaluated under eval.protocol=reference
    if reference:
        (out / "reference.md").write_text(reference, encoding="utf-8")
        parts.append(reference)
        line = verdict(results, metric="reference_haiku")
        if line:
            parts.append(line + "\n")
    if curve:
        import json

        (out / "learning_curve.json").write_text(json.dumps(curve, indent=1), encoding="utf-8")
        plot_learning_curve(curve, out / "learning_curve.png")
        rows = ["| step | rollouts | valid haiku | mean distance |", "|---|---|---|---|"]
        rows += [f"| {c['step']} | {c['n']} | {c['valid']:.3f} | {c['distance']:.2f} |" for c in curve]
        parts += ["## GRPO learning curve (the rollouts of each step)\n", "\n".join(rows) + "\n",
                  "![GRPO learning curve](learning_curve.png)\n"]
    pass_k = table.pass_at_k_markdown()
    if pass_k:
        parts += ["## Valid haiku with k samples (pass@k, unbiased estimator)\n", pass_k]
    settings = []
    for name, result in results.items():
        meta = result.meta
        bits = [f"{meta.get('n_prompts', '?')} prompts x k={meta.get('k', '?')}"]
        if "sampling" in meta:
            s = meta["sampling"]
            bits.append("greedy" if not s.get("do_sample", True) else
                        f"temperature {s['temperature']}, top_p {s['top_p']}, top_k {s['top_k']}")
        if "max_new_tokens" in meta:
            bits.append(f"max_new_tokens {meta['max_new_tokens']}")
        if "seed" in meta:
            bits.append(f"seed {meta['seed']}")
        if meta.get("protocol"):
            bits.append(f"protocol {meta['protocol']}")
        settings.append(f"- **{name}**: " + ", ".join(bits))
    parts += ["## Settings\n", "\n".join(settings) + "\n"]
    parts += [
        "## Files\n",
        "- [table.md](table.md), [table.csv](table.csv)"
        + (", [reference.md](reference.md): the reference protocol beside the published table"
           if reference else ""),
        "- [samples.md](samples.md): sample outputs per model",
        "- [failures.md](failures.md): failure kinds with examples\n",
        "![metrics](metrics.png)\n",
        "![syllable errors per line](syllable_errors.png)\n",
        "![line counts](line_counts.png)\n",
    ]
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
