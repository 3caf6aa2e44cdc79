"""The embedded Gemma 3 270M with an English-trimmed vocabulary ("embedded-english").

Why: the tied LM head (262,144 x 640) is about 62% of the model's multiply-adds per token on a
CPU, and it is paid again in every GRPO log-prob pass, forward and backward. English text
reaches about a third of those rows. This model keeps only them: the same transformer, the
embedding (and so the tied head) sliced to the kept rows, and the tokenizer rebuilt on them.

What is kept (resources/english_vocab.json, written by scripts/build_english_vocab.py):
every token that English text reaches (CMUdict words in four forms, the embedded haiku and
topics, printable ASCII, the reference prompts and answers), every piece a BPE merge can pass
through on the way to one of them (so the merges that build them all survive), the 256
byte-fallback tokens and the special and user-defined tokens except `<unusedN>`.

What holds, and is tested: text made of kept tokens tokenizes to the same tokens (ids renumbered
in order), so the kept tokens' logits are exactly the full model's; the trimmed model samples
from the full model's distribution restricted to English tokens. Text it never saw still
tokenizes (shorter pieces or bytes), but not always as the full model would. LoRA adapters touch
no embedding, so an adapter trained on one model loads on the other; `export` writes the full
vocabulary (export.py).
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from haiku_kit.model.embedded import (
    BUILD_VERSION,
    cached_model_dir,
    embedded_model_dir,
    write_marker,
)

NAME = "embedded-english"
FOLDER_PREFIX = "gemma-3-270m-english-v"
MODEL_FOLDER = f"{FOLDER_PREFIX}{BUILD_VERSION}"  # rebuilt with the embedded model
KEEP_FILE = Path(__file__).parents[1] / "resources" / "english_vocab.json"
_UNUSED = re.compile(r"<unused\d+>")
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")


# --------------------------------------------------------------------------- which ids


def merge_closure(vocab: dict[str, int], pieces: Iterable[str]) -> set[str]:
    """`pieces` plus every piece a BPE merge can pass through to build one of them: each way of
    splitting a kept piece into two vocabulary pieces, recursively."""
    keep: set[str] = set()
    stack = list(pieces)
    while stack:
        piece = stack.pop()
        if piece in keep:
            continue
        keep.add(piece)
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                stack += [left, right]
    return keep


def english_ids(tokenizer, texts: list[str]) -> list[int]:
    """Sorted ids to keep: what `texts` tokenize to, closed under merges, with byte-fallback,
    special and user-defined tokens (not `<unusedN>`)."""
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=False)
    reached: set[int] = set()
    for start in range(0, len(texts), 4000):
        for ids in tokenizer(texts[start:start + 4000], add_special_tokens=False)["input_ids"]:
            reached.update(ids)
    added = {i: t.content for i, t in backend.get_added_tokens_decoder().items()}
    pieces = merge_closure(vocab, (tokenizer.convert_ids_to_tokens(i) for i in reached if i not in added))
    keep = {vocab[p] for p in pieces} | {i for t, i in vocab.items() if _BYTE.fullmatch(t)}
    keep |= {i for i, t in added.items() if not _UNUSED.fullmatch(t)}
    return sorted(keep)


def save_keep(ids: list[int], vocab_size: int, path: Path = KEEP_FILE) -> None:
    """The kept ids as a zlib-compressed bitmap over the full vocabulary (about 20 KB)."""
    bits = bytearray((vocab_size + 7) // 8)
    for i in ids:
        bits[i >> 3] |= 0x80 >> (i & 7)
    payload = {"about": "token ids of the embedded Gemma 3 kept by embedded-english; "
                        "written by scripts/build_english_vocab.py",
               "vocab_size": vocab_size, "count": len(ids),
               "bitmap_zlib_base64": base64.b64encode(zlib.compress(bytes(bits), 9)).decode()}
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def load_keep(path: Path = KEEP_FILE) -> tuple[list[int], int]:
    """(sorted kept ids, the full vocabulary size they index)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    bits = zlib.decompress(base64.b64decode(payload["bitmap_zlib_base64"]))
    ids = [i for i in range(payload["vocab_size"]) if bits[i >> 3] & (0x80 >> (i & 7))]
    if len(ids) != payload["count"]:
        raise ValueError(f"{path}: {len(ids)} ids in the bitmap, {payload['count']} expected")
    return ids, payload["vocab_size"]


# --------------------------------------------------------------------------- the trimmed model


def trim_tokenizer_json(spec: dict, keep: list[int]) -> dict:
    """A tokenizer.json (as a dict) on the kept ids only, renumbered in order; a merge stays
    when both of its parts and its result are kept (their order is the full tokenizer's)."""
    new_id = {old: new for new, old in enumerate(keep)}
    model = spec["model"]
    vocab = {tok: new_id[i] for tok, i in model["vocab"].items() if i in new_id}
    merges = [m for m in model["merges"]
              if (pair := m.split(" ", 1) if isinstance(m, str) else m)
              and pair[0] in vocab and pair[1] in vocab and pair[0] + pair[1] in vocab]
    added = [{**t, "id": new_id[t["id"]]} for t in spec["added_tokens"] if t["id"] in new_id]
    post = json.loads(json.dumps(spec.get("post_processor")))
    for special in (post or {}).get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return {**spec, "added_tokens": added, "post_processor": post,
            "model": {**model, "vocab": vocab, "merges": merges}}


def _remap(value, new_id: dict[int, int]):
    if isinstance(value, int):
        return new_id[value]
    return [new_id[v] for v in value] if isinstance(value, list) else value


def build_english_dir(out_dir: Path, full_dir: Path | None = None,
                      keep: list[int] | None = None) -> None:
    """Write the trimmed model (fp32 safetensors, tokenizer, generation config) into out_dir."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from haiku_kit.model.gguf import save_fast_tokenizer

    full_dir = Path(full_dir or embedded_model_dir())
    if keep is None:
        keep, size = load_keep()
    else:
        size = None
    model = AutoModelForCausalLM.from_pretrained(str(full_dir), dtype=torch.float32)
    embedding = model.get_input_embeddings()
    if size is not None and embedding.weight.shape[0] != size:
        raise ValueError(f"{KEEP_FILE} indexes a {size}-token vocabulary; {full_dir} has "
                         f"{embedding.weight.shape[0]}")
    new_id = {old: new for new, old in enumerate(keep)}
    embedding.weight = torch.nn.Parameter(embedding.weight.data[torch.tensor(keep)].clone())
    embedding.num_embeddings = len(keep)
    model.config.vocab_size = len(keep)
    model.tie_weights()
    for holder in (model.config, model.generation_config):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(holder, key, None) is not None:
                setattr(holder, key, _remap(getattr(holder, key), new_id))
    model.config.name_or_path = "gemma-3-270m-english"
    model.save_pretrained(str(out_dir), safe_serialization=True)
    spec = json.loads((full_dir / "tokenizer.json").read_text(encoding="utf-8"))
    save_fast_tokenizer(Tokenizer.from_str(json.dumps(trim_tokenizer_json(spec, keep))), out_dir)
    write_marker(out_dir)


def english_model_dir() -> Path:
    """Path of the cached HF folder of embedded-english, building it (from the embedded model's
    folder, itself built first if needed) on first use."""
    return cached_model_dir(MODEL_FOLDER, lambda out: build_english_dir(out),
                            "the English-trimmed Gemma 3 270M")
