"""grpo.py: TRL GRPOTrainer on a tiny random Gemma 3 (fast) and on the real 270M model (slow)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from training_helpers import FAST_REWARDS, Interrupt, read_log, rows, tiny_cfg

from haiku_kit.config import apply_overrides, load_preset
from haiku_kit.errors import ConfigError, ModelLoadError


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(rows())


def test_run_grpo_two_steps_with_samples_and_effective_settings(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train.grpo import run_grpo

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
    assert eff["gradient_checkpointing"] is False  # on a CPU: no recomputed forward in backward
    assert 106 in eff["stop_token_ids"] and (eff["temperature"], eff["top_p"], eff["top_k"]) == (1.0, 0.95, 64)
    assert (stage / "training.png").is_file() and (stage / "log.csv").is_file()


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train.checkpoints import find_checkpoint
    from haiku_kit.train.grpo import run_grpo

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

    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.grpo import run_grpo

    first = tiny_cfg(tiny_model_dir, tmp_path / "a", "grpo.init=base", FAST_REWARDS, "grpo.max_steps=1")
    run_grpo(first, dataset)
    ckpt = tmp_path / "a" / "grpo" / "checkpoints" / "checkpoint-1"
    # Mark the checkpoint's LoRA so it cannot be mistaken for a fresh (seeded) adapter.
    weights = load_file(str(ckpt / "adapter_model.safetensors"))
    marked = {k: v + 0.25 if "lora_B" in k else v for k, v in weights.items()}
    save_file(marked, str(ckpt / "adapter_model.safetensors"))

    second = tiny_cfg(tiny_model_dir, tmp_path / "b", FAST_REWARDS, "grpo.max_steps=1", f"grpo.init={ckpt}")
    model, _ = load_from_config(second, adapter=ckpt)
    loaded = get_peft_model_state_dict(model)
    b_name = next(k for k in marked if "lora_B" in k)
    assert loaded[b_name].float().sub(marked[b_name].float()).abs().max() < 1e-6

    adapter = run_grpo(second, dataset)
    eff = yaml.safe_load((tmp_path / "b" / "grpo" / "effective.yaml").read_text())
    assert eff["init_adapter"] == str(ckpt)
    assert load_file(str(adapter / "adapter_model.safetensors")).keys() == marked.keys()


def test_grpo_starts_from_the_sft_adapter_by_default(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train.grpo import start_adapter

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    assert start_adapter(cfg, cfg.grpo, None) is None  # no SFT yet: the base model
    (tmp_path / "sft" / "adapter").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / "sft" / "adapter" / name).write_text("{}")
    assert start_adapter(cfg, cfg.grpo, None) == tmp_path / "sft" / "adapter"
    assert start_adapter(cfg, apply_overrides(cfg, ["grpo.init=base"]).grpo, None) is None


def test_notebook_steps_give_the_real_trainer_and_save_later_stages(tiny_model_dir, tmp_path, dataset):
    """The notebook's cells for a two-stage preset: the first stage's real GRPOTrainer, then
    save_grpo trains the second stage from the first one's adapter."""
    from trl import GRPOTrainer

    from haiku_kit.model import load as modeling
    from haiku_kit.runs import grpo_phases, variant_of
    from haiku_kit.train import grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, "grpo.max_steps=1",
                   "phases=[grpo:a, grpo:b]", "grpo_variants={a: {}, b: {}}")
    first = grpo_phases(cfg)[0]
    start = grpo.start_adapter(cfg)
    assert start is None  # grpo.init=base
    model, tokenizer = modeling.load_from_config(cfg, adapter=start)
    trainer = grpo.grpo_trainer(cfg, model, tokenizer, dataset, variant_of(first), start)
    assert isinstance(trainer, GRPOTrainer) and trainer.kit_phase.folder == tmp_path / "grpo-a"
    trainer.train()
    adapter = grpo.save_grpo(cfg, trainer)
    final = grpo.run_grpo_phases(cfg, dataset, adapter, grpo_phases(cfg)[1:])
    assert final == tmp_path / "grpo" / "adapter"
    eff = yaml.safe_load((tmp_path / "grpo" / "effective.yaml").read_text())
    assert eff["init_adapter"] == str(tmp_path / "grpo-a" / "adapter")


