"""Which floating-point precision to train and generate in, decided by the GPU's compute capability.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
