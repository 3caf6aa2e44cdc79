"""Every argument the kit gives trl.SFTConfig / GRPOConfig is a field of it, for every preset, on
the CPU and the GPU path (vLLM generation included): the settings pass by name, so only the
kit's own choices can go wrong. Read from the builders themselves, without a model."""

from __future__ import annotations

import dataclasses

import pytest

from haiku_kit.config import apply_overrides, grpo_variant_settings, list_presets, load_preset
from haiku_kit.runs import grpo_phases, variant_of


@pytest.mark.parametrize("preset", list_presets())
def test_every_trl_config_argument_the_kit_sets_is_a_field(preset, tmp_path, monkeypatch):
    from trl import GRPOConfig, SFTConfig

    from haiku_kit.train import common
    from haiku_kit.train.grpo import grpo_config_args
    from haiku_kit.train.sft import sft_config_args

    grpo_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    monkeypatch.setattr(common, "gpu_capabilities", lambda: [(8, 0)])  # an A100-class GPU
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    cfg = apply_overrides(load_preset(preset), [f"output_dir={tmp_path}"])
    for device in ("cpu", "cuda"):
        for fast in (False, True):
            cfg.model.fast_inference = fast  # the GPU path's vLLM arguments too
            for mode in ("assistant", "completion"):
                args = sft_config_args(cfg, tmp_path / "sft", device, None, mode)
                assert set(args) - sft_fields == set(), (preset, device, fast)
                assert "output_dir" in args and args["max_length"] == cfg.sft.max_length
            for phase in grpo_phases(cfg) or ["grpo"]:
                s = grpo_variant_settings(cfg, variant_of(phase))
                args = grpo_config_args(cfg, s, tmp_path / "grpo", device, None, [1, 106])
                assert set(args) - grpo_fields == set(), (preset, phase, device, fast)
                # Unsloth's vLLM (model.fast_inference) or TRL's own (grpo.use_vllm, e.g. server mode)
                assert args["use_vllm"] is (fast or s.use_vllm) and args["loss_type"] == s.loss_type
                if s.use_vllm and not fast:
                    assert (args["vllm_mode"], args["vllm_server_port"]) == (s.vllm_mode, s.vllm_server_port)
                    # TRL builds its config from them (its own checks of the values), here on a CPU
                    GRPOConfig(**{**args, "bf16": False, "fp16": False, "use_cpu": True})


def _model(backend: str):
    return type("Model", (), {"_haiku_kit_backend": backend, "config": None})()


@pytest.mark.parametrize(("value", "cpu", "gpu"), [
    ("auto", False, True),  # off on a CPU (research/log.md E12), TRL's default (on) on a GPU
    ("on", True, True), ("off", False, False)])
def test_gradient_checkpointing_reaches_trls_configs_on_the_hf_backend(value, cpu, gpu, tmp_path, monkeypatch):
    """model.gradient_checkpointing through the kit's own builders (sft_config_args,
    grpo_config_args) into real SFTConfig / GRPOConfig objects, for a model the hf backend loaded."""
    from trl import GRPOConfig, SFTConfig

    from haiku_kit.train import common
    from haiku_kit.train.grpo import grpo_config_args
    from haiku_kit.train.sft import sft_config_args

    monkeypatch.setattr(common, "gpu_capabilities", lambda: [(9, 0)])
    cfg = apply_overrides(load_preset("cpu-smoke"), [f"output_dir={tmp_path}", "model.backend=hf",
                                                     f"model.gradient_checkpointing={value}"])
    for device, wanted in (("cpu", cpu), ("cuda", gpu)):
        args = sft_config_args(cfg, tmp_path / "sft", device, _model("hf"), "assistant")
        assert SFTConfig(**{**args, "use_cpu": True, "bf16": False}).gradient_checkpointing is wanted
        args = grpo_config_args(cfg, cfg.grpo, tmp_path / "grpo", device, _model("hf"), [1, 106])
        assert GRPOConfig(**{**args, "use_cpu": True, "bf16": False}).gradient_checkpointing is wanted


def test_unsloth_gradient_checkpointing_is_refused_for_an_hf_model(tmp_path, monkeypatch):
    from haiku_kit.errors import ConfigError
    from haiku_kit.train import common
    from haiku_kit.train.sft import sft_config_args

    monkeypatch.setattr(common, "gpu_capabilities", lambda: [(9, 0)])
    cfg = apply_overrides(load_preset("ref-full"), [f"output_dir={tmp_path}"])
    assert sft_config_args(cfg, tmp_path, "cuda", _model("unsloth"), "assistant")["gradient_checkpointing"]
    with pytest.raises(ConfigError, match="gradient_checkpointing=unsloth needs the unsloth backend"):
        sft_config_args(cfg, tmp_path, "cuda", _model("hf"), "assistant")
