"""The ref-* presets are the reference's training code (axeld5/gemma_haiku @945d660), value by
value: REFERENCE below is written from its files (file and line beside each value), the test reads
the preset and the TRL arguments the kit builds from it and compares. A value the reference did not
set is its stack's default in April 2025 (Unsloth 2025.4 with trl<=0.15.2), marked "default:".
docs/gpu.md prints the same table."""

from __future__ import annotations

import math

import pytest

from haiku_kit.config import apply_overrides, grpo_variant_settings, load_preset
from haiku_kit.runs import grpo_phases, schedule, variant_of

# config key -> (the reference's value, where it comes from)
REFERENCE: dict[str, tuple[object, str]] = {
    "phases": (["sft", "grpo:sparse", "grpo:dense"], "train_models.py L63-72 train_full"),
    "seed": (3407, "gemma_sft.py L87 seed; gemma_rl.py L61 random_state"),
    "model.name": ("unsloth/gemma-3-1b-it", "gemma_sft.py L11, gemma_rl.py L9"),
    "model.backend": ("unsloth", "gemma_sft.py L1, gemma_rl.py L1 (FastModel)"),
    "model.load_in_4bit": (True, "gemma_sft.py L31, gemma_rl.py L44"),
    "model.max_seq_length": (512, "gemma_sft.py L30, gemma_rl.py L40"),
    "model.gradient_checkpointing": ("unsloth", ("default: FastModel.from_pretrained "
                                     "use_gradient_checkpointing='unsloth' (not set, L28-48 / L41-62)")),
    "model.fast_inference": (False, "gemma_rl.py L41-47 (no fast_inference)"),
    "model.lora.r": (64, "gemma_sft.py L44, gemma_rl.py L57"),
    "model.lora.alpha": (64, "gemma_sft.py L45, gemma_rl.py L58"),
    "model.lora.dropout": (0.0, "gemma_sft.py L46, gemma_rl.py L59"),
    "model.lora.target_modules": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                   "down_proj"], "gemma_sft.py L40-43, gemma_rl.py L53-56"),
    "sft.max_steps": (100, "train_models.py L78 --sft_steps"),
    "sft.learning_rate": (2e-4, "gemma_sft.py L82"),
    "sft.lr_scheduler_type": ("linear", "gemma_sft.py L86"),
    "sft.warmup_ratio": (0.05, "gemma_sft.py L79 warmup_steps=5 of 100"),
    "sft.weight_decay": (0.01, "gemma_sft.py L85"),
    "sft.per_device_train_batch_size": (2, "gemma_sft.py L77"),
    "sft.gradient_accumulation_steps": (4, "gemma_sft.py L78"),
    "sft.optim": ("adamw_8bit", "gemma_sft.py L84"),
    "sft.adam_beta1": (0.9, "default: transformers (not set in gemma_sft.py)"),
    "sft.adam_beta2": (0.999, "default: transformers (not set in gemma_sft.py)"),
    "sft.max_grad_norm": (1.0, "default: transformers (not set in gemma_sft.py)"),
    "sft.max_length": (512, "default: Unsloth's SFTConfig takes max_seq_length 512"),
    "sft.logging_steps": (1, "gemma_sft.py L83"),
    "grpo.max_steps": (1000, "train_models.py L80-81 --rl_sparse_steps / --rl_regular_steps"),
    "grpo.learning_rate": (5e-6, "gemma_rl.py L74"),
    "grpo.adam_beta1": (0.9, "gemma_rl.py L75"),
    "grpo.adam_beta2": (0.99, "gemma_rl.py L76"),
    "grpo.weight_decay": (0.1, "gemma_rl.py L77"),
    "grpo.warmup_ratio": (0.1, "gemma_rl.py L78"),
    "grpo.lr_scheduler_type": ("cosine", "gemma_rl.py L79"),
    "grpo.optim": ("adamw_torch_fused", "gemma_rl.py L80"),
    "grpo.logging_steps": (1, "gemma_rl.py L81"),
    # L82 per_device_train_batch_size=1, raised by Unsloth's GRPOConfig to num_generations
    "grpo.per_device_train_batch_size": (4, "gemma_rl.py L82 + Unsloth's batch fix"),
    "grpo.gradient_accumulation_steps": (1, "gemma_rl.py L83"),
    "grpo.num_generations": (4, "gemma_rl.py L84"),
    "grpo.max_completion_length": (256, "gemma_rl.py L86 (512 - max_prompt_length 256, L72)"),
    "grpo.max_grad_norm": (0.1, "gemma_rl.py L90"),
    "grpo.save_steps": (50, "gemma_rl.py L89"),
    "grpo.temperature": (0.9, "default: TRL 0.15 GRPOConfig.temperature"),
    "grpo.top_p": (1.0, "default: transformers GenerationConfig"),
    "grpo.top_k": (50, "default: transformers GenerationConfig"),
    "grpo.loss_type": ("grpo", "default: unsloth_zoo grpo_compute_loss (per-sequence mean)"),
    "grpo.beta": (0.04, "default: TRL 0.15 GRPOConfig.beta"),
    "grpo.epsilon": (0.2, "default: TRL (one update per generation: never binds)"),
    "grpo.num_iterations": (1, "default: TRL 0.15 (one update per generation)"),
    "grpo.scale_rewards": ("group", "default: TRL 0.15 divides by the group's reward std"),
    "grpo.mask_truncated_completions": (False, "default: TRL 0.15 has no masking"),
}
# GRPO phase -> (reward preset, steps, where)
PHASES = {
    "sparse": ("ref-sparse", 1000, "gemma_rl.py L96 + rewards.py L43-57; train_models.py L69"),
    "dense": ("ref-dense", 1000, "gemma_rl.py L96 + rewards.py L59-72; train_models.py L72"),
}
# the other reference models: train_models.py's functions
VARIANTS = {
    "ref-sft-only": (["sft"], "SFT 100"),
    "ref-sft-grpo-dense": (["sft", "grpo:dense"], "SFT 100 -> dense GRPO 1,000"),
    "ref-sft-grpo-sparse": (["sft", "grpo:sparse"], "SFT 100 -> sparse GRPO 1,000"),
    "ref-rl-only-sparse": (["grpo:sparse"], "sparse GRPO 1,000"),
    "ref-full": (["sft", "grpo:sparse", "grpo:dense"], "SFT 100 -> sparse GRPO 1,000 -> dense GRPO 1,000"),
}


