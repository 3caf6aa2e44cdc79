"""GPU memory of a training preset, estimated on paper: no GPU runs this project's tests.

For each training phase the estimate adds, in bytes:
- weights: every parameter at the training precision (4 bytes on a T4, where Gemma 3 trains in
  float32; 2 in bfloat16; about 0.56 for 4-bit QLoRA: the linear layers in 4 bits with their
  scales, embeddings and norms in 16 bits);
- LoRA: the adapter's parameters in float32, their gradients, and the optimizer's state (8 bytes a
  parameter for AdamW, 2 for the 8-bit AdamW);
- activations: with gradient checkpointing (Unsloth's default) each layer keeps its input hidden
  state for every token of the micro-batch, plus one layer's working set while it is recomputed;
- logits: float32 logits and their log-softmax over the whole vocabulary for the tokens scored
  (the completion in GRPO, the whole sequence in SFT): Gemma 3's 262,144 entries make this the
  largest activation;
- a fixed 0.75 GiB for the CUDA context and the allocator's cache, then 10% for fragmentation.

It is an upper-bound style estimate (every sequence at its preset's longest), meant to catch a
preset that cannot fit, not to predict a measured peak; stages.free_memory() reports the real
peak per stage on a GPU. The architecture of the 1B model is written here from its config.json
(no hub at run time); tests/model/test_memory.py checks the parameter count against the embedded
270M model's real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1 << 30
CUDA_CONTEXT_BYTES = 0.75 * GIB
FRAGMENTATION = 1.10
# the chat template and an instruction around a topic: the longest of the kit's prompts
PROMPT_TOKENS = 96
OPTIMIZER_BYTES = {"adamw_8bit": 2, "paged_adamw_8bit": 2, "adamw_bnb_8bit": 2}  # else 8 (AdamW)


@dataclass(frozen=True)
class Architecture:
    """The shapes that set a Gemma 3 text model's memory (the fields of its config.json)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
        return cls(*(int(get(name)) for name in cls.__dataclass_fields__))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one decoder layer."""
        h, q, kv, i = (self.hidden_size, self.num_attention_heads * self.head_dim,
                       self.num_key_value_heads * self.head_dim, self.intermediate_size)
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def parameters(self) -> int:
        """Every parameter (the LM head is tied to the embedding, as in Gemma 3)."""
        layer = sum(a * b for a, b in self.linear_shapes().values())
        norms = 4 * self.hidden_size + 2 * self.head_dim  # 4 layer norms, q_norm and k_norm
        return (self.vocab_size * self.hidden_size + self.num_hidden_layers * (layer + norms)
                + self.hidden_size)

    def lora_parameters(self, r: int, targets: list[str] | str) -> int:
        shapes = self.linear_shapes()
        names = list(shapes) if isinstance(targets, str) else [t for t in targets if t in shapes]
        return self.num_hidden_layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


# unsloth/gemma-3-1b-it (= google/gemma-3-1b-it), config.json
GEMMA3_1B = Architecture(vocab_size=262_144, hidden_size=1152, intermediate_size=6912,
                         num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                         head_dim=256)


def _weight_bytes(arch: Architecture, weight_bytes: float, load_in_4bit: bool) -> float:
    if not load_in_4bit:
        return arch.parameters() * weight_bytes
    linear = arch.num_hidden_layers * sum(a * b for a, b in arch.linear_shapes().values())
    # 4-bit NF4 with one 16-bit scale per 64 weights, the rest in 16 bits
    return linear * (0.5 + 2 / 64) + (arch.parameters() - linear) * 2


def estimate_phase(arch: Architecture, cfg: Any, phase: str, weight_bytes: float) -> dict[str, float]:
    """GiB by part, and "total", for one phase ("sft" or "grpo") of a RunConfig."""
    settings = getattr(cfg, phase)
    batch = settings.per_device_train_batch_size
    if phase == "grpo":
        tokens = batch * (PROMPT_TOKENS + settings.max_completion_length)
        scored = batch * settings.max_completion_length
    else:
        tokens = scored = batch * settings.max_length
    lora = arch.lora_parameters(cfg.model.lora.r, cfg.model.lora.target_modules)
    act_bytes = min(weight_bytes, 4) if weight_bytes >= 2 else 2  # 4-bit trains in 16-bit
    working = (4 * arch.hidden_size + 3 * arch.intermediate_size
               + 3 * arch.num_attention_heads * arch.head_dim)
    parts = {
        "weights": _weight_bytes(arch, weight_bytes, cfg.model.load_in_4bit),
        "lora": lora * (4 + 4 + OPTIMIZER_BYTES.get(settings.optim, 8)),
        "activations": tokens * act_bytes * (arch.num_hidden_layers * arch.hidden_size + working),
        "logits": 2 * scored * arch.vocab_size * 4,
        "cuda": CUDA_CONTEXT_BYTES,
    }
    total = sum(parts.values()) * FRAGMENTATION
    return {**{k: v / GIB for k, v in parts.items()}, "total": total / GIB}
