"""Evaluation protocols: the kit's own (`eval.protocol: kit`) and the reference's
(`eval.protocol: reference`), so a run's table can sit beside the published one.

The reference is axeld5/gemma_haiku. Its table (README.md, "Evaluation Results") was made by
full_eval.py as committed in 14b39b1 (2025-04-13, the commit that added the table), which:

- reads eval_dataset/eval_data.json (592 chat rows) and asks each row's user turn verbatim;
- draws one sample per prompt, one prompt at a time, unseeded: `model.generate(...,
  max_new_tokens=50, temperature=1.0, top_p=0.95, top_k=64)`;
- decodes prompt + answer with the special tokens and cuts the answer out as
  `batch_decode(outputs)[0].split("model\\n")[1].split("\\n<end_of_turn>")[0].strip()`. An answer
  that ends "...last word<end_of_turn>" (no newline before the end token, how the chat template
  renders a turn) keeps "<end_of_turn>" glued to its last word, and pyphen counts that word as it
  counts the glued string; the repository's last commit (945d660, after the table) cuts at
  "<end_of_turn>" instead. The protocol reproduces the table's rule (REFERENCE.end_marker);
  `pyphen_haiku` beside it is the later rule (the clean answer);
- judges `reward_haiku(answer)` (rewards.py: exactly 3 non-blank lines whose pyphen counts,
  Pyphen(lang="en"), are 5, 7, 5: evaluate.metrics.pyphen_counts), `reward_similarity(topic,
  answer)` = cos(MiniLM(answer), MiniLM(topic)) - 0.5 with topic = `prompt.split(":")[1].strip()`,
  and counts an answer that equals (after strip) a training answer as a duplicate.

Under `reference` the kit generates in batches with a seed (the same distribution as one prompt
at a time) and reports, per model: reference_haiku / reference_similarity / reference_total (the
published columns) beside the kit's own metrics, and the published rows (PUBLISHED) under them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from haiku_kit.config import EvalSettings

PROTOCOLS = ("kit", "reference")
SOURCE = "axeld5/gemma_haiku full_eval.py @14b39b1"


@dataclass(frozen=True)
class ReferenceProtocol:
    """The reference's evaluation settings, each from its full_eval.py (@14b39b1)."""

    k: int = 1  # L114: one model.generate call per prompt, one sequence
    temperature: float = 1.0  # L117 temperature=1.0
    top_p: float = 0.95  # L117 top_p=0.95
    top_k: int = 64  # L117 top_k=64
    max_new_tokens: int = 50  # L116 max_new_tokens=50
    n_prompts: int = 0  # L198-199: every row of eval_dataset/eval_data.json (592)
    end_marker: str = "\n<end_of_turn>"  # L119 ...split("model\n")[1].split("\n<end_of_turn>")[0]
    pyphen_lang: str = "en"  # rewards.py L17: pyphen.Pyphen(lang='en')


REFERENCE = ReferenceProtocol()


@dataclass(frozen=True)
class EvalPlan:
    """What an evaluation runs: its protocol and the settings that protocol uses."""

    protocol: str
    k: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n_prompts: int  # 0: every prompt


