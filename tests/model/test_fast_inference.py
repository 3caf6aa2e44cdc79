"""Fast (vLLM) generation settings: what Unsloth and TRL get, and what is refused."""

import dataclasses

import pytest

from haiku_kit.config import fast_inference_problem
from haiku_kit.model.backends import grpo_generation_args, unsloth_fast_inference_kwargs

STOP = [1, 106]


def test_off_passes_no_generation_kwargs_at_all():
    # No eos_token_id: TRL reads the stop ids from the model's generation config.
    assert grpo_generation_args(False, 0.5, STOP) == {"use_vllm": False, "generation_kwargs": {}}
    assert unsloth_fast_inference_kwargs(False, 0.5, 64) == {}


def test_on_generates_through_colocated_vllm_with_explicit_stop_ids():
    args = grpo_generation_args(True, 0.4, STOP)
    assert args["use_vllm"] is True and args["vllm_mode"] == "colocate"
    assert args["vllm_gpu_memory_utilization"] == 0.4
    assert args["generation_kwargs"] == {"stop_token_ids": [1, 106]}
    assert "eos_token_id" not in args["generation_kwargs"]  # vLLM's SamplingParams rejects it
    assert unsloth_fast_inference_kwargs(True, 0.4, 32) == {
        "fast_inference": True, "gpu_memory_utilization": 0.4, "max_lora_rank": 32,
    }


def test_generation_args_are_real_grpo_config_fields():
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for enabled in (False, True):
        assert set(grpo_generation_args(enabled, 0.5, STOP)) <= fields


def test_transformers_path_config_builds_without_eos_in_generation_kwargs(tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=4,
                      report_to="none", **grpo_generation_args(False, 0.5, STOP))
    assert args.use_vllm is False and not args.generation_kwargs


@pytest.mark.parametrize(("enabled", "backend", "device", "share", "fragment"), [
    (True, "hf", "cuda", 0.5, "model.backend=hf"),
    (True, "auto", "cpu", 0.5, "model.device=cpu"),
    (False, "unsloth", "cuda", 1.2, "model.gpu_memory_utilization=1.2"),
    (True, "unsloth", "cuda", 0.0, "model.gpu_memory_utilization=0.0"),
])
def test_impossible_settings_name_the_key(enabled, backend, device, share, fragment):
    assert fragment in fast_inference_problem(enabled, backend, device, share)


def test_possible_settings_have_no_problem():
    assert fast_inference_problem(True, "unsloth", "cuda", 0.5) is None
    assert fast_inference_problem(True, "auto", "auto", 0.5) is None
    assert fast_inference_problem(False, "hf", "cpu", 0.5) is None


def test_only_the_grpo_rollout_model_asks_for_a_vllm_engine(monkeypatch, tmp_path):
    """model.fast_inference used to reach every load (SFT, each eval, export): an engine per
    load, each asking for gpu_memory_utilization of the GPU. Every load of a GPU run with vLLM
    on goes through load_from_config; only the rollout model of GRPO may ask for an engine."""
    import ast
    import dataclasses
    from pathlib import Path

    from haiku_kit.config import load_preset
    from haiku_kit.model import load as L

    asked = []
    monkeypatch.setattr(L, "load_model", lambda *a, **k: asked.append(k["fast_inference"]))
    cfg = load_preset("h100-gemma3-1b")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fast_inference=True))
    L.load_from_config(cfg)  # SFT
    L.load_from_config(cfg, "adapter", trainable=False)  # an eval, write, export
    L.load_from_config(cfg, "adapter", rollouts=True)  # GRPO
    assert asked == [False, False, True]
    # and in the kit's source, rollouts=True is passed exactly where GRPO loads its model
    root = Path(L.__file__).resolve().parents[1]
    callers = []
    for path in [*root.rglob("*.py"), *(root.parent / "notebooks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(
                    k.arg == "rollouts" and getattr(k.value, "value", None) is True
                    for k in node.keywords):
                callers.append(f"{path.parent.name}/{path.name}")
    assert sorted(callers) == ["haiku_kit/stages.py", "notebooks/00_quickstart.py",
                               "notebooks/04_grpo.py", "train/grpo.py"], callers
