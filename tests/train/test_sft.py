"""sft.py: TRL SFTTrainer on a tiny random Gemma 3 (fast) and on the real 270M model (slow)."""

from __future__ import annotations

import statistics

import pytest
import yaml
from training_helpers import read_log, rows, tiny_cfg

from haiku_kit.config import load_preset


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(rows())


@pytest.mark.parametrize("mode", ["assistant", "completion"])
def test_sft_text_ends_with_the_poem_and_trains_only_the_answer(tiny_model_dir, tmp_path, dataset, mode):
    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft

    cfg = tiny_cfg(tiny_model_dir, tmp_path, f"sft.loss_mask={mode}")
    model, tok = modeling.load_from_config(cfg)
    trainer = sft.build_sft_trainer(cfg, model, tok, dataset, tmp_path / "sft", "cpu")
    example = trainer.train_dataset[0]
    text = tok.decode(example["input_ids"])
    poem = dataset[0]["haiku"]
    # no reference bug: no extra empty model turn after the answer
    assert text.rstrip("\n").endswith(poem + "<end_of_turn>")
    assert not text.endswith("<start_of_turn>model\n") and text.count("<start_of_turn>model") == 1
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tok.decode(trained).rstrip("\n") == poem + "<end_of_turn>"


def test_auto_loss_mask_picks_assistant_masking_for_the_gemma_template(tiny_model_dir, tmp_path):
    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft

    _, tok = modeling.load_from_config(tiny_cfg(tiny_model_dir, tmp_path))
    assert sft.choose_loss_mask(tok, "auto") == "assistant"


def test_run_sft_writes_adapter_logs_plot_and_effective_config(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train.sft import run_sft

    adapter = run_sft(tiny_cfg(tiny_model_dir, tmp_path), dataset)
    assert adapter == tmp_path / "sft" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    log = read_log(tmp_path / "sft" / "log.jsonl")
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    assert (tmp_path / "sft" / "log.csv").is_file()
    assert (tmp_path / "sft" / "training.png").read_bytes()[:4] == b"\x89PNG"
    effective = yaml.safe_load((tmp_path / "config.yaml").read_text())["effective"]["sft"]
    assert effective["loss_mask"] == "assistant" and effective["precision"] == "fp32"
    assert effective["gradient_checkpointing"] is False  # TRL's default is True; the CPU skips it


def test_each_stage_keeps_the_config_it_ran_with_when_a_later_call_changes_it(tmp_path):
    """Two `haiku-kit train` calls with different --set: RUN/config.yaml holds the last call's,
    each stage folder its own (and RUN/config.yaml's effective block keeps both stages)."""
    from haiku_kit.train.common import record_effective

    first = load_preset("cpu-smoke", [f"output_dir={tmp_path}", "sft.learning_rate=0.001"])
    second = load_preset("cpu-smoke", [f"output_dir={tmp_path}", "grpo.learning_rate=0.002"])
    for cfg, stage in ((first, "sft"), (second, "grpo")):
        (tmp_path / stage).mkdir()
        record_effective(cfg, stage, tmp_path / stage, {"learning_rate": 1.0})
    run = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert run["sft"]["learning_rate"] != 0.001 and set(run["effective"]) == {"sft", "grpo"}
    for cfg, stage in ((first, "sft"), (second, "grpo")):
        assert yaml.safe_load((tmp_path / stage / "config.yaml").read_text()) == cfg.to_dict()


def test_cpu_training_skips_gradient_checkpointing_unless_asked(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft

    for extra, wanted in ((), False), (("sft.trainer_args={gradient_checkpointing: true}",), True):
        cfg = tiny_cfg(tiny_model_dir, tmp_path, *extra)
        model, tok = modeling.load_from_config(cfg)
        trainer = sft.build_sft_trainer(cfg, model, tok, dataset, tmp_path / "sft", "cpu")
        assert trainer.args.gradient_checkpointing is wanted


def test_notebook_steps_build_train_and_save_with_changed_args(tiny_model_dir, tmp_path, dataset):
    """The notebook's cells: the real SFTTrainer, trainer.args changed before trainer.train(),
    and the saved record shows the change."""
    from trl import SFTTrainer

    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    model, tokenizer = modeling.load_from_config(cfg)
    trainer = sft.sft_trainer(cfg, model, tokenizer, dataset)
    assert isinstance(trainer, SFTTrainer) and trainer.args.max_steps == 3
    trainer.args.max_steps = 2
    trainer.train()
    adapter = sft.save_sft(cfg, trainer)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert [e["step"] for e in read_log(tmp_path / "sft" / "log.jsonl") if "loss" in e] == [1, 2]
    assert yaml.safe_load((tmp_path / "sft" / "effective.yaml").read_text())["max_steps"] == 2
    assert (tmp_path / "sft" / "training.png").is_file()


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_sft_reduces_training_loss_on_the_real_model(tmp_path):
    from datasets import Dataset

    from haiku_kit.train.sft import run_sft

    cfg = load_preset("cpu-smoke", [f"output_dir={tmp_path}", "sft.max_steps=12", "sft.per_device_train_batch_size=4",
                                    "sft.max_length=64", "sft.warmup_ratio=0", "sft.save_steps=100"])
    run_sft(cfg, Dataset.from_list(rows(48)))
    losses = [e["loss"] for e in read_log(tmp_path / "sft" / "log.jsonl") if "loss" in e]
    assert len(losses) == 12
    assert statistics.mean(losses[-3:]) < statistics.mean(losses[:3]) - 0.2


def test_the_notebook_cells_build_the_trainer_the_kit_builds(tiny_model_dir, tmp_path, dataset):
    """03's cells (sft_setup, SFTConfig(**kit.args), SFTTrainer(...), kit.attach) and the CLI's
    sft_trainer give the same trainer; every SFTSettings field SFTConfig has passes by name."""
    from trl import SFTConfig, SFTTrainer

    from haiku_kit.config import SFTSettings
    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft
    from haiku_kit.train.common import passthrough_names

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "sft.num_train_epochs=2", "sft.weight_decay=0.02")
    model, tokenizer = modeling.load_from_config(cfg)
    kit = sft.sft_setup(cfg, model, tokenizer, dataset)
    names = passthrough_names(SFTSettings, SFTConfig)
    assert {"max_length", "num_train_epochs", "learning_rate"} <= set(names) and "loss_mask" not in names
    for name in set(names) - {"max_steps", "optim", "report_to"}:  # those three the kit translates
        assert kit.args[name] == getattr(cfg.sft, name), name
    trainer = SFTTrainer(model=model, args=SFTConfig(**kit.args), train_dataset=kit.train_dataset,
                         processing_class=tokenizer, callbacks=kit.callbacks)
    kit.attach(trainer)

    def facts(t):
        return (t.args.to_dict(), [type(c).__name__ for c in t.callback_handler.callbacks],
                t.train_dataset.to_list(), t.loss_mask_mode, t.kit_phase.rows)

    notebook = facts(trainer)
    eff = yaml.safe_load((tmp_path / "sft" / "effective.yaml").read_text())
    assert set(names) <= set(eff) and eff["num_train_epochs"] == 2 and eff["weight_decay"] == 0.02
    assert notebook == facts(sft.sft_trainer(cfg, model, tokenizer, dataset))