def eval_plan(e: EvalSettings, protocol: str | None = None) -> EvalPlan:
    """The settings an evaluation under `protocol` (default: e.protocol) uses: the config's own
    under "kit", the reference's fixed ones under "reference" (the config's k, max_new_tokens,
    sampling and n_prompts do not apply)."""
    protocol = protocol or e.protocol
    if protocol == "reference":
        r = REFERENCE
        return EvalPlan("reference", r.k, r.max_new_tokens, r.temperature, r.top_p, r.top_k,
                        r.n_prompts)
    if protocol != "kit":
        raise ValueError(f"eval protocol {protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    return EvalPlan("kit", e.k, e.max_new_tokens, e.temperature, e.top_p, e.top_k, e.n_prompts)


def reference_answer(generated: str, end_marker: str = REFERENCE.end_marker) -> str:
    """The answer the reference's eval cut out of a generation. `generated` is the new tokens
    decoded WITH their special tokens (the stop token included): the reference decoded prompt +
    answer and took the text after the prompt's "model\\n" up to the next "model\\n", then up to
    `end_marker`, stripped. A text without special tokens is cut the same way (a no-op unless it
    holds "model\\n")."""
    return generated.split("model\n")[0].split(end_marker)[0].strip()


def reference_topic(prompt: str) -> str:
    """The topic the reference's similarity used: prompt.split(":")[1].strip() (its
    "Generate a haiku about the following topic: X" prompts; X up to a second colon, if any)."""
    parts = prompt.split(":")
    return parts[1].strip() if len(parts) > 1 else prompt.strip()


# The published table: axeld5/gemma_haiku README.md "Evaluation Results" (one sample per prompt
# on its 592 eval prompts, full_eval.py), with each model's schedule from its train_models.py
# (SFT = gemma_sft.py, 100 steps; GRPO = gemma_rl.py, 1,000 steps per phase).
# (name in its table, schedule, the kit preset that reproduces it, haiku, similarity, total,
# train overlap)
PUBLISHED: tuple[tuple[str, str, str, float, float, float, float], ...] = (
    ("unsloth/gemma-3-1b-it", "base model", "(base row of any ref-* run)",
     0.0372, -0.0998, -0.0627, 0.0),
    ("gemma-3-1b-haiku", "SFT 100", "ref-sft-only", 0.1351, 0.1101, 0.2453, 0.0),
    ("gemma-3-1b-sftrl-haiku", "SFT 100 -> dense GRPO 1,000", "ref-sft-grpo-dense",
     0.0878, 0.3708, 0.4587, 0.0),
    ("gemma-3-1b-sftrl-haiku-sparse", "SFT 100 -> sparse GRPO 1,000", "ref-sft-grpo-sparse",
     0.1858, -0.0880, 0.0978, 0.0),
    ("gemma-3-haiku-rl-sparse", "sparse GRPO 1,000", "ref-rl-only-sparse",
     0.1537, -0.1206, 0.0331, 0.0),
    ("gemma-3-1b-fullrun", "SFT 100 -> sparse GRPO 1,000 -> dense GRPO 1,000", "ref-full",
     0.2348, 0.0588, 0.2936, 0.0),
)


def _cell(result: Any, key: str, percent: bool = False) -> str:
    """A metric with its 95% CI, as the comparison table writes it (a share in % if percent)."""
    value = result.metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    lo, hi = result.ci.get(key, [math.nan, math.nan])
    show = (lambda v: f"{100 * v:.2f}%") if percent else (lambda v: f"{v:.4f}")
    return show(value) + ("" if math.isnan(lo) else f" [{show(lo)}, {show(hi)}]")


def is_reference(result: Any) -> bool:
    return getattr(result, "meta", {}).get("protocol") == "reference"


def reference_markdown(results: dict[str, Any]) -> str:
    """The reference protocol's table: this run's models (those evaluated under it) in the
    published columns, with the kit's own Haiku and Good beside them, then the published rows.
    Empty when no result was evaluated under the reference protocol."""
    ours = {name: r for name, r in results.items() if is_reference(r)}
    if not ours:
        return ""
    head = ("| Model | schedule | n | Haiku (pyphen, reference's cut) | Similarity | Total | "
            "Train overlap | Haiku (kit verifier) | Good |")
    lines = [f"## Reference protocol ({SOURCE})\n", head, "|" + "---|" * 9]
    for name, r in ours.items():
        lines.append(f"| {name} (this run) | {r.meta.get('schedule', '')} | {len(r.records)} | "
                     f"{_cell(r, 'reference_haiku')} | {_cell(r, 'reference_similarity')} | "
                     f"{_cell(r, 'reference_total')} | {_cell(r, 'train_overlap', True)} | "
                     f"{_cell(r, 'haiku')} | {_cell(r, 'good')} |")
    for name, schedule, preset, haiku, sim, total, overlap in PUBLISHED:
        lines.append(f"| {name} (published; kit preset `{preset}`) | {schedule} | 592 | "
                     f"{haiku:.4f} | {sim:.4f} | {total:.4f} | {100 * overlap:.2f}% | n/a | n/a |")
    note = ("This run's rows: one sample per prompt on the reference's eval prompts, temperature "
            "1.0, top_p 0.95, top_k 64, 50 new tokens, judged by pyphen on the answer cut out as "
            "the reference's full_eval.py cut it, with 95% bootstrap CIs. Published rows: "
            "axeld5/gemma_haiku README.md (point estimates, one unseeded sample per prompt); "
            "schedules from its train_models.py.")
    lines += ["", note, ""]
    return "\n".join(lines)
