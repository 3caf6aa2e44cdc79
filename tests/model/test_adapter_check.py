"""haiku_kit.model.load: an adapter is checked against its base before any weights load."""

from __future__ import annotations

import json

import pytest

from haiku_kit.errors import ModelLoadError
from haiku_kit.model.load import check_adapter_fits


def _gemma3(hidden=64, layers=2, vocab=512):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"] * (layers // 2),
    )


def _llama(hidden=64):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=512,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
    )


def _gpt2():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64)


def _base(tmp_path, name, config):
    folder = tmp_path / name
    config.save_pretrained(folder)
    return folder


def _adapter(tmp_path, name, config, targets=("q_proj", "v_proj", "down_proj")):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    folder = tmp_path / name
    peft_model.save_pretrained(folder)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = f"some/{name}-base"
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    return folder


def test_adapter_fits_its_own_base(tmp_path):
    base = _base(tmp_path, "gemma-small", _gemma3())
    check_adapter_fits(_adapter(tmp_path, "small", _gemma3()), str(base), "gemma-small")


def test_adapter_from_a_wider_gemma3_is_one_line(tmp_path):
    base = _base(tmp_path, "gemma-small", _gemma3(hidden=64))
    adapter = _adapter(tmp_path, "wide", _gemma3(hidden=96))
    with pytest.raises(ModelLoadError) as err:
        check_adapter_fits(adapter, str(base), "gemma-small")
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"adapter {adapter} was trained on a different base model than gemma-small (it declares "
        "some/wide-base): its model.layers.0.mlp.down_proj expects a 192-input layer, the base "
        "model's is [64, 128]; load it with the model it was trained on (--set model.name=...) "
        "or train a new adapter"
    )


def test_adapter_from_a_deeper_gemma3_names_the_missing_layer(tmp_path):
    base = _base(tmp_path, "gemma-small", _gemma3(layers=2))
    adapter = _adapter(tmp_path, "deep", _gemma3(layers=4))
    with pytest.raises(ModelLoadError, match=r"it adapts model\.layers\.2\.\S+, which the base"):
        check_adapter_fits(adapter, str(base), "gemma-small")


def test_adapter_from_another_architecture(tmp_path):
    base = _base(tmp_path, "gemma-small", _gemma3())
    adapter = _adapter(tmp_path, "gpt2", _gpt2(), targets=("c_attn",))
    with pytest.raises(ModelLoadError, match=r"different base model .*c_attn, which the base"):
        check_adapter_fits(adapter, str(base), "gemma-small")


def test_same_shapes_other_architecture_still_fits_by_shape(tmp_path):
    """Llama and Gemma 3 name their layers alike: an adapter is judged by what it touches."""
    base = _base(tmp_path, "gemma-small", _gemma3())
    check_adapter_fits(_adapter(tmp_path, "llama", _llama(hidden=64)), str(base), "gemma-small")


def test_unreadable_adapter_config(tmp_path):
    base = _base(tmp_path, "gemma-small", _gemma3())
    adapter = _adapter(tmp_path, "small", _gemma3())
    (adapter / "adapter_config.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match=r"adapter_config.json: unreadable"):
        check_adapter_fits(adapter, str(base), "gemma-small")


@pytest.mark.slow
def test_tiny_gemma3_adapter_on_the_embedded_270m(tmp_path, embedded_dir):
    adapter = _adapter(tmp_path, "tiny", _gemma3())
    with pytest.raises(ModelLoadError, match=r"different base model than embedded .*640"):
        check_adapter_fits(adapter, str(embedded_dir), "embedded")


def test_a_truncated_adapter_file_is_one_line_naming_it(tmp_path, tiny_model_dir):
    """A cut-off adapter_model.safetensors raised safetensors' own SafetensorError (a traceback)."""
    from haiku_kit.model.load import load_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8,
         "base_model_name_or_path": str(tiny_model_dir)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.raises(ModelLoadError, match="unreadable adapter_model.safetensors") as err:
        load_model(str(tiny_model_dir), backend="hf", adapter=str(adapter))
    assert str(adapter) in str(err.value) and "\n" not in str(err.value)


def test_a_rank_other_than_its_config_declares_is_one_line(tmp_path):
    """An adapter_config.json saying r=8 beside r=4 tensors loaded as 158 lines of peft's
    size-mismatch errors; it is one line naming both files."""
    base = _base(tmp_path, "gemma-small", _gemma3())
    adapter = _adapter(tmp_path, "small", _gemma3())
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 8
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as err:
        check_adapter_fits(adapter, str(base), "gemma-small")
    message = str(err.value)
    assert "\n" not in message
    assert "holds rank 4" in message and "declares r=8" in message, message
    config["rank_pattern"] = {"q_proj": 4, "v_proj": 4, "down_proj": 4}  # per-module ranks win
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    check_adapter_fits(adapter, str(base), "gemma-small")
