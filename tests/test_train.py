"""Training: SFT and GRPO on a tiny random Gemma 3 (fast) and on the real 270M model (slow)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from haiku_kit.config import apply_overrides, load_preset
from haiku_kit.errors import ConfigError, ModelLoadError

FAST_REWARDS = "grpo.rewards={names: [line_count_penalty, haiku_reward], weights: [1.0, 1.0]}"


def rows(n=16):
    from haiku_kit.data import build_prompt, load_embedded

    out = []
    for row in load_embedded()[:n]:
        prompt = build_prompt(row["topic"])
        out.append({**row, "prompt": prompt,
                    "messages": [*prompt, {"role": "assistant", "content": row["haiku"]}]})
    return out


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(rows())


def tiny_cfg(tiny_model_dir, out, *extra):
    return load_preset("cpu-smoke", [f"model.name={tiny_model_dir}", f"output_dir={out}", *extra])


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class Interrupt:
    """Simulates Ctrl-C after `at` optimizer steps."""

    def __init__(self, at):
        self.at = at

    def __getattr__(self, name):
        return lambda *a, **k: None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- SFT (tiny)


@pytest.mark.parametrize("mode", ["assistant", "completion"])
def test_sft_text_ends_with_the_poem_and_trains_only_the_answer(tiny_model_dir, tmp_path, dataset, mode):
    from haiku_kit import train

    cfg = tiny_cfg(tiny_model_dir, tmp_path, f"sft.loss_mask={mode}")
    model, tok = train.load_for(cfg)
    trainer = train.build_sft_trainer(cfg, model, tok, dataset, tmp_path / "sft", "cpu")
    example = trainer.train_dataset[0]
    text = tok.decode(example["input_ids"])
    poem = dataset[0]["haiku"]
    # no reference bug: no extra empty model turn after the answer
    assert text.rstrip("\n").endswith(poem + "<end_of_turn>")
    assert not text.endswith("<start_of_turn>model\n") and text.count("<start_of_turn>model") == 1
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tok.decode(trained).rstrip("\n") == poem + "<end_of_turn>"


def test_auto_loss_mask_picks_assistant_masking_for_the_gemma_template(tiny_model_dir, tmp_path):
    from haiku_kit import train

    _, tok = train.load_for(tiny_cfg(tiny_model_dir, tmp_path))
    assert train.choose_loss_mask(tok, "auto") == "assistant"


def test_run_sft_writes_adapter_logs_plot_and_effective_config(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train import run_sft

    adapter = run_sft(tiny_cfg(tiny_model_dir, tmp_path), dataset)
    assert adapter == tmp_path / "sft" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    log = read_log(tmp_path / "sft" / "log.jsonl")
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    assert (tmp_path / "sft" / "log.csv").is_file()
    assert (tmp_path / "sft" / "training.png").read_bytes()[:4] == b"\x89PNG"
    effective = yaml.safe_load((tmp_path / "config.yaml").read_text())["effective"]["sft"]
    assert effective["loss_mask"] == "assistant" and effective["precision"] == "fp32"


# --------------------------------------------------------------------------- GRPO (tiny)


def test_run_grpo_two_steps_with_samples_and_effective_settings(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train import run_grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS)
    adapter = run_grpo(cfg, dataset)
    stage = tmp_path / "grpo"
    assert (adapter / "adapter_model.safetensors").is_file()
    log = [e for e in read_log(stage / "log.jsonl") if "reward" in e]
    assert [e["step"] for e in log] == [1, 2]
    for key in ("rewards/line_count_penalty/mean", "frac_reward_zero_std", "completions/clipped_ratio",
                "monitor/copy_prompt_share", "monitor/train_overlap_share"):
        assert key in log[0]
    samples = read_log(stage / "samples.jsonl")
    assert len(samples) == 8 and set(samples[0]["rewards"]) == {"line_count_penalty", "haiku_reward"}
    assert samples[0]["topic"] == samples[0]["prompt"].rsplit(": ", 1)[-1]
    eff = yaml.safe_load((stage / "effective.yaml").read_text())
    assert eff["loss_type"] == "dapo" and eff["beta"] == 0.0 and eff["mask_truncated_completions"] is False
    assert eff["num_generations"] == 4 and eff["generation_batch_size"] == 4
    assert 106 in eff["stop_token_ids"] and (eff["temperature"], eff["top_p"], eff["top_k"]) == (1.0, 0.95, 64)
    assert (stage / "training.png").is_file() and (stage / "log.csv").is_file()


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train import find_checkpoint, run_grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, "grpo.save_steps=100")
    with pytest.raises(KeyboardInterrupt):
        run_grpo(cfg, dataset, callbacks=[Interrupt(at=1)])
    ckpt = find_checkpoint(tmp_path / "grpo")
    assert ckpt is not None and ckpt.name == "checkpoint-1"
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert not (tmp_path / "grpo" / "adapter").exists()

    adapter = run_grpo(cfg, dataset, resume_from_checkpoint="latest")
    assert (adapter / "adapter_model.safetensors").is_file()
    steps = [e["step"] for e in read_log(tmp_path / "grpo" / "log.jsonl") if "reward" in e]
    # Ctrl-C came before step 1 was logged; the resumed run trains and logs step 2 only
    assert steps == [2]
    state = json.loads((find_checkpoint(tmp_path / "grpo") / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_grpo_continues_from_a_grpo_checkpoint(tiny_model_dir, tmp_path, dataset):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from haiku_kit.train import load_for, run_grpo

    first = tiny_cfg(tiny_model_dir, tmp_path / "a", "grpo.init=base", FAST_REWARDS, "grpo.max_steps=1")
    run_grpo(first, dataset)
    ckpt = tmp_path / "a" / "grpo" / "checkpoints" / "checkpoint-1"
    # Mark the checkpoint's LoRA so it cannot be mistaken for a fresh (seeded) adapter.
    weights = load_file(str(ckpt / "adapter_model.safetensors"))
    marked = {k: v + 0.25 if "lora_B" in k else v for k, v in weights.items()}
    save_file(marked, str(ckpt / "adapter_model.safetensors"))

    second = tiny_cfg(tiny_model_dir, tmp_path / "b", FAST_REWARDS, "grpo.max_steps=1", f"grpo.init={ckpt}")
    model, _ = load_for(second, adapter=ckpt)
    loaded = get_peft_model_state_dict(model)
    b_name = next(k for k in marked if "lora_B" in k)
    assert loaded[b_name].float().sub(marked[b_name].float()).abs().max() < 1e-6

    adapter = run_grpo(second, dataset)
    eff = yaml.safe_load((tmp_path / "b" / "grpo" / "effective.yaml").read_text())
    assert eff["init_adapter"] == str(ckpt)
    assert load_file(str(adapter / "adapter_model.safetensors")).keys() == marked.keys()


def test_grpo_starts_from_the_sft_adapter_by_default(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train import resolve_init_adapter

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    assert resolve_init_adapter(cfg, cfg.grpo, None) is None  # no SFT yet: the base model
    (tmp_path / "sft" / "adapter").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / "sft" / "adapter" / name).write_text("{}")
    assert resolve_init_adapter(cfg, cfg.grpo, None) == tmp_path / "sft" / "adapter"
    assert resolve_init_adapter(cfg, apply_overrides(cfg, ["grpo.init=base"]).grpo, None) is None


# --------------------------------------------------------------------------- bad input


def test_missing_or_empty_start_adapter_is_named(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train import resolve_init_adapter, resolve_resume

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_init_adapter(cfg, cfg.grpo, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="adapter"):
        resolve_init_adapter(cfg, cfg.grpo, tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_resume(tmp_path / "nowhere", tmp_path / "grpo")
    with pytest.raises(ModelLoadError, match="not a trainer checkpoint"):
        resolve_resume(tmp_path / "empty", tmp_path / "grpo")
    with pytest.raises(ModelLoadError, match="no checkpoint"):
        resolve_resume("latest", tmp_path / "grpo")


def test_missing_splits_dir_is_named(tiny_model_dir, tmp_path):
    from haiku_kit.errors import DataError
    from haiku_kit.train import load_run_data

    with pytest.raises(DataError, match="splits_dir"):
        load_run_data(tiny_cfg(tiny_model_dir, tmp_path, f"data.splits_dir={tmp_path / 'none'}"))


def test_cli_reports_unknown_preset_and_bad_override(tmp_path, capsys):
    from haiku_kit.cli import main

    assert main(["train", "sft", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "cpu-demo" in capsys.readouterr().err
    assert main(["train", "grpo", "--preset", "cpu-smoke", "--set", "grpo.num_generations=3",
                 "--out", str(tmp_path)]) == 2
    assert "divisible" in capsys.readouterr().err


def test_trl_batch_error_is_translated(tiny_model_dir, tmp_path, dataset):
    """Even a config built around the validator gets the explained error from TRL's check."""
    from haiku_kit import train

    cfg = tiny_cfg(tiny_model_dir, tmp_path, FAST_REWARDS)
    cfg.grpo.num_generations = 3  # bypasses apply_overrides' validation
    model, tok = train.load_for(cfg)
    with pytest.raises(ConfigError, match="multiple of grpo.num_generations=3"):
        train.build_grpo_trainer(cfg, cfg.grpo, model, tok, dataset, tmp_path / "grpo", "cpu")


