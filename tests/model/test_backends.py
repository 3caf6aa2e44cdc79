"""backends.py: backend and device choice, Unsloth argument building and import order; the
kit imports no heavy library at import time; LoRA settings."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import haiku_kit
from haiku_kit.config import LoraSettings
from haiku_kit.errors import ModelLoadError
from haiku_kit.model import backends
from haiku_kit.model.backends import (
    choose_backend,
    unsloth_import_order_problem,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)
from haiku_kit.model.load import load_model, peft_lora_config

# --------------------------------------------------------------------------- backend (fast)


@pytest.mark.parametrize(
    ("backend", "cuda", "unsloth", "expected"),
    [
        ("auto", True, True, "unsloth"),
        ("auto", True, False, "hf"),
        ("auto", False, True, "hf"),
        ("auto", False, False, "hf"),
        ("hf", True, True, "hf"),
        ("unsloth", True, True, "unsloth"),
    ],
)
def test_choose_backend(backend, cuda, unsloth, expected):
    assert choose_backend(backend, cuda=cuda, unsloth=unsloth) == expected


def test_unsloth_without_cuda_says_so():
    with pytest.raises(ModelLoadError, match="CUDA"):
        choose_backend("unsloth", cuda=False, unsloth=True)


def test_unsloth_not_installed_says_how_to_install():
    with pytest.raises(ModelLoadError, match=r'pip install "haiku-kit\[gpu\]"'):
        choose_backend("unsloth", cuda=True, unsloth=False)


@pytest.mark.parametrize("bad", ["torch", "Unsloth", "", "vllm"])
def test_wrong_backend_string(bad):
    with pytest.raises(ModelLoadError, match="backend must be one of"):
        backends.resolve_backend(bad)


def test_resolve_backend_on_this_machine():
    expected = "unsloth" if backends.cuda_available() and backends.unsloth_installed() else "hf"
    assert backends.resolve_backend("auto") == expected
    assert backends.resolve_backend("hf") == "hf"
    if not backends.cuda_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            load_model("embedded", backend="unsloth")


def test_unsloth_load_kwargs():
    kwargs = unsloth_load_kwargs("/m", max_seq_length=384, load_in_4bit=True)
    assert kwargs == {
        "model_name": "/m",
        "max_seq_length": 384,
        "dtype": None,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "full_finetuning": False,
    }


def test_unsloth_peft_kwargs_match_hf_lora():
    lora = LoraSettings(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"))
    kwargs = unsloth_peft_kwargs(lora, seed=7)
    assert kwargs == {
        "finetune_vision_layers": False,
        "finetune_language_layers": True,
        "finetune_attention_modules": True,
        "finetune_mlp_modules": True,
        "target_modules": ["q_proj", "v_proj"],
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "bias": "none",
        "random_state": 7,
        "use_gradient_checkpointing": "unsloth",  # Unsloth's own default, said explicitly
    }
    cfg = peft_lora_config(lora)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"}


def test_unsloth_import_order_warning():
    assert unsloth_import_order_problem({"os", "json"}) is None
    assert unsloth_import_order_problem({"unsloth", "transformers"}) is None
    message = unsloth_import_order_problem({"trl", "transformers"})
    assert "transformers" in message and "trl" in message and "before" in message


def test_import_does_not_pull_in_transformers_or_unsloth():
    # With the Unsloth backend, `import unsloth` must come before transformers/trl: no kit module
    # may import them at import time.
    modules = sorted(m.name.removeprefix("haiku_kit.") for m in pkgutil.walk_packages(haiku_kit.__path__, "haiku_kit."))
    code = (
        f"import sys; [__import__('haiku_kit.' + m) for m in {modules!r}];"
        "print(sorted(m for m in ('transformers', 'trl', 'peft', 'unsloth') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lora_settings_validation_and_dict():
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert LoraSettings().target_modules == targets
    lora = LoraSettings.from_dict({"r": 4, "alpha": 8, "target_modules": ["q_proj"]})
    assert lora.to_dict() == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}
    with pytest.raises(ValueError, match="unknown LoRA"):
        LoraSettings.from_dict({"rank": 4})
    with pytest.raises(ValueError, match="r must"):
        LoraSettings(r=0)


@pytest.mark.parametrize(("value", "unsloth"), [
    ("auto", "unsloth"), ("unsloth", "unsloth"), ("on", True), ("off", False)])
def test_gradient_checkpointing_reaches_unsloths_get_peft_model(value, unsloth):
    kwargs = unsloth_peft_kwargs(LoraSettings(), 0, value)
    got = kwargs["use_gradient_checkpointing"]
    assert got == unsloth and type(got) is type(unsloth)
