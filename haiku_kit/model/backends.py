"""Which backend and device a run uses: Unsloth on CUDA, plain transformers + peft elsewhere.

Pure decisions (tested without a GPU) plus the Unsloth import-order rule: Unsloth must be
imported before transformers/trl/peft to patch them, so `import_backend` imports it first
thing and nothing here imports transformers.

Which floating-point precision to train and generate in, decided by the GPU's compute capability.

torch's `is_bf16_supported()` also counts bf16 emulation, so on a T4 (capability 7.5) it says
yes and training runs emulated, slowly. Unsloth decides by compute capability instead, and the
kit follows it (unsloth 2026.10.7, models/_utils.py and models/loader.py):
- bf16 only when every visible GPU has capability >= 8.0 (Ampere and newer);
- below 8.0, the architectures whose activations overflow float16 (Unsloth's FORCE_FLOAT32
  list: Gemma 3 among them) train in float32: Unsloth sets UNSLOTH_FORCE_FLOAT32 and its trainer
  patch turns fp16 and bf16 off;
- below 8.0, every other architecture loads float16 weights and trains with fp16 autocast.
On CPU everything is float32.

`choose_precision` is pure; `gpu_capabilities` asks torch, and only when CUDA is in use.

Opt-in fast GRPO generation on a GPU: Unsloth loads a vLLM engine next to the model
(`FastModel.from_pretrained(fast_inference=True)`), and TRL's GRPOTrainer generates through it
(`use_vllm=True`, `vllm_mode="colocate"`; Unsloth's trainer patch hands TRL its engine instead of
starting a second one).

The arguments for both sides come from here, so they cannot disagree. vLLM's SamplingParams
rejects `eos_token_id`, so the stop tokens (Gemma's <end_of_turn> among them) go to vLLM as
`stop_token_ids`; on the transformers path TRL reads them from the model's generation config,
which `model.chat.prepare_tokenizer` fills, so no generation_kwargs are needed there at all.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from haiku_kit.config import DEFAULT_GPU_MEMORY_UTILIZATION, LoraSettings, RunConfig
from haiku_kit.errors import ConfigError, ModelLoadError
from haiku_kit.ranks import launched

BF16_MIN_CAPABILITY = (8, 0)
# unsloth_zoo.model_lists.FORCE_FLOAT32 (2026.10.7), matched the way Unsloth's loader matches it
# (see forces_float32). tests/test_unsloth_contract.py checks this list against that source.
FORCE_FLOAT32 = (
    "embedding_gemma2",
    "embedding_gemma2_text",
    "gemma3,",  # the comma keeps "gemma3" from matching "gemma3n"
    "gemma3text",
    "gemma3n",
    "gemma4",
    "gemma4text",
    "glm4_moe",
    "glm4_moe_lite",
    "gpt_oss",
    "qwen3_5",
    "qwen3_moe",
)


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16" | "fp16" | "fp32": what the trainer computes in
    load_dtype: str  # torch dtype name for the weights: "bfloat16" | "float16" | "float32"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def fp16(self) -> bool:
        return self.name == "fp16"

    def trainer_flags(self) -> dict[str, bool]:
        """bf16/fp16 for transformers' TrainingArguments (TRL's SFTConfig/GRPOConfig)."""
        return {"bf16": self.bf16, "fp16": self.fp16}

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.name, "load_dtype": self.load_dtype, "precision_reason": self.reason}


def forces_float32(model_type: str | None) -> bool:
    """True for architectures that overflow float16 (Gemma 3 and the others Unsloth lists).
    Unsloth's rule: an entry equals the model type with "-" and "_" removed, or is a substring
    of the model type followed by a comma."""
    if not model_type:
        return False
    lowered = model_type.lower()
    squashed = lowered.replace("-", "").replace("_", "")
    return any(name == squashed or name in lowered + "," for name in FORCE_FLOAT32)


def choose_precision(
    device: str, capabilities: Sequence[tuple[int, int]] = (), model_type: str | None = None
) -> Precision:
    """The precision for training on `device` ("cpu" or "cuda") with GPUs of the given compute
    capabilities (every visible GPU; the lowest decides, as in Unsloth) and this model type."""
    if device == "cpu":
        return Precision("fp32", "float32", "CPU: float32")
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if not capabilities:
        raise ValueError("device='cuda' needs the compute capability of at least one GPU")
    lowest = min(tuple(c) for c in capabilities)
    shown = f"{lowest[0]}.{lowest[1]}"
    if lowest >= BF16_MIN_CAPABILITY:
        return Precision("bf16", "bfloat16", f"compute capability {shown} >= 8.0: bfloat16")
    if forces_float32(model_type):
        return Precision(
            "fp32", "float32",
            f"compute capability {shown} < 8.0 has no bfloat16, and {model_type} overflows "
            "float16: float32 (as Unsloth does)",
        )
    return Precision("fp16", "float16", f"compute capability {shown} < 8.0 has no bfloat16: float16")


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability of every visible CUDA GPU ([] without CUDA). Imports torch."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]


# -------------------- fast inference --------------------

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


def grpo_generation_args(enabled: bool, gpu_memory_utilization: float, stop_token_ids: Iterable[int],
                         trl_vllm: bool = False) -> dict[str, Any]:
    """GRPOConfig arguments that choose how completions are generated: Unsloth's vLLM
    (`enabled`: model.fast_inference), TRL's own (`trl_vllm`: grpo.use_vllm, whose mode, host and
    port pass by name), or the model's generate()."""
    if trl_vllm and not enabled:
        return {"use_vllm": True, "generation_kwargs": {"stop_token_ids": [int(i) for i in stop_token_ids]}}
    if not enabled:
        # TRL's transformers path takes its stop ids from model.generation_config.
        return {"use_vllm": False, "generation_kwargs": {}}
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": gpu_memory_utilization,
        "generation_kwargs": {"stop_token_ids": [int(i) for i in stop_token_ids]},
    }


# -------------------- backends --------------------

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


# model.gradient_checkpointing -> FastModel.get_peft_model's use_gradient_checkpointing. "auto" is
# Unsloth's own default, "unsloth" (offloaded checkpointing), said explicitly.
UNSLOTH_GRADIENT_CHECKPOINTING: dict[str, bool | str] = {
    "auto": "unsloth", "unsloth": "unsloth", "on": True, "off": False}


def unsloth_peft_kwargs(lora: LoraSettings, seed: int, gradient_checkpointing: str = "auto") -> dict[str, Any]:
    """Arguments for unsloth.FastModel.get_peft_model, the same LoRA as the hf backend. A regex
    target_modules (how Unsloth saves an adapter) is passed through as the regex.
    gradient_checkpointing: model.gradient_checkpointing (UNSLOTH_GRADIENT_CHECKPOINTING); the
    model keeps the mode and Unsloth's trainer restores it before each train()."""
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
        "use_gradient_checkpointing": UNSLOTH_GRADIENT_CHECKPOINTING[gradient_checkpointing],
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
    if cfg.model.backend == "auto" and (resolve_device(cfg) == "cpu" or launched()):
        return "hf"  # Unsloth trains in one process (config.launch_problem)
    return cfg.model.backend
