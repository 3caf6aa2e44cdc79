"""A hostile user's inputs to the `haiku-kit` CLI, by class (issue 42).

Each case builds its files under a temporary folder and returns the CLI arguments. It states the
exit code it must end with, the words the CLI's last stderr line must hold (the culprit: file,
row, key or argument), and bounds on wall time and peak memory. tests/hostile.py runs every case
in its own process and prints the table by class (docs/reliability.md); tests/test_hostile.py
runs the cheap ones (no model load, no training) inside pytest. Both check for every case: the
exit code, the culprit named, no traceback, and nothing lost (every file that existed before
the command is still there, byte for byte).

The classes:
- bounded: reads and work that must stop at a cap (endless files, huge lines, huge numbers);
- recursion: nesting that would overflow Python's stack (JSON, YAML, preset chains);
- ranges: numbers out of range, NaN, infinities, wrong types, for flags and config keys;
- encodings: files and text that are not UTF-8, control characters, odd scripts;
- artifacts: corrupted or mismatched adapters, presets, run folders, caches, splits;
- concurrency and signals (in tests/hostile.py only: they train): two writers of one run folder,
  --fresh against a live run, Ctrl-C, SIGTERM, kill -9 and a rerun.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOOD_ROWS = REPO / "haiku_kit" / "resources" / "haiku.jsonl"
SMOKE = ["--preset", "cpu-smoke"]
POEM = "an old silent pond\na frog jumps into the pond\nsplash silence again\n"


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    build: Callable[[Path], list[str]]
    rc: int = 2
    expect: tuple[str, ...] = ()  # each in the CLI's last stderr line (the culprit)
    cheap: bool = True  # no model load and no training: runs inside pytest too
    max_s: float = 60.0  # wall time bound, in its own process on 2 shared cores
    max_mb: float = 1500.0  # peak resident memory bound, in its own process
    env: dict[str, str] = field(default_factory=dict)  # "{tmp}" is the case's folder


CASES: list[Case] = []


def case(kind: str, name: str, rc: int = 2, *expect: str, **settings) -> Callable:
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(kind, name, build, rc, tuple(expect), **settings))
        return build

    return register


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def _good_lines(n: int = 40) -> list[str]:
    return GOOD_ROWS.read_text(encoding="utf-8").splitlines()[:n]


def _data_build(source: Path, tmp: Path, *more: str) -> list[str]:
    return ["data", "build", "--source", str(source), "--out", str(tmp / "splits"),
            "--min-similarity", "none", *more]  # fmt: skip


def _preset(tmp: Path, text: str | bytes, name: str = "preset.yaml") -> list[str]:
    path = _write(tmp / name, text)
    return ["train", "sft", "--preset", str(path), "--out", str(tmp / "run")]


def _train_set(*pairs: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "sft", *SMOKE, "--set", *pairs, "--out", str(tmp / "run")]


def _adapter_folder(tmp: Path, config: str | bytes | None, weights: bytes | None) -> Path:
    folder = tmp / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        _write(folder / "adapter_config.json", config)
    if weights is not None:
        _write(folder / "adapter_model.safetensors", weights)
    return folder


def _eval_adapter(tmp: Path, folder: Path, *model: str) -> list[str]:
    return ["eval", "--adapter", str(folder), *model, "--n", "1", "--out", str(tmp / "eval")]


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


DEEP = "[" * 100_000 + "]" * 100_000
LORA_CONFIG = json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                          "target_modules": ["q_proj"], "base_model_name_or_path": "embedded"})


# --------------------------------------------------------------------------- bounded


@case("bounded", "check /dev/zero (endless file)", 2, "/dev/zero", "U+0000", max_mb=300)
def _(tmp):
    return ["check", "/dev/zero"]


@case("bounded", "check a 200 MB sparse file", 2, "big.txt", "U+0000", max_mb=300)
def _(tmp):
    return ["check", str(_sparse(tmp / "big.txt", 200 << 20))]


@case("bounded", "check a 20 MB one-line text", 1, max_mb=300)
def _(tmp):
    return ["check", str(_write(tmp / "line.txt", "snow " * (4 << 20)))]


@case("bounded", "write a 100,000-character topic", 2, "topic", "100,000")
def _(tmp):
    return ["write", "x" * 100_000]


@case("bounded", "write --max-new-tokens 100000000", 2, "--max-new-tokens")
def _(tmp):
    return ["write", "snow", "--max-new-tokens", "100000000"]


@case("bounded", "write --k 100000", 2, "--k")
def _(tmp):
    return ["write", "snow", "--k", "100000"]


@case("bounded", "eval --max-new-tokens 100000000", 2, "--max-new-tokens")
def _(tmp):
    return ["eval", "--max-new-tokens", "100000000", "--out", str(tmp / "e")]


@case("bounded", "eval --set eval.max_new_tokens=100000000", 2, "eval.max_new_tokens")
def _(tmp):
    return ["eval", "--set", "eval.max_new_tokens=100000000", "--out", str(tmp / "e")]


@case("bounded", "eval --batch-size 10000000", 2, "--batch-size")
def _(tmp):
    return ["eval", "--batch-size", "10000000", "--out", str(tmp / "e")]


@case("bounded", "eval --candidates 10000000", 2, "--candidates")
def _(tmp):
    return ["eval", "--candidates", "10000000", "--out", str(tmp / "e")]


@case("bounded", "eval --k 10000000", 2, "--k")
def _(tmp):
    return ["eval", "--k", "10000000", "--out", str(tmp / "e")]


@case("bounded", "train --set grpo.num_generations=100000", 2, "grpo.num_generations")
def _(tmp):
    return _train_set("grpo.num_generations=100000")(tmp)


@case("bounded", "train --set model.max_seq_length=10000000", 2, "model.max_seq_length")
def _(tmp):
    return _train_set("model.max_seq_length=10000000")(tmp)


@case("bounded", "check --pattern of 101 lines", 2, "--pattern")
def _(tmp):
    return ["check", str(_write(tmp / "p.txt", POEM)), "--pattern=" + "-".join(["5"] * 101)]


@case("bounded", "check --pattern 5-100000", 2, "--pattern")
def _(tmp):
    return ["check", str(_write(tmp / "p.txt", POEM)), "--pattern=5-100000"]


@case("bounded", "data build: folder holding a 20 GB sparse file", 2, "disk.jsonl", "sparse")
def _(tmp):
    _write(tmp / "src" / "poems.jsonl", "\n".join(_good_lines(10)) + "\n")
    _sparse(tmp / "src" / "disk.jsonl", 20 << 30)
    return _data_build(tmp / "src", tmp)


@case("bounded", "data build: folder of 10,001 files", 2, "over 10000 files")
def _(tmp):
    for i in range(10_001):
        (tmp / "many" / f"{i // 1000}").mkdir(parents=True, exist_ok=True)
        (tmp / "many" / f"{i // 1000}" / f"{i}.jsonl").touch()
    return _data_build(tmp / "many", tmp)


@case("bounded", "data build: a 300 MB sparse .json", 2, "huge.json", "over the")
def _(tmp):
    return _data_build(_sparse(tmp / "huge.json", 300 << 20), tmp)


@case("bounded", "data build: a 200 MB sparse .jsonl (one line of NULs)", 2, "nul.jsonl",
      max_mb=400)
def _(tmp):
    return _data_build(_sparse(tmp / "nul.jsonl", 200 << 20), tmp)


@case("bounded", "data build: CSV field over the csv limit", 2, "big_field.csv", "limit")
def _(tmp):
    path = _write(tmp / "big_field.csv", 'topic,haiku\nautumn,"' + "leaf " * 40_000 + '"\n')
    return _data_build(path, tmp)


@case("bounded", "data build: 50 MB JSONL with three 16 MB lines", 0, "huge.jsonl",
      "line 203", cheap=False, max_mb=600, max_s=120)
def _(tmp):
    path = tmp / "huge.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for line in _good_lines(200):
            fh.write(line + "\n")
        for _ in range(3):
            fh.write(json.dumps({"topic": "t", "haiku": "x " * (8 << 20)}) + "\n")
    return _data_build(path, tmp)


@case("bounded", "a 200 MB sparse preset file", 2, "huge.yaml", "over", max_mb=300)
def _(tmp):
    path = _sparse(tmp / "huge.yaml", 200 << 20)
    return ["train", "sft", "--preset", str(path), "--out", str(tmp / "run")]


@case("bounded", "--set with a 100 kB value", 2, "model.name", "characters")
def _(tmp):  # 128 kB is the most Linux passes in one argument
    return _train_set("model.name=" + "m" * 100_000)(tmp)


@case("bounded", "--out a 5,000-character path", 2, "File name too long")
def _(tmp):
    return ["train", "sft", *SMOKE, "--out", str(tmp / ("r" * 5000))]


# --------------------------------------------------------------------------- recursion


@case("recursion", "data build: JSONL row nested 100,000 deep", 0, "row 41", "nested too deeply")
def _(tmp):
    return _data_build(_write(tmp / "deep.jsonl", "\n".join(_good_lines()) + "\n" + DEEP + "\n"),
                       tmp)


@case("recursion", "data build: only row nested 100,000 deep", 2, "deep.jsonl")
def _(tmp):
    return _data_build(_write(tmp / "deep.jsonl", DEEP + "\n"), tmp)


@case("recursion", "data build: .json nested 100,000 deep", 2, "deep.json", "nested too deeply")
def _(tmp):
    return _data_build(_write(tmp / "deep.json", DEEP), tmp)


@case("recursion", "data build: deep chat JSON turn", 2, "chat.jsonl")
def _(tmp):
    row = '{"conversations": [{"role": "user", "content": ' + DEEP + "}]}"
    return _data_build(_write(tmp / "chat.jsonl", row + "\n"), tmp)


@case("recursion", "preset YAML nested 100,000 deep", 2, "deep.yaml")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nsft: " + DEEP + "\n", "deep.yaml")


@case("recursion", "preset YAML of nested mappings", 2, "maps.yaml")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nsft: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
                   "maps.yaml")


@case("recursion", "preset YAML alias bomb (10^10 items)", 2, "bomb.yaml", "aliases",
      max_mb=600)
def _(tmp):
    lines = ["base: cpu-smoke", "description: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    lines += ["model: {lora: {target_modules: *a9}}"]
    return _preset(tmp, "\n".join(lines) + "\n", "bomb.yaml")


@case("recursion", "preset whose base is itself", 2, "loop.yaml", "inherits from itself")
def _(tmp):
    return _preset(tmp, "base: loop.yaml\nsft: {max_steps: 2}\n", "loop.yaml")


@case("recursion", "presets a -> b -> a", 2, "a.yaml -> b.yaml -> a.yaml")
def _(tmp):
    _write(tmp / "b.yaml", "base: a.yaml\nsft: {max_steps: 3}\n")
    return _preset(tmp, "base: b.yaml\nsft: {max_steps: 2}\n", "a.yaml")


@case("recursion", "--set value nested 2,000 deep", 2, "sft.max_steps", "nested too deeply")
def _(tmp):  # 4,000 characters: under the --set cap, past Python's stack
    return _train_set("sft.max_steps=" + "[" * 2000 + "]" * 2000)(tmp)


@case("recursion", "adapter_config.json nested 100,000 deep", 2, "adapter_config.json")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, DEEP, b"x"))


@case("recursion", "eval --data JSONL nested 100,000 deep", 2, "deep.jsonl")
def _(tmp):
    return ["eval", "--data", str(_write(tmp / "deep.jsonl", DEEP + "\n")), "--out",
            str(tmp / "e")]


# --------------------------------------------------------------------------- ranges

RANGE_CASES = [
    ("sft.learning_rate", "-2e-4"), ("sft.learning_rate", "nan"), ("sft.learning_rate", "inf"),
    ("sft.learning_rate", "0"), ("sft.learning_rate", "fast"), ("sft.max_steps", "0"),
    ("sft.max_steps", "-5"), ("sft.max_steps", "2.5"), ("sft.max_steps", "true"),
    ("sft.save_steps", "0"), ("sft.per_device_train_batch_size", "0"),
    ("sft.gradient_accumulation_steps", "-1"), ("sft.warmup_ratio", "2"),
    ("sft.num_train_epochs", "-1"), ("grpo.max_steps", "-1"), ("grpo.learning_rate", "nan"),
    ("grpo.num_generations", "1"), ("grpo.temperature", "-1"), ("grpo.temperature", "nan"),
    ("grpo.top_p", "0"), ("grpo.top_p", "1.5"), ("grpo.top_k", "-3"), ("grpo.beta", "-1"),
    ("grpo.max_completion_length", "0"), ("grpo.per_device_train_batch_size", "3"),
    ("eval.n_prompts", "-1"), ("eval.batch_size", "0"), ("eval.k", "0"),
    ("model.max_seq_length", "8"), ("model.backend", "tensorflow"), ("model.device", "tpu"),
    ("model.lora.r", "0"), ("model.lora.r", "-8"), ("model.lora.alpha", "nan"),
    ("model.lora.dropout", "1.5"), ("model.lora.target_modules", "[]"), ("eval.temperature", "0"),
    ("distill.top_p", "-1"), ("grpo.min_p", "2"), ("grpo.epsilon", "-0.2"),
    ("phases", "[rlhf]"), ("seed", "abc"), ("grpo.trainer_args", "{bogus_key: 3}"),
    ("sft.trainer_args", "[1, 2]"),
]


def _range_case(key: str, value: str) -> None:
    @case("ranges", f"--set {key}={value}", 2, key)
    def _(tmp):
        return _train_set(f"{key}={value}")(tmp)


for _key, _value in RANGE_CASES:
    _range_case(_key, _value)


@case("ranges", "eval --n -1", 2, "--n")
def _(tmp):
    return ["eval", "--n", "-1", "--out", str(tmp / "e")]


@case("ranges", "data build --min-similarity nan", 2, "--min-similarity")
def _(tmp):
    return ["data", "build", "--out", str(tmp / "d"), "--min-similarity", "nan"]


@case("ranges", "data build --min-similarity 5", 2, "--min-similarity")
def _(tmp):
    return ["data", "build", "--out", str(tmp / "d"), "--min-similarity", "5"]


@case("ranges", "export --rescore -3", 2, "--rescore")
def _(tmp):
    return ["export", str(tmp), "--rescore", "-3"]


@case("ranges", "check --pattern=5--7", 2, "--pattern")
def _(tmp):
    return ["check", str(_write(tmp / "p.txt", POEM)), "--pattern=5--7"]


@case("ranges", "check --pattern=--", 2, "--pattern")
def _(tmp):
    return ["check", str(_write(tmp / "p.txt", POEM)), "--pattern=--"]


@case("ranges", "check --pattern=five", 2, "--pattern")
def _(tmp):
    return ["check", str(_write(tmp / "p.txt", POEM)), "--pattern=five"]


@case("ranges", "write --seed -1", 2, "--seed")
def _(tmp):
    return ["write", "snow", "--seed", "-1"]


@case("ranges", "app --port 70000", 2, "--port")
def _(tmp):
    return ["app", str(tmp), "--port", "70000"]


@case("ranges", "data build: a 2-row source", 2, "rows")
def _(tmp):
    return _data_build(_write(tmp / "two.jsonl", "\n".join(_good_lines(2)) + "\n"), tmp)


@case("ranges", "--resume with --fresh", 2, "--resume", "--fresh")
def _(tmp):
    return ["train", "sft", *SMOKE, "--resume", "--fresh", "--out", str(tmp / "run")]


@case("ranges", "--set without =", 2, "sft.max_steps")
def _(tmp):
    return _train_set("sft.max_steps")(tmp)


@case("ranges", "--set of an unknown key", 2, "sft.lerning_rate")
def _(tmp):
    return _train_set("sft.lerning_rate=1e-4")(tmp)


# --------------------------------------------------------------------------- encodings


@case("encodings", "check a UTF-16 file", 2, "utf16.txt", "UTF-8")
def _(tmp):
    return ["check", str(_write(tmp / "utf16.txt", POEM.encode("utf-16")))]


@case("encodings", "check a binary file", 2, "binary.bin", "UTF-8")
def _(tmp):
    return ["check", str(_write(tmp / "binary.bin", bytes(range(256))))]


@case("encodings", "check a Latin-1 file", 2, "latin1.txt", "UTF-8")
def _(tmp):
    return ["check", str(_write(tmp / "latin1.txt", "caf\u00e9 au lait\n".encode("latin-1")))]


@case("encodings", "check a poem with a UTF-8 BOM and CRLF", 0)
def _(tmp):
    return ["check", str(_write(tmp / "bom.txt", "\ufeff" + POEM.replace("\n", "\r\n")))]


@case("encodings", "check an empty file", 1)
def _(tmp):
    return ["check", str(_write(tmp / "empty.txt", ""))]


@case("encodings", "check a poem holding NUL bytes", 2, "nul.txt", "U+0000")
def _(tmp):
    return ["check", str(_write(tmp / "nul.txt", POEM.replace(" ", "\x00")))]


@case("encodings", "check a missing file", 2, "missing.txt")
def _(tmp):
    return ["check", str(tmp / "missing.txt")]


@case("encodings", "check a folder", 2, "folder")
def _(tmp):
    (tmp / "folder").mkdir()
    return ["check", str(tmp / "folder")]


@case("encodings", "data build: Latin-1 JSONL", 2, "latin1.jsonl: line 6 is not UTF-8")
def _(tmp):
    bad = '{"topic": "caf\u00e9", "haiku": "a\\nb\\nc"}'.encode("latin-1")
    path = _write(tmp / "latin1.jsonl", "\n".join(_good_lines(5)).encode() + b"\n" + bad + b"\n")
    return _data_build(path, tmp)


@case("encodings", "data build: Latin-1 CSV", 2, "latin1.csv: line 5 is not UTF-8")
def _(tmp):
    path = _write(tmp / "latin1.csv",
                  b'topic,haiku\nautumn,"a\nb\nc"\n' + "caf\u00e9,x\n".encode("latin-1"))
    return _data_build(path, tmp)


@case("encodings", "data build: UTF-16 JSONL", 2, "utf16.jsonl")
def _(tmp):
    return _data_build(_write(tmp / "utf16.jsonl", "\n".join(_good_lines(5)).encode("utf-16")),
                       tmp)


@case("encodings", "data build: empty file", 2, "empty.jsonl: the file is empty")
def _(tmp):
    return _data_build(_write(tmp / "empty.jsonl", b""), tmp)


@case("encodings", "data build: poems holding NUL bytes", 0, "row 3", "U+0000")
def _(tmp):
    rows = _good_lines(40)
    record = json.loads(rows[2])
    record["haiku"] = record["haiku"].replace(" ", "\x00", 1)
    rows[2] = json.dumps(record)
    return _data_build(_write(tmp / "nul.jsonl", "\n".join(rows) + "\n"), tmp)


@case("encodings", "data build: a .txt source", 2, "unsupported file type")
def _(tmp):
    return _data_build(_write(tmp / "poems.txt", POEM), tmp)


@case("encodings", "write a topic with a NUL", 2, "topic")
def _(tmp):
    return ["write", "snow\x00fall"]


@case("encodings", "write an empty topic", 2, "topic")
def _(tmp):
    return ["write", "   "]


@case("encodings", "preset file in Latin-1", 2, "latin1.yaml", "UTF-8")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nname: caf\u00e9\n".encode("latin-1"), "latin1.yaml")


@case("encodings", "preset file in UTF-16", 2, "utf16.yaml")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\n".encode("utf-16"), "utf16.yaml")


@case("encodings", "a binary adapter_config.json", 2, "adapter_config.json")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, bytes(range(256)), b"x"))


# --------------------------------------------------------------------------- artifacts


@case("artifacts", "preset: empty file", 2, "empty.yaml", "is empty")
def _(tmp):
    return _preset(tmp, "", "empty.yaml")


@case("artifacts", "preset: a key given twice", 2, "dup.yaml", "given twice")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nsft:\n  max_steps: 2\n  max_steps: 3\n", "dup.yaml")


@case("artifacts", "preset: unknown top-level section", 2, "spam")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nspam: {a: 1}\n", "unknown.yaml")


@case("artifacts", "preset: a bare number", 2, "number.yaml", "mapping")
def _(tmp):
    return _preset(tmp, "5\n", "number.yaml")


@case("artifacts", "preset: a list", 2, "list.yaml", "mapping")
def _(tmp):
    return _preset(tmp, "- base\n- cpu-smoke\n", "list.yaml")


@case("artifacts", "preset: YAML syntax error", 2, "broken.yaml: not valid YAML")
def _(tmp):
    return _preset(tmp, "base: cpu-smoke\nsft:\n  max_steps: [3, 4\n", "broken.yaml")


@case("artifacts", "preset: a missing relative base", 2, "nope.yaml", "child.yaml")
def _(tmp):
    return _preset(tmp, "base: nope.yaml\n", "child.yaml")


@case("artifacts", "preset: a folder named .yaml", 2, "folder.yaml")
def _(tmp):
    (tmp / "folder.yaml").mkdir()
    return ["train", "sft", "--preset", str(tmp / "folder.yaml"), "--out", str(tmp / "run")]


@case("artifacts", "unknown preset name", 2, "unknown preset 'no-such-preset'")
def _(tmp):
    return ["pipeline", "--preset", "no-such-preset", "--out", str(tmp / "run")]


@case("artifacts", "--adapter names a file", 2, "not-a-folder")
def _(tmp):
    return _eval_adapter(tmp, _write(tmp / "not-a-folder", "x"))


@case("artifacts", "--adapter names a missing folder", 2, "missing-adapter")
def _(tmp):
    return _eval_adapter(tmp, tmp / "missing-adapter")


@case("artifacts", "--adapter folder without weights", 2, "adapter_model.safetensors")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, LORA_CONFIG, None))


@case("artifacts", "adapter_config.json that is not JSON", 2, "adapter_config.json")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, "{\n", b"x"))


@case("artifacts", "adapter_config.json that is a list", 2, "adapter_config.json")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, "[1, 2]", b"x"))


@case("artifacts", "adapter_config.json without r", 2, "adapter_config.json", "r=None")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, '{"peft_type": "LORA"}', b"x"))


@case("artifacts", "truncated adapter_model.safetensors", 2, "adapter_model.safetensors")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, LORA_CONFIG, b"\x10\x00\x00\x00\x00\x00\x00"
                                              b"\x00{\"a\""))


@case("artifacts", "safetensors header claiming 2^60 bytes", 2, "adapter_model.safetensors")
def _(tmp):
    return _eval_adapter(tmp, _adapter_folder(tmp, LORA_CONFIG, (1 << 60).to_bytes(8, "little")))


@case("artifacts", "adapter rank other than its config", 2, "declares r=8")
def _(tmp):
    folder = make_adapter(tmp / "adapter", 640, "embedded")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 8
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return _eval_adapter(tmp, folder)


@case("artifacts", "adapter of another Gemma 3", 2, "different base model")
def _(tmp):
    return _eval_adapter(tmp, make_adapter(tmp / "adapter-1b", 96, "google/gemma-3-1b-pt"),
                         "--model", "embedded")


@case("artifacts", "adapter of another architecture", 2, "different base")
def _(tmp):
    return _eval_adapter(tmp, make_adapter(tmp / "adapter-gpt2", 64, "gpt2", arch="gpt2"),
                         "--model", "embedded")


@case("artifacts", "--model folder without config.json", 2, "config.json")
def _(tmp):
    (tmp / "model").mkdir()
    return ["eval", "--model", str(tmp / "model"), "--n", "1", "--out", str(tmp / "e")]


@case("artifacts", "--model path that does not exist", 2, "does not exist")
def _(tmp):
    return ["eval", "--model", str(tmp / "no" / "model"), "--n", "1", "--out", str(tmp / "e")]


@case("artifacts", "--out names a file", 2, "is a file")
def _(tmp):
    return ["train", "sft", *SMOKE, "--out", str(_write(tmp / "run", "my notes"))]


@case("artifacts", "HAIKU_KIT_CACHE names a file", 2, "HAIKU_KIT_CACHE",
      env={"HAIKU_KIT_CACHE": "{tmp}/cache"})
def _(tmp):
    _write(tmp / "cache", "my notes")
    return ["write", "snow"]


@case("artifacts", "--resume latest without a checkpoint", 2, "no complete checkpoint")
def _(tmp):
    return ["train", "sft", *SMOKE, "--resume", "latest", "--out", str(tmp / "run")]


@case("artifacts", "--resume PATH that is not a checkpoint", 2, "notes")
def _(tmp):
    (tmp / "notes").mkdir()
    return ["train", "sft", *SMOKE, "--resume", str(tmp / "notes"), "--out", str(tmp / "run")]


@case("artifacts", "eval --data: missing file", 2, "missing.jsonl")
def _(tmp):
    return ["eval", "--data", str(tmp / "missing.jsonl"), "--out", str(tmp / "e")]


@case("artifacts", "eval --data: splits folder without eval split", 2, "splits")
def _(tmp):
    _write(tmp / "splits" / "sft.jsonl", "\n".join(_good_lines(3)) + "\n")
    return ["eval", "--data", str(tmp / "splits"), "--out", str(tmp / "e")]


@case("artifacts", "eval --data: JSONL without prompts", 2, "rows.jsonl")
def _(tmp):
    path = _write(tmp / "rows.jsonl", '{"colour": "blue"}\n{"colour": "red"}\n')
    return ["eval", "--data", str(path), "--out", str(tmp / "e")]


@case("artifacts", "export of a run with nothing trained", 2, "run")
def _(tmp):
    (tmp / "run").mkdir()
    return ["export", str(tmp / "run")]


@case("artifacts", "export --phase of a run with no config", 2, "config.yaml")
def _(tmp):
    (tmp / "run").mkdir()
    return ["export", str(tmp / "run"), "--phase", "dpo"]


@case("artifacts", "app on a run never trained", 2, "run")
def _(tmp):
    (tmp / "run").mkdir()
    return ["app", str(tmp / "run")]


@case("artifacts", "pipeline --from an unknown stage", 2, "'nowhere'")
def _(tmp):
    return ["pipeline", *SMOKE, "--from", "nowhere", "--out", str(tmp / "run")]


@case("artifacts", "data build --source that does not exist", 2, "missing.csv")
def _(tmp):
    return _data_build(tmp / "missing.csv", tmp)


@case("artifacts", "data build: CSV without a poem column", 2, "cols.csv", "no poem column")
def _(tmp):
    return _data_build(_write(tmp / "cols.csv", "a,b\n1,2\n"), tmp)


@case("artifacts", "data build --out names a file", 2, "splits")
def _(tmp):
    _write(tmp / "splits", "my notes")
    return _data_build(_write(tmp / "rows.jsonl", "\n".join(_good_lines(40)) + "\n"), tmp)


def expand(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def snapshot(root: Path) -> dict[str, bytes | int]:
    """Every file under root: small ones by content, big ones by size (nothing lost)."""
    found: dict[str, bytes | int] = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = Path(top) / name
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                found[str(path)] = path.read_bytes() if size < (1 << 20) else size
    return found


def lost(before: dict[str, bytes | int], root: Path) -> list[str]:
    """The files of `before` that are gone or changed under root."""
    after = snapshot(root)
    return sorted(path for path, content in before.items() if after.get(path) != content)
