"""Does a saved LoRA adapter fit a base model? Checked before any weights are loaded.

The base model is built on the meta device from its config.json (no weights, about a second),
and every tensor in adapter_model.safetensors is matched, by name and shape (read from the file's
header, not its data), to the module it adapts. A mismatch is one ModelLoadError line naming the
adapter, the base model it declares, the first module that does not fit, and what to do, instead
of peft's size-mismatch traceback or its message about missing modules.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ModelLoadError

__all__ = ["adapter_misfit", "check_adapter_fits"]

logger = logging.getLogger(__name__)

_PREFIX = "base_model.model."
_LORA_PARTS = {
    "lora_A": lambda shape, base: shape[1] == base[1],  # (r, in) against (out, in)
    "lora_B": lambda shape, base: shape[0] == base[0],  # (out, r)
    "lora_embedding_A": lambda shape, base: shape[1] == base[0],  # (r, vocab) against (vocab, d)
    "lora_embedding_B": lambda shape, base: shape[0] == base[1],  # (d, r)
}


def _adapter_shapes(adapter_dir: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as fh:
        return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118


def _base_shapes(base_source: str) -> dict[str, list[int]]:
    """Parameter name -> shape of the base model, built on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: list(p.shape) for name, p in model.named_parameters()}


def adapter_misfit(adapter_dir: Path, base_shapes: dict[str, list[int]]) -> str | None:
    """Why the adapter does not fit a base with these parameter shapes, or None when it fits."""
    for key, shape in sorted(_adapter_shapes(adapter_dir).items()):
        name = key.removeprefix(_PREFIX)
        parts = name.split(".")
        lora = next((p for p in parts if p in _LORA_PARTS), None)
        if lora is None:  # a fully saved module (modules_to_save): same name, same shape
            base = base_shapes.get(name)
            if base is None:
                return f"it holds {name}, which the base model lacks"
            if base != shape:
                return f"its {name} has shape {shape}, the base model's {base}"
            continue
        module = ".".join(parts[: parts.index(lora)])
        base = base_shapes.get(f"{module}.weight")
        if base is None:
            return f"it adapts {module}, which the base model lacks"
        if len(shape) != 2 or len(base) != 2 or not _LORA_PARTS[lora](shape, base):
            return f"its {module} expects a {_shown(lora, shape)} layer, the base model's is {base}"
    return None


def _shown(lora: str, shape: list[int]) -> str:
    if lora == "lora_A":
        return f"{shape[1]}-input"
    if lora == "lora_B":
        return f"{shape[0]}-output"
    return f"{shape}"


def check_adapter_fits(adapter_dir: str | Path, base_source: str, base_name: str) -> None:
    """ModelLoadError (one line) unless the adapter in adapter_dir fits the base model at
    base_source (a folder or hub id; base_name is how the user named it)."""
    adapter_dir = Path(adapter_dir)
    try:
        declared = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        declared_base = declared.get("base_model_name_or_path") or "not stated"
    except (OSError, ValueError, AttributeError) as err:
        raise ModelLoadError(
            f"adapter {adapter_dir}: unreadable adapter_config.json ({err})"
        ) from None
    try:
        base_shapes = _base_shapes(base_source)
    except (OSError, ValueError, KeyError) as err:  # the loader itself will say what is wrong
        logger.debug(
            "cannot build %s on the meta device to check %s: %s", base_source, adapter_dir, err
        )
        return
    try:
        problem = adapter_misfit(adapter_dir, base_shapes)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"adapter {adapter_dir}: unreadable adapter_model.safetensors ({err})"
        ) from None
    if problem:
        raise ModelLoadError(
            f"adapter {adapter_dir} was trained on a different base model than {base_name} "
            f"(it declares {declared_base}): {problem}; load it with the model it was trained "
            "on (--set model.name=...) or train a new adapter"
        )
