"""haiku_kit.model.memory: the paper estimate of a GPU preset's memory (no GPU runs these tests).
The parameter count is checked against the embedded 270M model's real tensors; the T4 preset is
checked against the T4's 15 GB, not against another preset."""

from __future__ import annotations

import json
import math
import struct

import pytest

from haiku_kit.config import apply_overrides, load_preset
from haiku_kit.model.backends import choose_precision
from haiku_kit.model.memory import GEMMA3_1B, Architecture, estimate_phase

T4_GIB = 15.0  # a Colab T4: 15,360 MiB
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _safetensors_parameters(path) -> int:
    with open(path, "rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def test_the_parameter_count_is_the_real_models(embedded_dir):
    arch = Architecture.from_config(json.loads((embedded_dir / "config.json").read_text()))
    assert arch.parameters() == _safetensors_parameters(embedded_dir / "model.safetensors")
    assert GEMMA3_1B.parameters() == pytest.approx(1.0e9, rel=0.01)  # "gemma-3-1b"


def test_lora_parameters_are_rank_times_in_plus_out_per_target():
    arch = GEMMA3_1B
    assert arch.lora_parameters(8, ["q_proj"]) == 26 * 8 * (1152 + 1024)
    assert arch.lora_parameters(8, ["q_proj", "not_a_layer"]) == arch.lora_parameters(8, ["q_proj"])


@pytest.mark.parametrize("phase", ["sft", "grpo"])
def test_the_t4_preset_fits_a_t4_by_the_estimate(phase):
    cfg = load_preset("colab-t4-gemma3-1b")
    precision = choose_precision("cuda", [(7, 5)], "gemma3_text")  # a T4: float32 for Gemma 3
    estimate = estimate_phase(GEMMA3_1B, cfg, phase, BYTES[precision.load_dtype])
    assert estimate["total"] < T4_GIB * 0.8, estimate  # a fifth kept free for what it misses
    assert estimate["weights"] == pytest.approx(GEMMA3_1B.parameters() * 4 / 2**30)


def test_a_preset_too_big_for_a_t4_is_caught():
    cfg = apply_overrides(load_preset("colab-t4-gemma3-1b"), [
        "grpo.per_device_train_batch_size=32", "grpo.max_completion_length=1024"])
    assert estimate_phase(GEMMA3_1B, cfg, "grpo", 4)["total"] > T4_GIB


def test_4bit_weights_take_about_a_seventh_of_float32():
    cfg = load_preset("colab-t4-gemma3-1b")
    full = estimate_phase(GEMMA3_1B, cfg, "sft", 4)["weights"]
    quantized = estimate_phase(GEMMA3_1B, apply_overrides(cfg, ["model.load_in_4bit=true"]),
                               "sft", 4)["weights"]
    assert 0.1 < quantized / full < 0.25
