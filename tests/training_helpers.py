"""Shared pieces of the training tests (test_sft, test_grpo): rows, a tiny config, a Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

from haiku_kit.config import load_preset

FAST_REWARDS = "grpo.rewards={names: [line_count_penalty, haiku_reward], weights: [1.0, 1.0]}"


def rows(n=16):
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.verify.text import build_prompt

    out = []
    for row in load_embedded()[:n]:
        prompt = build_prompt(row["topic"])
        out.append({**row, "prompt": prompt,
                    "messages": [*prompt, {"role": "assistant", "content": row["haiku"]}]})
    return out


def tiny_cfg(tiny_model_dir, out, *extra):
    return load_preset("cpu-smoke", [f"model.name={tiny_model_dir}", f"output_dir={out}", *extra])


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class Interrupt:
    """Simulates Ctrl-C after `at` optimizer steps."""

    def __init__(self, at):
        self.at = at

    def __getattr__(self, name):
        return lambda *a, **k: None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def load_script(path: str):
    """A repository script (scripts/, benchmarks/: no packages), imported by its path."""
    import importlib.util

    file = Path(__file__).resolve().parents[1] / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus_script():
    return load_script("scripts/build_distilled_corpus.py")