def test_missing_or_empty_start_adapter_is_named(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.train.checkpoints import resolve_checkpoint
    from haiku_kit.train.grpo import start_adapter

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        start_adapter(cfg, cfg.grpo, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="adapter"):
        start_adapter(cfg, cfg.grpo, tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no such checkpoint folder"):
        resolve_checkpoint(tmp_path / "nowhere", tmp_path / "grpo")
    with pytest.raises(ModelLoadError, match="not a trainer checkpoint"):
        resolve_checkpoint(tmp_path / "empty", tmp_path / "grpo")
    with pytest.raises(ModelLoadError, match="no complete checkpoint"):
        resolve_checkpoint("latest", tmp_path / "grpo")


def test_trl_batch_error_is_translated(tiny_model_dir, tmp_path, dataset):
    """Even a config built around the validator gets the explained error from TRL's check."""
    from haiku_kit.model import load as modeling
    from haiku_kit.train import grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, FAST_REWARDS)
    cfg.grpo.num_generations = 3  # bypasses apply_overrides' validation
    model, tok = modeling.load_from_config(cfg)
    with pytest.raises(ConfigError, match="multiple of grpo.num_generations=3"):
        grpo.build_grpo_trainer(cfg, cfg.grpo, model, tok, dataset, tmp_path / "grpo", "cpu")


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_grpo_two_steps_on_the_real_model_has_reward_variance(tmp_path):
    from datasets import Dataset

    from haiku_kit.train.grpo import run_grpo

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


# --------------------------------------------------------------------------- extra topics


def _topic_file(tmp_path, topics):
    file = tmp_path / "topics.txt"
    file.write_text("# prompt-only topics\n" + "\n".join(topics) + "\n", encoding="utf-8")
    return file


def test_extra_topics_join_the_rl_prompts_but_never_near_an_eval_topic_or_twice(tmp_path):
    from datasets import Dataset, DatasetDict

    from haiku_kit.train.grpo import grpo_examples, with_extra_topics
    from haiku_kit.verify.text import build_prompt

    listed = rows(12)
    splits = DatasetDict({"rl": Dataset.from_list(listed[:8]), "eval": Dataset.from_list(listed[8:])})
    data = grpo_examples(splits["rl"])
    assert with_extra_topics(data, "", splits) is data
    new = ["Nervous before a first job interview.", "Missing a friend who moved away."]
    file = _topic_file(tmp_path, [new[0], f"the {listed[8]['topic']}!", listed[0]["topic"].upper(), new[1],
                                  new[0].rstrip(".")])  # the first again
    joined = with_extra_topics(data, str(file), splits, seed=0)
    assert sorted(joined["topic"]) == sorted(list(data["topic"]) + new)  # eval-near, RL, repeat: left out
    added = [r for r in joined if r["source_id"].startswith("extra:")]
    assert [(r["topic"], r["haiku"]) for r in sorted(added, key=lambda r: r["source_id"])] == [
        (new[0], ""), (new[1], "")]
    assert all(r["prompt"] == build_prompt(r["topic"]) for r in added)
    assert list(joined["topic"]) != list(data["topic"]) + new  # shuffled in, the same way for a seed
    assert list(with_extra_topics(data, str(file), splits, seed=0)["topic"]) == list(joined["topic"])


def test_grpo_trainer_trains_on_the_extra_topics_and_a_missing_file_is_named(
        tiny_model_dir, tmp_path, dataset):
    from haiku_kit.config import validate
    from haiku_kit.model import load as modeling
    from haiku_kit.train import grpo

    file = _topic_file(tmp_path, ["Nervous before a first job interview.", "Missing a friend who moved away."])
    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, f"grpo.extra_topics={file}")
    model, tokenizer = modeling.load_from_config(cfg)
    trainer = grpo.grpo_trainer(cfg, model, tokenizer, dataset)
    rl_rows = min(len(dataset), cfg.data.max_rl_rows or len(dataset))  # cpu-smoke caps the split
    assert len(trainer.train_dataset) == rl_rows + 2 == trainer.kit_phase.rows
    assert "Missing a friend who moved away." in list(trainer.train_dataset["topic"])
    with pytest.raises(ConfigError, match=r"grpo\.extra_topics=.*absent\.txt.*no such file"):
        validate(tiny_cfg(tiny_model_dir, tmp_path, f"grpo.extra_topics={tmp_path / 'absent.txt'}"))
    with pytest.raises(ConfigError, match=r"grpo_variants\.b\.extra_topics=.*absent\.txt"):
        tiny_cfg(tiny_model_dir, tmp_path, "phases=[grpo:a, grpo:b]",
                 f"grpo_variants={{a: {{}}, b: {{extra_topics: {tmp_path / 'absent.txt'}}}}}")


# --------------------------------------------------------------------------- one code path, one place