def _get(cfg, key: str):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def mismatches(cfg) -> list[str]:
    """One line per value of `cfg` that is not the reference's (REFERENCE, PHASES)."""
    out = []
    for key, (want, where) in REFERENCE.items():
        got = _get(cfg, key)
        same = math.isclose(got, want) if isinstance(want, float) else got == want
        if not same:
            out.append(f"{key} = {got!r}, the reference's is {want!r} ({where})")
    for variant, (rewards, steps, where) in PHASES.items():
        s = grpo_variant_settings(cfg, variant)
        if (s.rewards, s.max_steps) != (rewards, steps):
            out.append(f"grpo:{variant} = {s.rewards} x {s.max_steps}, the reference's is "
                       f"{rewards} x {steps} ({where})")
    return out


def test_ref_full_is_the_reference_training_code_value_by_value():
    assert mismatches(load_preset("ref-full")) == []


@pytest.mark.parametrize("override", [
    "grpo.adam_beta2=0.999", "grpo.max_completion_length=128", "sft.warmup_ratio=0.1", "grpo.beta=0.0",
    "grpo_variants.dense.max_steps=200", "model.gradient_checkpointing=on"])
def test_the_comparison_catches_a_changed_value(override):
    cfg = apply_overrides(load_preset("ref-full"), [override])
    assert len(mismatches(cfg)) == 1, override


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_reference_model_is_ref_full_with_its_own_phases(name):
    cfg = load_preset(name)
    phases, trained = VARIANTS[name]
    assert cfg.phases == phases
    assert schedule(cfg, "grpo" if grpo_phases(cfg) else "sft") == trained
    # every other value is ref-full's
    same = apply_overrides(cfg, [f"phases={phases}".replace("'", '"')])
    assert [m for m in mismatches(same) if not m.startswith("phases")] == []
    assert cfg.grpo.init == ("base" if name == "ref-rl-only-sparse" else "auto")
    for phase in grpo_phases(cfg):
        assert grpo_variant_settings(cfg, variant_of(phase)).max_steps == 1000


def _stub(backend: str):
    return type("Model", (), {"_haiku_kit_backend": backend, "config": None})()


def test_the_trl_arguments_are_the_references(tmp_path, monkeypatch):
    """What TRL receives, on the GPU path, built by the kit's own builders and turned into real
    SFTConfig / GRPOConfig objects here on a CPU (precision and device switched to the CPU's)."""
    from trl import GRPOConfig, SFTConfig

    from haiku_kit.train import common
    from haiku_kit.train.grpo import grpo_config_args
    from haiku_kit.train.sft import sft_config_args

    monkeypatch.setattr(common, "gpu_capabilities", lambda: [(9, 0)])  # an H100
    cfg = apply_overrides(load_preset("ref-full"), [f"output_dir={tmp_path}"])
    cpu = {"use_cpu": True, "bf16": False, "fp16": False}

    sft = SFTConfig(**{**sft_config_args(cfg, tmp_path / "sft", "cuda", _stub("unsloth"), "assistant"), **cpu})
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (2, 4)
    assert (sft.learning_rate, sft.weight_decay, sft.max_grad_norm) == (2e-4, 0.01, 1.0)
    assert (sft.adam_beta1, sft.adam_beta2, sft.optim.value) == (0.9, 0.999, "adamw_8bit")
    assert sft.lr_scheduler_type.value == "linear" and sft.seed == 3407 and sft.max_steps == 100
    assert sft.get_warmup_steps(sft.max_steps) == 5  # gemma_sft.py L79 warmup_steps=5
    assert sft.gradient_checkpointing is True and sft.max_length == 512

    for variant, (rewards, steps, _) in PHASES.items():
        s = grpo_variant_settings(cfg, variant)
        args = grpo_config_args(cfg, s, tmp_path / variant, "cuda", _stub("unsloth"), [1, 106])
        g = GRPOConfig(**{**args, **cpu})
        assert (g.max_steps, g.learning_rate, g.weight_decay, g.max_grad_norm) == (steps, 5e-6, 0.1, 0.1)
        assert (g.adam_beta1, g.adam_beta2, g.optim.value) == (0.9, 0.99, "adamw_torch_fused")
        assert g.lr_scheduler_type.value == "cosine" and g.get_warmup_steps(1000) == 100
        assert (g.per_device_train_batch_size, g.gradient_accumulation_steps, g.num_generations) == (4, 1, 4)
        assert g.generation_batch_size == 4  # 1 prompt x 4 completions per step
        assert (g.max_completion_length, g.temperature, g.top_p, g.top_k) == (256, 0.9, 1.0, 50)
        assert (g.loss_type, g.beta, g.epsilon, g.epsilon_high) == ("grpo", 0.04, 0.2, 0.2)
        assert (g.num_iterations, g.scale_rewards, g.mask_truncated_completions) == (1, "group", False)
        assert g.use_vllm is False and g.seed == 3407 and g.save_steps == 50
        assert g.reward_weights == [1.0, 1.0, 1.0]
