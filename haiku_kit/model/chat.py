"""The chat format a model needs for TRL and generation: the Gemma 3 chat template (with
generation markers, for assistant-only loss), a pad token, and the ids that end a completion.

Without <end_of_turn> (106) among the stop ids, chat completions never end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from haiku_kit.errors import DataError, ModelLoadError

END_OF_TURN = "<end_of_turn>"


def text_tokenizer(tokenizer):
    """The text tokenizer inside a processor (Unsloth may hand back one), else the tokenizer."""
    return getattr(tokenizer, "tokenizer", tokenizer)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end a completion: the model's eos ids, the tokenizer's eos and <end_of_turn>
    when the vocabulary has it (Gemma: 1 and 106). Without 106, chat completions never end."""
    tok = text_tokenizer(tokenizer)
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    ids += [tok.eos_token_id, end_id if end_id != tok.unk_token_id else None]
    return [i for i in dict.fromkeys(ids) if isinstance(i, int)]


def prepare_tokenizer(model, tokenizer, max_seq_length: int | None = None):
    """Gemma 3 chat template, pad token and <end_of_turn> as a stop token."""
    from haiku_kit.model.gguf import GEMMA3_CHAT_TEMPLATE

    tok = text_tokenizer(tokenizer)
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    has_end = end_id is not None and end_id != tok.unk_token_id
    template = getattr(tok, "chat_template", None)
    if template is None or (model_type.startswith("gemma3") and "generation" not in template):
        if not has_end:
            raise ModelLoadError(
                f"tokenizer of {model_type or 'this model'} has no chat template and no "
                f"{END_OF_TURN} token to build one with"
            )
        tok.chat_template = GEMMA3_CHAT_TEMPLATE
        if tok is not tokenizer and hasattr(tokenizer, "chat_template"):
            tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = (
            "<pad>"
            if tok.convert_tokens_to_ids("<pad>") not in (None, tok.unk_token_id)
            else tok.eos_token
        )
    if max_seq_length:
        tok.model_max_length = max_seq_length
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = stop_token_ids(model, tok)
        gen.pad_token_id = tok.pad_token_id
    return tokenizer


def prompt_strings(tokenizer, prompts: Sequence[Any]) -> list[str]:
    """Model input text per prompt: chat message lists rendered with the chat template
    (generation prompt added), plain strings as they are."""
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            out.append(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
            out.append(tokenizer.apply_chat_template(
                list(prompt), tokenize=False, add_generation_prompt=True))
        else:
            raise DataError(f"prompt {i}: expected a string or a list of chat messages, "
                            f"got {type(prompt).__name__}")
    return out


def encode(tokenizer, texts: list[str]):
    """Left-padded batch encoding with exactly one <bos> per prompt: chat templates already
    write it, plain strings get the tokenizer's usual special tokens."""
    bos = tokenizer.bos_token
    adds_bos = bool(bos) and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]
    if adds_bos:
        texts = [t.removeprefix(bos) for t in texts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=adds_bos)
    finally:
        tokenizer.padding_side = old_side