def _trainer_facts(trainer) -> dict:
    return {
        "args": trainer.args.to_dict(),
        "rewards": (list(trainer.reward_func_names), trainer.reward_weights.tolist()),
        "callbacks": [type(c).__name__ for c in trainer.callback_handler.callbacks],
        "data": trainer.train_dataset.to_list(),
        "kit": (trainer.kit_phase.phase, trainer.kit_phase.folder, trainer.kit_phase.rows),
    }


def test_the_notebook_cells_build_the_trainer_the_kit_builds(tiny_model_dir, tmp_path, dataset):
    """04's cells (grpo_setup, GRPOConfig(**kit.args), GRPOTrainer(...), kit.attach) and the CLI's
    grpo_trainer give the same trainer: arguments, rewards and weights, callbacks, prompts."""
    from trl import GRPOConfig, GRPOTrainer

    from haiku_kit.model import load as modeling
    from haiku_kit.train import grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS,
                   "grpo.curriculum=[{until_step: 1, scales: {haiku_reward: 0.0}}]")
    model, tokenizer = modeling.load_from_config(cfg)
    kit = grpo.grpo_setup(cfg, model, tokenizer, dataset)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=kit.reward_funcs,
        args=GRPOConfig(**kit.args),
        train_dataset=kit.train_dataset,
        processing_class=tokenizer,
        callbacks=kit.callbacks,
    )
    assert kit.attach(trainer) is trainer
    notebook = _trainer_facts(trainer)
    assert "CurriculumCallback" in notebook["callbacks"] and trainer.collapse is kit.collapse
    assert (tmp_path / "grpo" / "effective.yaml").is_file()
    kit_built = _trainer_facts(grpo.grpo_trainer(cfg, model, tokenizer, dataset))
    assert notebook == kit_built


def test_every_grpo_setting_trl_knows_passes_by_name(tiny_model_dir, tmp_path):
    """GRPOSettings is the one place a GRPO setting is written: each field GRPOConfig also has
    reaches GRPOConfig's arguments, the effective record and show_args by name; a field added to
    GRPOSettings (here shuffle_dataset) needs nothing else."""
    import dataclasses

    from trl import GRPOConfig

    from haiku_kit import stages
    from haiku_kit.config import GRPOSettings
    from haiku_kit.train.common import config_args, passthrough_names

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.min_p=0.05", "grpo.repetition_penalty=1.1",
                   "grpo.loss_type=dr_grpo", "grpo.epsilon=0.25")
    names = passthrough_names(GRPOSettings, GRPOConfig)
    assert {"loss_type", "beta", "epsilon", "epsilon_high", "top_k", "min_p", "num_iterations"} <= set(names)
    assert not {"rewards", "curriculum", "monitor", "init"} & set(names)  # the kit's own settings

    Extended = dataclasses.make_dataclass(
        "Extended", [("shuffle_dataset", bool, dataclasses.field(default=False))], bases=(GRPOSettings,))
    s = Extended(**{f.name: getattr(cfg.grpo, f.name) for f in dataclasses.fields(GRPOSettings)})
    args = config_args(GRPOConfig, cfg, s, tmp_path / "grpo", "cpu", None, {}, "grpo")
    assert args["shuffle_dataset"] is False
    computed = {"max_steps", "optim", "report_to", "epsilon_high"}  # the kit translates these
    for name in set(names) - computed:
        assert args[name] == getattr(cfg.grpo, name), name
    assert (args["min_p"], args["repetition_penalty"], args["loss_type"]) == (0.05, 1.1, "dr_grpo")

    # show_args lists every setting passed by name
    shown = SimpleNamespace(reward_funcs=(), args=GRPOConfig.__new__(GRPOConfig))
    assert set(names) <= set(stages.key_args(shown))


def test_the_effective_record_has_every_setting_passed_by_name(tiny_model_dir, tmp_path, dataset):
    from trl import GRPOConfig

    from haiku_kit.config import GRPOSettings
    from haiku_kit.model import load as modeling
    from haiku_kit.train import grpo
    from haiku_kit.train.common import passthrough_names

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, "grpo.epsilon=0.3")
    model, tokenizer = modeling.load_from_config(cfg)
    grpo.grpo_trainer(cfg, model, tokenizer, dataset)
    eff = yaml.safe_load((tmp_path / "grpo" / "effective.yaml").read_text())
    assert set(passthrough_names(GRPOSettings, GRPOConfig)) <= set(eff)
    assert eff["epsilon_high"] == 0.3 and eff["lr_scheduler_type"] == "cosine"  # None -> epsilon
