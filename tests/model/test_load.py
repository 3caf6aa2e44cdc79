"""modeling.py: loading (both backends), errors, LoRA, saving and reloading, an adapter's base."""

from __future__ import annotations

import json
import sys
from typing import ClassVar

import pytest
import torch

from haiku_kit.config import LoraSettings
from haiku_kit.errors import ModelLoadError
from haiku_kit.model import backends
from haiku_kit.model.backends import unsloth_load_kwargs, unsloth_peft_kwargs
from haiku_kit.model.load import (
    adapter_base_model,
    load_model,
    save_adapter,
    save_gguf,
    save_merged,
)

# --------------------------------------------------------------------------- errors (fast)


def test_an_adapters_base_model_is_read_from_its_config(tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    for base, expected in ((str(tiny_model_dir), str(tiny_model_dir)),
                           ("/home/u/.cache/haiku-kit/gemma-3-270m-base-v1", "embedded"),
                           ("/home/u/.cache/haiku-kit/gemma-3-270m-english-v1", "embedded-english"),
                           ("embedded-english", "embedded-english"),
                           ("unsloth/gemma-3-1b-it", "unsloth/gemma-3-1b-it"), ("", "embedded")):
        (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        assert adapter_base_model(adapter) == expected
    with pytest.raises(ModelLoadError, match="does not exist"):
        adapter_base_model(tmp_path / "nowhere")


def test_unknown_model_name_mentions_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_model("no-such-org/no-such-model-xyz", backend="hf", lora=None)
    assert "no-such-org/no-such-model-xyz" in str(info.value)


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"), backend="hf")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path), backend="hf")


def test_missing_adapter_path_is_named(tmp_path):
    missing = tmp_path / "no-adapter"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model("embedded", backend="hf", adapter=str(missing))
    assert str(missing) in str(info.value)


def test_adapter_folder_without_files(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors") as info:
        load_model("embedded", backend="hf", adapter=str(tmp_path))
    assert str(tmp_path) in str(info.value)


# --------------------------------------------------------------------------- tiny model


def _randomize_lora(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


def test_tiny_model_loads_with_lora(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), backend="hf", lora=LoraSettings(r=4, alpha=8))
    assert set(model.generation_config.eos_token_id) >= {1, 106}
    assert tok.pad_token_id == 0 and "generation" in tok.chat_template
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_model_dtype_loads_the_weights_in_that_type(tiny_model_dir):
    import torch

    from haiku_kit.config import RunConfig, apply_overrides
    from haiku_kit.model.load import load_from_config

    for dtype, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        cfg = apply_overrides(RunConfig(), [f"model.name={tiny_model_dir}", "model.backend=hf",
                                            f"model.dtype={dtype}"])
        model, _ = load_from_config(cfg, trainable=False)
        assert {p.dtype for p in model.parameters()} == {expected}, dtype


def test_save_gguf_needs_unsloth(tiny_model_dir, tmp_path):
    model, tok = load_model(str(tiny_model_dir), backend="hf", lora=LoraSettings(r=4, alpha=8))
    with pytest.raises(ModelLoadError, match="unsloth"):
        save_gguf(model, tok, tmp_path / "gguf")


def test_save_adapter_needs_lora(tiny_model_dir, tmp_path):
    model, tok = load_model(str(tiny_model_dir), backend="hf", lora=None)
    with pytest.raises(ModelLoadError, match="LoRA"):
        save_adapter(model, tok, tmp_path / "a")


def test_save_merged_matches_lora_model(tiny_model_dir, tmp_path):
    model, tok = load_model(str(tiny_model_dir), backend="hf", lora=LoraSettings(r=4, alpha=8))
    _randomize_lora(model)
    ids = torch.tensor([[2, 818, 3823, 8864, 37423]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    out = save_merged(model, tok, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    # The caller's model is untouched (still LoRA-wrapped, same outputs).
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected)
    merged, merged_tok = load_model(str(out), backend="hf", lora=None)
    assert merged_tok(["x"])["input_ids"] == tok(["x"])["input_ids"]
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=0.05), (got - expected).abs().max()


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_lora_on_embedded_is_trainable_and_base_frozen():
    model, _ = load_model("embedded", backend="hf", lora=LoraSettings())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("embed_tokens" in n for n in frozen)
    assert all("lora_" not in n for n in frozen)
    # every target module of every layer got an adapter
    for target in LoraSettings().target_modules:
        assert sum(f"{target}.lora_A" in n for n in trainable) == 18


@pytest.mark.slow
def test_adapter_save_and_reload_round_trips(tmp_path):
    model, tok = load_model("embedded", backend="hf", lora=LoraSettings(r=8, alpha=16))
    _randomize_lora(model)
    model.eval()
    ids = tok("Autumn rain falls soft", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapter really changes outputs

    out = save_adapter(model, tok, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    del model

    again, _ = load_model("embedded", backend="hf", adapter=str(out))
    again.eval()
    assert any(p.requires_grad for n, p in again.named_parameters() if "lora_" in n)
    with torch.no_grad():
        got = again(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


# --------------------------------------------------------------------------- unsloth wiring


class _FakeFastModel:
    """Stands in for unsloth.FastModel on CPU: records calls, builds the same LoRA via peft."""

    calls: ClassVar[list] = []

    @classmethod
    def from_pretrained(cls, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cls.calls.append(("from_pretrained", kwargs))
        model = AutoModelForCausalLM.from_pretrained(kwargs["model_name"])
        model.save_pretrained_gguf = lambda path, tok, quantization_method: cls.calls.append(
            ("gguf", path, quantization_method)
        )
        return model, AutoTokenizer.from_pretrained(kwargs["model_name"])

    @classmethod
    def get_peft_model(cls, model, **kwargs):
        from peft import LoraConfig, get_peft_model

        cls.calls.append(("get_peft_model", kwargs))
        config = LoraConfig(
            r=kwargs["r"],
            lora_alpha=kwargs["lora_alpha"],
            target_modules=kwargs["target_modules"],
        )
        return get_peft_model(model, config)


@pytest.fixture
def fake_unsloth(monkeypatch):
    import types

    fake = types.ModuleType("unsloth")
    fake.FastModel = _FakeFastModel
    _FakeFastModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "unsloth_installed", lambda: True)
    return _FakeFastModel


def test_unsloth_branch_wiring(fake_unsloth, tiny_model_dir, tmp_path):
    lora = LoraSettings(r=4, alpha=8)
    model, tok = load_model(str(tiny_model_dir), backend="auto", lora=lora, max_seq_length=256)
    (_, load_kwargs), (_, peft_kwargs) = fake_unsloth.calls
    assert load_kwargs == unsloth_load_kwargs(str(tiny_model_dir), 256, False)
    assert peft_kwargs == unsloth_peft_kwargs(lora, 3407)
    assert set(model.generation_config.eos_token_id) >= {1, 106}
    assert tok.pad_token_id == 0

    _randomize_lora(model)
    adapter = save_adapter(model, tok, tmp_path / "adapter")
    save_gguf(model, tok, tmp_path / "gguf", quantization="q8_0")
    assert fake_unsloth.calls[-1] == ("gguf", str(tmp_path / "gguf"), "q8_0")

    # Reloading an adapter goes through FastModel.get_peft_model with the saved settings.
    fake_unsloth.calls.clear()
    again, _ = load_model(str(tiny_model_dir), backend="unsloth", adapter=str(adapter),
                          gradient_checkpointing="off")
    assert fake_unsloth.calls[1][1]["r"] == 4 and fake_unsloth.calls[1][1]["lora_alpha"] == 8
    assert fake_unsloth.calls[1][1]["use_gradient_checkpointing"] is False  # model.gradient_checkpointing
    ids = torch.tensor([[2, 818, 3823]])
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_import_backend_resolves_and_refuses_unsloth_without_a_gpu():
    from haiku_kit.model.backends import import_backend

    assert import_backend("hf") == "hf"
    if not (backends.cuda_available() and backends.unsloth_installed()):
        with pytest.raises(ModelLoadError, match="unsloth|CUDA"):
            import_backend("unsloth")


def test_unsloth_is_imported_before_an_adapter_check_imports_transformers(tmp_path, tiny_model_dir):
    """The Python API path load_model(..., adapter=...) checked the adapter against its base
    (transformers, on the meta device) before `import unsloth`: an unpatched model. In a fresh
    process with the unsloth backend chosen, a stand-in `unsloth` package (the real one needs a
    GPU) records which of the modules it patches were already imported when it was."""
    import subprocess
    import textwrap

    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import sys\nSEEN = sorted(m for m in ('transformers', 'trl', 'peft') if m in sys.modules)\n")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8,
         "base_model_name_or_path": str(tiny_model_dir)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(fake.parent)!r})
        from haiku_kit.model import backends
        backends.cuda_available = lambda: True
        backends.unsloth_installed = lambda: True
        from haiku_kit.model.load import load_model
        try:
            load_model({str(tiny_model_dir)!r}, backend="unsloth", adapter={str(adapter)!r})
        except Exception as err:  # the stand-in has no FastModel; the order is what is tested
            print("stopped:", type(err).__name__, file=sys.stderr)
        import unsloth
        print(json.dumps(unsloth.SEEN))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stderr[-2000:]


def test_load_from_config_passes_the_gradient_checkpointing_setting(monkeypatch):
    from haiku_kit.config import load_preset
    from haiku_kit.model import load as load_module

    seen = {}
    monkeypatch.setattr(load_module, "load_model", lambda *a, **kw: seen.update(kw) or ("m", "t"))
    monkeypatch.setattr(load_module, "backend_for", lambda cfg: "unsloth")
    load_module.load_from_config(load_preset("ref-full"))
    assert seen["gradient_checkpointing"] == "unsloth"
