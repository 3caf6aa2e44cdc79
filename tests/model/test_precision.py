"""Precision by compute capability: bf16 only at >= 8.0; Gemma 3 in float32 below that."""

import pytest

from haiku_kit.model.backends import Precision, choose_precision, forces_float32

T4, V100, A100, L4, H100 = (7, 5), (7, 0), (8, 0), (8, 9), (9, 0)


@pytest.mark.parametrize("capability", [A100, L4, H100, (10, 0), (12, 0)])
def test_bf16_from_capability_8_0(capability):
    p = choose_precision("cuda", [capability], "gemma3_text")
    assert (p.name, p.load_dtype, p.bf16, p.fp16) == ("bf16", "bfloat16", True, False)
    assert p.trainer_flags() == {"bf16": True, "fp16": False}


@pytest.mark.parametrize("model_type", ["gemma3", "gemma3_text", "Gemma3-Text", "gemma3n", "gemma3n_text",
                                        "gemma4_text", "gpt_oss", "qwen3_moe"])
def test_t4_runs_float16_overflowing_architectures_in_float32(model_type):
    p = choose_precision("cuda", [T4], model_type)
    assert (p.name, p.load_dtype) == ("fp32", "float32")
    assert p.trainer_flags() == {"bf16": False, "fp16": False}
    assert "7.5" in p.reason and model_type in p.reason


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral", "gemma2", "gemma", None])
def test_t4_runs_other_architectures_in_float16(model_type):
    p = choose_precision("cuda", [T4], model_type)
    assert (p.name, p.load_dtype) == ("fp16", "float16")
    assert p.trainer_flags() == {"bf16": False, "fp16": True}


def test_lowest_visible_gpu_decides():
    assert choose_precision("cuda", [H100, T4], "llama").name == "fp16"
    assert choose_precision("cuda", [H100, A100], "llama").name == "bf16"


def test_cpu_is_float32_whatever_the_model():
    for model_type in ("gemma3_text", "llama"):
        assert choose_precision("cpu", [], model_type) == Precision("fp32", "float32", "CPU: float32")


def test_gemma3_entry_does_not_swallow_other_names():
    # "gemma3," must not match "gemma3x"; "gemma" alone (Gemma 1) is not on the list.
    assert forces_float32("gemma3") and forces_float32("gemma3_text")
    assert not forces_float32("gemma3x") and not forces_float32("gemma") and not forces_float32(None)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="device"):
        choose_precision("tpu", [H100])
    with pytest.raises(ValueError, match="capability"):
        choose_precision("cuda", [])


def test_record_for_effective_yaml():
    record = choose_precision("cuda", [T4], "gemma3_text").to_dict()
    assert record["precision"] == "fp32" and record["load_dtype"] == "float32"
    assert "7.5 < 8.0" in record["precision_reason"]
