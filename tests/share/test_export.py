"""`haiku-kit export`: merged weights of a run's adapter, its model card, the re-scored table,
and one clear line for what cannot be exported or pushed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from training_helpers import rows, tiny_cfg

from haiku_kit.config import LoraSettings, load_config, save_config
from haiku_kit.data import splits as data
from haiku_kit.model.load import load_model, save_adapter
from haiku_kit.share.export import ExportError, export_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A run folder with a config on the tiny Gemma 3, eval splits and a (random) LoRA adapter."""
    root = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(tiny_model_dir, root)
    save_config(cfg, root / "config.yaml")
    data.build_splits(rows(40), root / "data", fractions=(1, 1, 1), min_similarity=None)
    model, tokenizer = load_model(str(tiny_model_dir), backend="hf", lora=LoraSettings(r=4, alpha=8))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapter something to merge
            torch.nn.init.normal_(param, std=0.05)
    save_adapter(model, tokenizer, root / "grpo" / "adapter")
    return root


def test_merged_export_writes_weights_card_and_rescores(run, tiny_model_dir):
    result = export_run(run, phase="grpo", merged=True, rescore=3)
    merged = result.files["merged"]
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    card = result.files["card"].read_text()
    assert card.startswith("---\nbase_model:") and "merged 16-bit" in card
    assert set(result.scores) == {"adapter", "merged"}
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert "| adapter |" in result.table() and "| merged |" in result.table()

    # The merged weights are base + B·A: the merged model answers as the adapter does
    # (16-bit rounding aside), and unlike the base model alone.
    from transformers import AutoModelForCausalLM

    adapted, _ = load_model(str(tiny_model_dir), backend="hf", lora=None,
                            adapter=run / "grpo" / "adapter")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    exported = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    ids = torch.tensor([[2, 818, 5279, 529, 506, 7101]])
    with torch.no_grad():
        a, b, m = adapted(ids).logits, base(ids).logits, exported(ids).logits
    drift = ((a - m).norm() / a.norm()).item()
    assert drift < 0.02 < ((a - b).norm() / a.norm()).item()


def test_gguf_of_a_non_embedded_base_names_the_converter(run):
    with pytest.raises(Exception, match="convert_hf_to_gguf"):
        export_run(run, merged=False, gguf="q8_0", rescore=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"phase": "sft"}, "no adapter to export"),
    ({"gguf": "q4"}, "use one of q8_0, f16, f32"),
    ({"merged": False}, "nothing to export"),
])
def test_bad_requests_fail_before_loading(run, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_run(run, rescore=0, **kwargs)


def test_cli_push_offline_is_one_line_and_keeps_the_files(run, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-m", "haiku_kit.cli", "export", str(run), "--out", str(tmp_path / "x"),
         "--rescore", "0", "--push", "someone/haiku"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert "push to someone/haiku failed" in last and str(tmp_path / "x") in last
    assert (tmp_path / "x" / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "x" / "README.md").is_file()


def test_save_and_share_cell_writes_the_adapters_card_and_keeps_it_when_push_fails(
        run, monkeypatch):
    from haiku_kit.stages import save_and_share

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = run / "grpo" / "adapter"
    with pytest.raises(ExportError, match=f"push to someone/haiku failed.*{adapter}"):
        save_and_share(run, "grpo", push_to="someone/haiku")
    card = (adapter / "README.md").read_text()
    assert "library_name: peft" in card and "LoRA adapter" in card and "someone/haiku" in card
    assert (adapter / "adapter_model.safetensors").is_file()  # the adapter itself untouched
    with pytest.raises(ExportError, match="no adapter to share"):
        save_and_share(run, "sft")


def test_an_embedded_english_run_exports_the_full_vocabulary_model(run, tmp_path, monkeypatch):
    """The trimmed model's adapter is merged into the full embedded model: its LoRA touches no
    embedding, and llama.cpp, Ollama and the hub expect the full vocabulary."""
    import shutil

    from haiku_kit.share import export

    english = tmp_path / "run"
    shutil.copytree(run, english)
    cfg = load_config(english / "config.yaml")
    cfg.model.name = "embedded-english"
    save_config(cfg, english / "config.yaml")
    asked = []

    def record(cfg, adapter, trainable):
        asked.append(cfg.model.name)
        raise RuntimeError("recorded")

    monkeypatch.setattr(export, "load_from_config", record)
    with pytest.raises(RuntimeError, match="recorded"):
        export_run(english, merged=True, rescore=0)
    assert asked == ["embedded"]
