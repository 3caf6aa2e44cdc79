"""Build a correct Gemma 3 fast tokenizer from GGUF metadata.

transformers' own GGUF tokenizer conversion gets Gemma 3 wrong (no BOS, wrong merges), so we
rebuild it the way transformers' GemmaConverter does from a SentencePiece model: BPE with byte
fallback, merges derived from the vocabulary ordered by piece score, spaces -> "▁", no dummy
prefix, control tokens special and user-defined tokens (newline runs, html tags) atomic.
"""

from __future__ import annotations

from pathlib import Path

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
