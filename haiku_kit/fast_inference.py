"""Opt-in fast GRPO generation on a GPU: Unsloth loads a vLLM engine next to the model
(`FastModel.from_pretrained(fast_inference=True)`), and TRL's GRPOTrainer generates through it
(`use_vllm=True`, `vllm_mode="colocate"`; Unsloth's trainer patch hands TRL its engine instead of
starting a second one).

The arguments for both sides come from here, so they cannot disagree. vLLM's SamplingParams
rejects `eos_token_id`, so the stop tokens (Gemma's <end_of_turn> among them) go to vLLM as
`stop_token_ids`; on the transformers path TRL reads them from the model's generation config,
which `modeling.prepare_tokenizer` fills, so no generation_kwargs are needed there at all.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

DEFAULT_GPU_MEMORY_UTILIZATION = 0.5  # Unsloth's default share of GPU memory for vLLM


def fast_inference_problem(enabled: bool, backend: str, device: str, gpu_memory_utilization: float) -> str | None:
    """Why these settings cannot work (one line naming the keys), or None."""
    if not 0.0 < gpu_memory_utilization < 1.0:
        return f"model.gpu_memory_utilization={gpu_memory_utilization} must be between 0 and 1 (exclusive)"
    if not enabled:
        return None
    if backend == "hf" or device == "cpu":
        return (f"model.fast_inference=true needs the unsloth backend on a CUDA GPU (vLLM), not "
                f"model.backend={backend} / model.device={device}; set model.fast_inference=false")
    return None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def unsloth_fast_inference_kwargs(enabled: bool, gpu_memory_utilization: float, lora_rank: int) -> dict[str, Any]:
    """Extra FastModel.from_pretrained arguments; empty when fast inference is off."""
    if not enabled:
        return {}
    return {
        "fast_inference": True,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_lora_rank": lora_rank,  # vLLM allocates LoRA slots of this rank; must cover r
    }


def grpo_generation_args(enabled: bool, gpu_memory_utilization: float, stop_token_ids: Iterable[int]) -> dict[str, Any]:
    """GRPOConfig arguments that choose how completions are generated."""
    if not enabled:
        # TRL's transformers path takes its stop ids from model.generation_config.
        return {"use_vllm": False, "generation_kwargs": {}}
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": gpu_memory_utilization,
        "generation_kwargs": {"stop_token_ids": [int(i) for i in stop_token_ids]},
    }
