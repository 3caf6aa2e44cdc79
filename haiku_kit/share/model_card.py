"""The model card (README.md) that goes with an exported or pushed model.

`card_facts` gathers what a reader of the card needs from a run folder (base model, data and its
manifest, rewards and their weights, the key hyperparameters the trainer really used, the eval
table with CIs, framework versions); `render_card` turns those facts into Hugging Face model-card
markdown with YAML front matter. Missing pieces are said to be missing, never invented.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from haiku_kit.runs import RunPaths

# What a reader needs to reproduce a run, in the order the card lists them.
KEY_HYPERPARAMETERS = (
    "learning_rate", "lr_scheduler_type", "max_steps", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
    "max_completion_length", "temperature", "beta", "loss_type", "epsilon", "epsilon_high",
    "max_grad_norm", "num_iterations", "scale_rewards", "seed",
)
EVAL_ORDER = ("base", "sft", "sft + constrained", "grpo", "grpo + constrained")


@dataclass
class CardFacts:
    """Everything the card states, each read from the run folder."""

    model_name: str
    base_model: str
    kind: str  # "LoRA adapter", "merged 16-bit", "GGUF q8_0" ...
    data: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_table: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    usage: str = ""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _rewards(effective: dict) -> dict[str, float]:
    """{name: weight} from a GRPO phase's effective.yaml ``rewards: {names, weights}``."""
    spec = effective.get("rewards") or {}
    names = spec.get("names") or []
    weights = spec.get("weights") or [1.0] * len(names)
    return {str(n): float(w) for n, w in zip(names, weights)}


def _eval_table(run: Path) -> str:
    from haiku_kit.evaluate.report import compare
    from haiku_kit.evaluate.scoring import EvalResult

    results = {}
    for name in EVAL_ORDER:
        folder = RunPaths(run).eval_dir(name)
        if (folder / "result.json").is_file():
            results[name] = EvalResult.load(folder)
    return compare(results).markdown() if results else ""


def usage_snippet(kind: str, repo_id: str, base_model: str) -> str:
    """How to load what was exported, for the card's "Use it" section."""
    if kind.startswith("GGUF"):
        return (f"```bash\nllama-cli -hf {repo_id} -p \"Write a haiku about autumn rain\"\n"
                f"# or: ollama run hf.co/{repo_id}\n```")
    if kind == "LoRA adapter":
        return ("```python\nfrom haiku_kit.generate.write import write_haiku\n"
                f"print(write_haiku(\"autumn rain\", model=\"{base_model}\", adapter=\"{repo_id}\").poem)\n"
                "# or with peft: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
                f"\"{base_model}\"), \"{repo_id}\")\n```")
    return ("```python\nfrom transformers import pipeline\n"
            f"pipe = pipeline(\"text-generation\", model=\"{repo_id}\")\n"
            "pipe([{\"role\": \"user\", \"content\": \"Write a haiku about autumn rain\"}])\n```")


def card_facts(run: str | Path, phase: str, kind: str, repo_id: str) -> CardFacts:
    """Read the facts of ``phase`` (``sft`` or ``grpo``) of a finished run folder."""
    run = Path(run)
    config = _read_yaml(run / "config.yaml")
    adapter_cfg = _read_json(run / phase / "adapter" / "adapter_config.json")
    base = (adapter_cfg.get("base_model_name_or_path")
            or (config.get("model") or {}).get("name") or "unknown")
    manifest = _read_json(run / "data" / "manifest.json")
    data = {k: manifest[k] for k in ("source", "source_sha256", "counts", "seed", "fractions")
            if k in manifest}
    hyper, rewards = {}, {}
    for name in sorted(p.parent.name for p in run.glob("*/effective.yaml")):
        effective = _read_yaml(run / name / "effective.yaml")
        hyper[name] = {k: effective[k] for k in KEY_HYPERPARAMETERS if k in effective}
        if name == phase and "rewards" in effective:
            rewards = _rewards(effective)
    return CardFacts(
        model_name=repo_id.split("/")[-1], base_model=str(base), kind=kind, data=data,
        rewards=rewards, hyperparameters=hyper, eval_table=_eval_table(run),
        versions=_read_json(run / "env.json"), usage=usage_snippet(kind, repo_id, str(base)),
    )


def _kv_lines(mapping: dict[str, Any]) -> list[str]:
    return [f"- `{k}`: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
            for k, v in mapping.items()]


def render_card(facts: CardFacts) -> str:
    """Model-card markdown, with front matter the Hub reads (base model, library, tags)."""
    front = {"base_model": facts.base_model, "library_name": "peft"
             if facts.kind == "LoRA adapter" else "transformers",
             "tags": ["haiku", "haiku-kit", "trl", "grpo", "sft"], "license": "apache-2.0"}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {facts.model_name}", "",
             (f"A {facts.kind} of `{facts.base_model}` trained with haiku-kit to write English "
              "haiku (three lines, 5-7-5 syllables, on the requested topic): SFT, then GRPO with "
              "verifiable syllable rewards and a MiniLM topic-similarity reward."), "",
             "## Use it", "", facts.usage, "", "## Data", ""]
    lines += _kv_lines(facts.data) or ["- not recorded in the run folder"]
    lines += ["", "## Rewards (GRPO)", ""]
    lines += ([f"- `{n}` × {w:g}" for n, w in facts.rewards.items()]
              or ["- no GRPO phase in this run"])
    lines += ["", "## Hyperparameters (as the trainer used them)", ""]
    for phase, values in facts.hyperparameters.items():
        lines += [f"**{phase}**", ""] + _kv_lines(values) + [""]
    if not facts.hyperparameters:
        lines += ["- not recorded in the run folder", ""]
    lines += ["## Evaluation", "", facts.eval_table or "No evaluation in this run folder.", "",
              "## Framework versions", ""]
    lines += _kv_lines(facts.versions) or ["- not recorded in the run folder"]
    return "\n".join(lines).rstrip() + "\n"
