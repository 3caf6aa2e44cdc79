"""Which backend and device a run uses: Unsloth on CUDA, plain transformers + peft elsewhere.

Pure decisions (tested without a GPU) plus the Unsloth import-order rule: Unsloth must be
imported before transformers/trl/peft to patch them, so `import_backend` imports it first
thing and nothing here imports transformers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from haiku_kit.errors import ConfigError, ModelLoadError
from haiku_kit.fast_inference import DEFAULT_GPU_MEMORY_UTILIZATION, unsloth_fast_inference_kwargs
from haiku_kit.settings import LoraSettings, RunConfig

BACKENDS = ("auto", "unsloth", "hf")
GPU_INSTALL_HINT = 'pip install "haiku-kit[gpu]"'
# Modules Unsloth must be imported before in order to patch them.
UNSLOTH_PATCHED_MODULES = ("transformers", "trl", "peft")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is required in practice
        return False
    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    # find_spec does not import unsloth (importing it has side effects on transformers).
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(backend: str, cuda: bool, unsloth: bool) -> str:
    """Pure backend resolution: "unsloth" or "hf", or ModelLoadError saying what is missing."""
    if backend not in BACKENDS:
        raise ModelLoadError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "hf":
        return "hf"
    if backend == "auto":
        return "unsloth" if cuda and unsloth else "hf"
    if not cuda:
        raise ModelLoadError(
            "backend='unsloth' needs a CUDA GPU, and none is available here; "
            "use backend='hf' (or 'auto') on CPU"
        )
    if not unsloth:
        raise ModelLoadError(
            f"backend='unsloth' needs the unsloth package, which is not installed; "
            f"install it with: {GPU_INSTALL_HINT}  (or use backend='hf')"
        )
    return "unsloth"


def resolve_backend(backend: str = "auto") -> str:
    """The backend to use on this machine: "unsloth" or "hf"."""
    if backend not in BACKENDS:  # fail before probing CUDA
        raise ModelLoadError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return choose_backend(backend, cuda=cuda_available(), unsloth=unsloth_installed())


def import_backend(backend: str = "auto") -> str:
    """Resolve `backend`; for Unsloth, import it now. Call this before anything that may import
    transformers/trl (e.g. MiniLM in the data stage), because Unsloth must patch them first."""
    resolved = resolve_backend(backend)
    if resolved == "unsloth":
        import unsloth  # noqa: F401
    return resolved


def unsloth_import_order_problem(loaded_modules: Iterable[str]) -> str | None:
    """Warning text when unsloth would be imported after modules it needs to patch."""
    loaded = set(loaded_modules)
    if "unsloth" in loaded:
        return None
    early = [name for name in UNSLOTH_PATCHED_MODULES if name in loaded]
    if not early:
        return None
    return (
        f"{', '.join(early)} imported before unsloth: Unsloth cannot patch them, so training "
        "may be slower or use more memory. Fix: restart the Python process (in a notebook: "
        "the kernel) and run `import unsloth` first, before anything "
        "that imports transformers, trl or peft."
    )


def unsloth_load_kwargs(
    model_name: str, max_seq_length: int, load_in_4bit: bool, dtype: Any = None,
    fast_inference: bool = False, gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    lora_rank: int = 16,
) -> dict[str, Any]:
    """Arguments for unsloth.FastModel.from_pretrained (Gemma 3 GRPO notebook style). dtype None:
    Unsloth chooses by compute capability, as precision.choose_precision does."""
    return {
        "model_name": model_name,
        "max_seq_length": max_seq_length,
        "dtype": dtype,
        "load_in_4bit": load_in_4bit,
        "load_in_8bit": False,
        "full_finetuning": False,
        **unsloth_fast_inference_kwargs(fast_inference, gpu_memory_utilization, lora_rank),
    }


def unsloth_peft_kwargs(lora: LoraSettings, seed: int) -> dict[str, Any]:
    """Arguments for unsloth.FastModel.get_peft_model, the same LoRA as the hf backend. A regex
    target_modules (how Unsloth saves an adapter) is passed through as the regex."""
    targets = lora.target_modules
    return {
        "finetune_vision_layers": False,
        "finetune_language_layers": True,
        "finetune_attention_modules": True,
        "finetune_mlp_modules": True,
        "target_modules": targets if isinstance(targets, str) else list(targets),
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "bias": "none",
        "random_state": seed,
    }


def resolve_device(cfg: RunConfig) -> str:
    """cfg.model.device, where "auto" means cuda when a GPU is available, else cpu."""
    if cfg.model.device != "auto":
        if cfg.model.device == "cuda" and not cuda_available():
            raise ConfigError("model.device=cuda but no CUDA GPU is available; use model.device=cpu")
        return cfg.model.device
    return "cuda" if cuda_available() else "cpu"


def backend_for(cfg: RunConfig) -> str:
    """cfg.model.backend, where "auto" on a CPU run means plain transformers + peft."""
    if cfg.model.backend == "auto" and resolve_device(cfg) == "cpu":
        return "hf"
    return cfg.model.backend
