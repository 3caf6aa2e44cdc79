"""Every packaged preset loads and validates on a machine without a GPU; GPU presets are sized
and set as documented (16-bit LoRA with a 4-bit override, T4 sizing)."""

import json
import os
import subprocess
import sys

import pytest

from haiku_kit.config import apply_overrides, list_presets, load_preset, validate
from haiku_kit.model.backends import choose_precision

GPU_PRESETS = ("colab-t4-gemma3-1b", "h100-gemma3-1b")


def test_every_preset_loads_without_importing_torch():
    code = (
        "import json, sys\n"
        "from haiku_kit.config import list_presets, load_preset, validate\n"
        "names = list_presets()\n"
        "for name in names: validate(load_preset(name))\n"
        "print(json.dumps({'names': names, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(GPU_PRESETS) <= set(result["names"])
    assert result["torch"] is False


@pytest.mark.parametrize("name", list_presets())
def test_preset_round_trips_through_its_dict(name):
    cfg = load_preset(name)
    validate(cfg)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert cfg.description, f"preset {name} has no description"


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_train_16bit_lora_with_unsloth_and_4bit_on_request(name):
    cfg = load_preset(name)
    assert (cfg.model.backend, cfg.model.device, cfg.model.load_in_4bit) == ("unsloth", "cuda", False)
    assert apply_overrides(cfg, ["model.load_in_4bit=true"]).model.load_in_4bit is True
    g = cfg.grpo
    assert g.loss_type == "dapo" and g.beta == 0.0 and g.mask_truncated_completions is False


def test_reference_variants_keep_the_reference_runs_4bit():
    for name in list_presets():
        if name.startswith("ref-"):
            assert load_preset(name).model.load_in_4bit, name


def test_t4_preset_is_sized_below_the_h100_one():
    t4, h100 = load_preset("colab-t4-gemma3-1b"), load_preset("h100-gemma3-1b")
    assert t4.model.name == h100.model.name
    assert t4.model.max_seq_length < h100.model.max_seq_length
    assert t4.model.lora.r < h100.model.lora.r
    assert t4.grpo.per_device_train_batch_size < h100.grpo.per_device_train_batch_size
    assert t4.eval.batch_size < h100.eval.batch_size
    # Same GRPO group size and effective generation batch: only the memory footprint changes.
    assert t4.grpo.num_generations == h100.grpo.num_generations
    assert (t4.grpo.per_device_train_batch_size * t4.grpo.gradient_accumulation_steps
            == h100.grpo.per_device_train_batch_size * h100.grpo.gradient_accumulation_steps)
    # On the T4 (7.5) Gemma 3 trains in float32, so the 1B model's 16-bit LoRA must fit in fp32.
    assert choose_precision("cuda", [(7, 5)], "gemma3_text").name == "fp32"


def test_vllm_server_preset_is_the_h100_run_generating_on_trl_vllm_serve():
    """TRL's server mode on the hf backend (Unsloth trains in one process, with its own vLLM);
    the same model and hyperparameters as the H100 preset it extends."""
    cfg, h100 = load_preset("h100x2-vllm-server"), load_preset("h100-gemma3-1b")
    assert (cfg.model.backend, cfg.model.fast_inference) == ("hf", False)
    g = cfg.grpo
    assert (g.use_vllm, g.vllm_mode, g.vllm_server_port) == (True, "server", 8000)
    assert cfg.model.name == h100.model.name and g.num_generations == h100.grpo.num_generations
    with pytest.raises(ValueError, match="grpo.use_vllm"):
        validate(apply_overrides(cfg, ["model.backend=unsloth"]))
