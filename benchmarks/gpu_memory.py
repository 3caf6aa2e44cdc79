"""The paper estimate of each GPU preset's peak memory per training phase (haiku_kit/model/memory.py),
as docs/gpu.md prints it. An estimate, not a measurement: no GPU runs here.

    python benchmarks/gpu_memory.py
"""

from __future__ import annotations

from haiku_kit.config import list_presets, load_preset
from haiku_kit.model.backends import choose_precision
from haiku_kit.model.memory import GEMMA3_1B, estimate_phase

GPUS = {"colab-t4-gemma3-1b": ("T4, 15 GB", (7, 5))}
DEFAULT_GPU = ("H100, 80 GB", (9, 0))
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def main() -> None:
    print("| preset | GPU | phase | precision | weights | LoRA + optimizer | activations | logits "
          "| estimated peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in list_presets():
        cfg = load_preset(name)
        if cfg.model.device != "cuda" or "gemma-3-1b" not in cfg.model.name:
            continue
        gpu, capability = GPUS.get(name, DEFAULT_GPU)
        precision = choose_precision("cuda", [capability], "gemma3_text")
        shown = "4-bit + " + precision.name if cfg.model.load_in_4bit else precision.name
        for phase in ("sft", "grpo"):
            if not any(p.split(":")[0] == phase for p in cfg.phases):
                continue
            e = estimate_phase(GEMMA3_1B, cfg, phase, BYTES[precision.load_dtype])
            print(f"| `{name}` | {gpu} | {phase} | {shown} | {e['weights']:.1f} | {e['lora']:.2f} | "
                  f"{e['activations']:.2f} | {e['logits']:.1f} | {e['total']:.1f} GiB |")


if __name__ == "__main__":
    main()