def test_cpu_logprob_fallback_matches_full_logits():
    import torch

    from haiku_kit.train import TorchChunkedLogProb

    torch.manual_seed(0)
    hidden, weight = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8)
    targets = torch.tensor([0, 3, 10, 2, 2])
    logp, ent, _, _, top1 = TorchChunkedLogProb.apply(hidden, weight, None, targets, 0.7, 4, 30.0, 1.0,
                                                      ("entropy", "is_top1"))
    logits = 30.0 * torch.tanh((hidden @ weight.t()) / 30.0) / 0.7
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(logp, expected, atol=1e-5) and ent.shape == (5,) and top1.dtype == torch.bool
    logp.sum().backward()
    assert hidden.grad is not None


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_sft_reduces_training_loss_on_the_real_model(tmp_path):
    from datasets import Dataset

    from haiku_kit.train import run_sft

    cfg = load_preset("cpu-smoke", [f"output_dir={tmp_path}", "sft.max_steps=12", "sft.per_device_train_batch_size=4",
                                    "sft.max_length=64", "sft.warmup_ratio=0", "sft.save_steps=100"])
    run_sft(cfg, Dataset.from_list(rows(48)))
    losses = [e["loss"] for e in read_log(tmp_path / "sft" / "log.jsonl") if "loss" in e]
    assert len(losses) == 12
    assert statistics.mean(losses[-3:]) < statistics.mean(losses[:3]) - 0.2


@pytest.mark.slow
def test_grpo_two_steps_on_the_real_model_has_reward_variance(tmp_path):
    from datasets import Dataset

    from haiku_kit.train import run_grpo

    cfg = load_preset("cpu-smoke", [f"output_dir={tmp_path}", "grpo.init=base", "grpo.rewards=dense",
                                    "grpo.per_device_train_batch_size=8", "grpo.max_completion_length=24",
                                    "grpo.save_steps=100"])
    adapter = run_grpo(cfg, Dataset.from_list(rows(8)))
    log = [e for e in read_log(tmp_path / "grpo" / "log.jsonl") if "reward" in e]
    assert [e["step"] for e in log] == [1, 2]
    assert all(e["reward_std"] > 0 for e in log)
    samples = read_log(tmp_path / "grpo" / "samples.jsonl")
    assert {"line_count_penalty", "haiku_reward", "similarity_reward"} == set(samples[0]["rewards"])
    assert (adapter / "adapter_model.safetensors").is_file()
