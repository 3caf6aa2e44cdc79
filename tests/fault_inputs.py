"""The fault matrix's bad inputs (tests/fault_matrix.py runs them through the real CLI): each case
builds its files under a temporary folder and returns the `haiku-kit` arguments, with the words
the CLI's one last line must hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOOD_ROWS = REPO / "haiku_kit" / "resources" / "haiku.jsonl"
SMOKE = ["--preset", "cpu-smoke"]


def _good_lines(n: int = 40) -> list[str]:
    return GOOD_ROWS.read_text(encoding="utf-8").splitlines()[:n]


def _data_build(source: Path, tmp: Path) -> list[str]:
    return ["data", "build", "--source", str(source), "--out", str(tmp / "splits"),
            "--min-similarity", "none"]  # fmt: skip


def _non_utf8_jsonl(tmp: Path) -> list[str]:
    path = tmp / "latin1.jsonl"
    bad = '{"topic": "caf\u00e9", "haiku": "a\\nb\\nc"}'.encode("latin-1")
    path.write_bytes("\n".join(_good_lines(5)).encode() + b"\n" + bad + b"\n")
    return _data_build(path, tmp)


def _non_utf8_csv(tmp: Path) -> list[str]:
    path = tmp / "latin1.csv"
    path.write_bytes(b'topic,haiku\nautumn,"a\nb\nc"\n' + "caf\u00e9,x\n".encode("latin-1"))
    return _data_build(path, tmp)


def _csv_field_over_limit(tmp: Path) -> list[str]:
    path = tmp / "big_field.csv"
    path.write_text('topic,haiku\nautumn,"' + "leaf " * 40_000 + '"\n', encoding="utf-8")
    return _data_build(path, tmp)


def _empty_file(tmp: Path) -> list[str]:
    path = tmp / "empty.jsonl"
    path.write_bytes(b"")
    return _data_build(path, tmp)


def _bad_preset_yaml(tmp: Path) -> list[str]:
    path = tmp / "broken.yaml"
    path.write_text("base: cpu-smoke\nsft:\n  max_steps: [3, 4\n", encoding="utf-8")
    return ["train", "sft", "--preset", str(path), "--out", str(tmp / "run")]


def _unknown_preset_pipeline(tmp: Path) -> list[str]:
    return ["pipeline", "--preset", "no-such-preset", "--out", str(tmp / "run")]


def _mistyped_key_pipeline(tmp: Path) -> list[str]:
    return ["pipeline", *SMOKE, "--set", "sft.lerning_rate=1e-4", "--out", str(tmp / "run")]


def _negative_learning_rate(tmp: Path) -> list[str]:
    return ["train", "sft", *SMOKE, "--set", "sft.learning_rate=-2e-4", "--out", str(tmp / "run")]


def _grpo_max_steps_minus_one(tmp: Path) -> list[str]:
    return ["train", "grpo", *SMOKE, "--set", "grpo.max_steps=-1", "--out", str(tmp / "run")]


def _sft_zero_steps(tmp: Path) -> list[str]:
    return ["train", "sft", *SMOKE, "--set", "sft.max_steps=0", "--out", str(tmp / "run")]


def _two_keys_one_set(tmp: Path) -> list[str]:
    """Both values after one --set are read: the second one is the bad one."""
    return ["train", "sft", *SMOKE, "--set", "sft.max_steps=2", "sft.save_steps=0",
            "--out", str(tmp / "run")]  # fmt: skip


def _resume_without_checkpoint(tmp: Path) -> list[str]:
    return ["train", "sft", *SMOKE, "--resume", "latest", "--out", str(tmp / "run")]


def _resume_and_fresh(tmp: Path) -> list[str]:
    return ["train", "sft", *SMOKE, "--resume", "--fresh", "--out", str(tmp / "run")]


def make_adapter(folder: Path, hidden: int, declares: str, arch: str = "gemma3") -> Path:
    """A LoRA adapter (untrained) for a tiny random model of another shape or architecture."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config

    if arch == "gemma3":
        config = Gemma3TextConfig(
            vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=64, layer_types=["sliding_attention", "full_attention"],
        )  # fmt: skip
        targets = ["q_proj", "v_proj"]
    else:
        config = GPT2Config(vocab_size=512, n_embd=hidden, n_layer=2, n_head=4, n_positions=64)
        targets = ["c_attn"]
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_config(config),
        LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"),
    )
    model.save_pretrained(folder)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = declares
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    return folder


def _adapter_other_gemma3(tmp: Path) -> list[str]:
    adapter = make_adapter(tmp / "adapter-1b", 96, "google/gemma-3-1b-pt")
    return ["eval", "--adapter", str(adapter), "--model", "embedded", "--n", "1",
            "--out", str(tmp / "eval")]  # fmt: skip


def _adapter_other_architecture(tmp: Path) -> list[str]:
    adapter = make_adapter(tmp / "adapter-gpt2", 64, "gpt2", arch="gpt2")
    return ["eval", "--adapter", str(adapter), "--model", "embedded", "--n", "1",
            "--out", str(tmp / "eval")]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], list[str]]
    expect: tuple[str, ...]  # all in the last stderr line


CASES = [
    Case("non-UTF-8 JSONL", _non_utf8_jsonl, ("latin1.jsonl: line 6 is not UTF-8", "save the")),
    Case("non-UTF-8 CSV", _non_utf8_csv, ("latin1.csv: line 5 is not UTF-8",)),
    Case("CSV field over the csv limit", _csv_field_over_limit, ("big_field.csv: line", "limit")),
    Case("empty file", _empty_file, ("empty.jsonl: the file is empty",)),
    Case("preset YAML syntax error", _bad_preset_yaml, ("broken.yaml: not valid YAML",)),
    Case(
        "pipeline: unknown preset", _unknown_preset_pipeline, ("unknown preset 'no-such-preset'",)
    ),
    Case("pipeline: mistyped --set key", _mistyped_key_pipeline, ("sft.lerning_rate",)),
    Case("negative learning rate", _negative_learning_rate, ("sft.learning_rate=-0.0002",)),
    Case("grpo.max_steps=-1", _grpo_max_steps_minus_one, ("grpo.max_steps=-1",)),
    Case("sft.max_steps=0", _sft_zero_steps, ("sft.max_steps=0",)),
    Case("--set a=1 b=2 (b bad)", _two_keys_one_set, ("sft.save_steps=0",)),
    Case("--resume latest, no checkpoint", _resume_without_checkpoint, ("no complete checkpoint",)),
    Case("--resume with --fresh", _resume_and_fresh, ("--resume", "--fresh")),
    Case("adapter of another Gemma 3", _adapter_other_gemma3, ("different base model",)),
    Case("adapter of another architecture", _adapter_other_architecture, ("different base",)),
]
