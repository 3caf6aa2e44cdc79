"""After training: try the model on a few topics, then save and share it.

`try_it` writes one haiku per topic with the model in hand, by free sampling and with the
syllable-constrained decoder side by side, each with the verifier's per-line counts: what a user
wants to see before anything else. `save_and_share` writes the model card (always), the merged
weights and/or a GGUF when asked (export.export_run, re-scored beside the adapter), and pushes
the result when given a Hub repo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haiku_kit.export import Exported, ExportError, export_run, push
from haiku_kit.generate import SamplingSettings, WrittenHaiku, write_haiku
from haiku_kit.model_card import card_facts, render_card
from haiku_kit.runs import RunPaths

TRY_TOPICS = ("first snow in the city", "a cat asleep in the sun", "the last train home")


@dataclass
class Tried:
    """One topic written both ways."""

    topic: str
    free: WrittenHaiku
    constrained: WrittenHaiku | None


def _cell(written: WrittenHaiku | None) -> str:
    if written is None:
        return "-"
    poem = written.poem.strip().replace("\n", " / ") or "(empty)"
    counts = "-".join(str(min(c)) if c else "0" for c in written.check.counts) or "0"
    return _escape(f"{poem} ({counts}: {'valid' if written.is_haiku else 'not valid'})")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def tried_markdown(tried: list[Tried]) -> str:
    """Topic | free sampling | constrained, each poem with its syllables per line."""
    lines = ["| topic | free sampling | constrained |", "|---|---|---|"]
    lines += [f"| {_escape(t.topic)} | {_cell(t.free)} | {_cell(t.constrained)} |" for t in tried]
    return "\n".join(lines) + "\n"


def try_it(model: Any, tokenizer: Any, topics=TRY_TOPICS, constrained: bool = True,
           sampling: SamplingSettings | None = None, seed: int = 0,
           max_new_tokens: int = 64) -> list[Tried]:
    """One haiku per topic from `model` (one sample, no best-of-k), free and, with
    constrained=True, through the syllable-constrained decoder too."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    common = {"k": 1, "seed": seed, "sampling": sampling, "max_new_tokens": max_new_tokens}
    return [Tried(topic, write_haiku(topic, model, tokenizer, **common),
                  write_haiku(topic, model, tokenizer, constrained=True, **common)
                  if constrained else None)
            for topic in topics]


def save_and_share(run_dir: str | Path, stage: str = "grpo", merged: bool = False,
                   gguf: str | None = None, push_to: str | None = None,
                   rescore: int = 32) -> Path:
    """Model card for `stage`'s adapter; merged weights / GGUF when asked (re-scored beside the
    adapter, the table printed); push to `push_to` when given. Returns the folder written (or
    pushed): the adapter folder, or RUN/export/STAGE."""
    paths = RunPaths(Path(run_dir))
    if merged or gguf:
        result: Exported = export_run(paths.root, stage=stage, merged=merged, gguf=gguf,
                                      repo_id=push_to, rescore=rescore)
        for kind, path in result.files.items():
            print(f"{kind}: {path}")
        if result.scores:
            print(f"valid haiku on the run's first {rescore} eval prompts (same seed):\n"
                  + result.table())
        folder = result.folder
    else:
        folder = paths.stage_dir(stage) / "adapter"
        if not (folder / "adapter_config.json").is_file():
            raise ExportError(f"{folder}: no adapter to share (train the {stage} stage first)")
        name = push_to or f"haiku-kit-{paths.root.name}-{stage}"
        card = render_card(card_facts(paths.root, stage, "LoRA adapter", name))
        (folder / "README.md").write_text(card, encoding="utf-8")
        print(f"model card: {folder / 'README.md'}")
    if push_to:
        print(f"pushed: {push(folder, push_to)}")
    return folder
