"""config.py and settings.py: presets, inheritance, overrides, the schema and their errors."""

from __future__ import annotations

import pytest

from haiku_kit.config import (
    RunConfig,
    apply_overrides,
    grpo_variant_settings,
    list_presets,
    load_config,
    load_preset,
    save_config,
)
from haiku_kit.errors import ConfigError

REQUIRED = {
    "cpu-demo", "cpu-smoke", "h100-gemma3-1b", "ref-sft-only", "ref-sft-grpo-dense",
    "ref-sft-grpo-sparse", "ref-rl-only-sparse", "ref-full",
}


def test_every_required_preset_is_packaged_and_loads():
    assert REQUIRED <= set(list_presets())
    for name in list_presets():
        cfg = load_preset(name)
        assert isinstance(cfg, RunConfig) and cfg.name == name and cfg.phases


def test_gpu_and_reference_presets_share_the_reference_learning_rates():
    for name in REQUIRED - {"cpu-demo", "cpu-smoke"}:
        cfg = load_preset(name)
        assert cfg.model.name == "unsloth/gemma-3-1b-it"
        assert cfg.model.load_in_4bit == name.startswith("ref-")  # h100: 16-bit LoRA; ref-*: as the reference
        assert cfg.model.lora.r == 64 and cfg.sft.learning_rate == 2e-4 and cfg.sft.max_steps == 100
        assert cfg.grpo.learning_rate == 5e-6 and cfg.grpo.lr_scheduler_type == "cosine"
        assert cfg.grpo.warmup_ratio == 0.1 and cfg.grpo.max_grad_norm == 0.1
        assert 4 <= cfg.grpo.num_generations <= 8
    assert load_preset("ref-sft-only").phases == ["sft"]
    assert load_preset("ref-rl-only-sparse").phases == ["grpo:sparse"]
    assert load_preset("ref-rl-only-sparse").grpo.init == "base"
    assert load_preset("ref-full").phases == ["sft", "grpo:sparse", "grpo:dense"]


def test_grpo_phases_resolve_to_reward_specs():
    cfg = load_preset("ref-full")  # the reference's own rewards, judged by pyphen as it judged
    assert grpo_variant_settings(cfg, "sparse").rewards == "ref-sparse"
    assert grpo_variant_settings(cfg, "dense").rewards == "ref-dense"
    assert grpo_variant_settings(load_preset("ref-sft-grpo-dense"), "dense").rewards == "ref-dense"
    # a variant not listed in grpo_variants but named like a reward preset means {rewards: NAME}
    h100 = load_preset("h100-gemma3-1b")
    assert grpo_variant_settings(h100, "sparse").rewards == "sparse"
    with pytest.raises(ConfigError, match="neither in grpo_variants"):
        grpo_variant_settings(h100, "nonsense")


def test_cpu_presets_are_small():
    smoke = load_preset("cpu-smoke")
    assert smoke.sft.max_steps == 3 and smoke.grpo.max_steps == 2 and smoke.eval.n_prompts <= 4
    demo = load_preset("cpu-demo")
    assert demo.model.name == "embedded-english" and demo.model.device == "cpu"
    assert demo.grpo.num_generations == 8 and demo.grpo.max_completion_length <= 64
    assert (demo.grpo.temperature, demo.grpo.top_p, demo.grpo.top_k) == (1.0, 0.95, 64)
    assert demo.eval.n_prompts >= 64 and demo.eval.k == 1  # CIs that mean something
    full = load_preset("cpu-full")
    assert full.model.name == "embedded-english" and full.eval.n_prompts >= 128
    assert full.grpo.max_steps == 8 * demo.grpo.max_steps
    assert full.distill.topics > 0 == demo.distill.topics == smoke.distill.topics
    # the demo trains on human haiku only: no round, no shipped filler corpus (research/log.md J6)
    assert full.distill.rounds == 3 and demo.distill.corpus == full.distill.corpus == ""
    assert full.distill.max_word_syllables == [0, 1, 1]
    # the headline's GRPO also practises on the kit's prompt-only topics (G14); the demo's does not
    assert full.grpo.extra_topics == "embedded" and demo.grpo.extra_topics == smoke.grpo.extra_topics == ""
    assert full.eval.constrained and demo.eval.constrained  # the constrained rows beside the free


def test_overrides_parse_yaml_scalars_and_dotted_paths():
    cfg = apply_overrides(
        load_preset("cpu-demo"),
        ["grpo.max_steps=2", "sft.learning_rate=1e-4", "grpo.mask_truncated_completions=true",
         "phases=[sft, grpo:sparse]", "grpo_variants.sparse.max_steps=3", "model.lora.r=8",
         "data.splits_dir=null", "grpo.rewards={names: [haiku_reward], weights: [2]}"],
    )
    assert cfg.grpo.max_steps == 2 and cfg.sft.learning_rate == 1e-4
    assert cfg.grpo.mask_truncated_completions is True and cfg.model.lora.r == 8
    assert cfg.phases == ["sft", "grpo:sparse"] and grpo_variant_settings(cfg, "sparse").max_steps == 3
    assert cfg.grpo.rewards == {"names": ["haiku_reward"], "weights": [2]}
    # the preset itself is untouched
    assert load_preset("cpu-demo").grpo.max_steps != 2
    # float fields accept ints
    assert apply_overrides(cfg, ["grpo.beta=0"]).grpo.beta == 0.0


def test_load_preset_takes_overrides_too():
    assert load_preset("cpu-smoke", ["seed=7"]).seed == 7


@pytest.mark.parametrize(
    ("override", "named", "listed"),
    [
        ("grpo.max_stepz=2", "grpo.max_stepz", "max_steps"),
        ("nope=1", "nope", "grpo"),
        ("model.lora.rank=4", "model.lora.rank", "alpha"),
        ("grpo.collapse.windw=3", "grpo.collapse.windw", "window"),
    ],
)
def test_unknown_override_key_names_it_and_lists_valid_keys(override, named, listed):
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_preset("cpu-demo"), [override])
    assert repr(named) in str(err.value) and listed in str(err.value)


@pytest.mark.parametrize(
    "override",
    ["grpo.max_steps=abc", "grpo.max_steps=1.5", "model.load_in_4bit=maybe", "model.backend=tpu",
     "phases=[sft, rlhf]", "grpo.collapse.action=panic", "no_equals_sign", "model.dtype=float8"],
)
def test_bad_override_values_are_config_errors(override):
    with pytest.raises(ConfigError):
        apply_overrides(load_preset("cpu-demo"), [override])


@pytest.mark.parametrize(
    ("override", "named"),
    [("distill.candidates=0", "distill.candidates=0"), ("distill.k=-1", "distill.k=-1"),
     ("distill.rounds=0", "distill.rounds=0"), ("distill.learning_rate=0", "distill.learning_rate")],
)
def test_bad_distill_numbers_are_named_when_distillation_is_on(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        apply_overrides(load_preset("cpu-full"), [override])
    apply_overrides(load_preset("cpu-demo"), ["distill.topics=0", "distill.corpus=", override])  # off: not checked


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as err:
        load_preset("no-such-preset")
    assert "no-such-preset" in str(err.value)
    for name in ("cpu-demo", "h100-gemma3-1b", "ref-full"):
        assert name in str(err.value)


def test_indivisible_generation_batch_is_explained_with_the_fix():
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_preset("cpu-demo"), ["grpo.per_device_train_batch_size=6", "grpo.num_generations=4"])
    msg = str(err.value)
    assert "divisible" in msg and "num_generations=4" in msg and "Fix" in msg


def test_unknown_key_in_a_preset_file_fails(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: cpu-smoke\ngrpo:\n  max_stepss: 3\n")
    with pytest.raises(ConfigError, match="grpo.max_stepss"):
        load_preset(str(path))


def test_yaml_file_preset_inherits_from_a_packaged_one(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: cpu-smoke\nsft:\n  max_steps: 5\n")
    cfg = load_preset(str(path))
    assert cfg.sft.max_steps == 5 and cfg.grpo.max_steps == 2  # the rest from cpu-smoke


def test_inheritance_cycle_is_reported(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(f"base: {path}\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_preset(str(path))


def test_config_round_trips_through_yaml(tmp_path):
    cfg = apply_overrides(load_preset("ref-full"), ["grpo.max_steps=3"])
    path = save_config(cfg, tmp_path / "config.yaml", extra={"effective": {"grpo": {"beta": 0.0}}})
    assert load_config(path) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    # a later save without extra keeps what training recorded
    save_config(cfg, path)
    assert "effective" in path.read_text()


def test_one_lora_settings_class_checks_its_values():
    from haiku_kit.config import LoraSettings

    assert load_preset("cpu-demo").model.lora == LoraSettings()
    with pytest.raises(ConfigError, match="model.lora.r must be a positive integer"):
        apply_overrides(load_preset("cpu-demo"), ["model.lora.r=0"])
    with pytest.raises(ConfigError, match="dropout"):
        LoraSettings(dropout=1.5)


def test_grpo_loss_type_is_checked_against_trls_own_list_before_any_import():
    """No copy of TRL's loss types in the kit: the allowed values come from GRPOConfig's field
    help, read from TRL's source without importing trl (Unsloth must come first on a GPU)."""
    import dataclasses
    import subprocess
    import sys

    from trl import GRPOConfig

    from haiku_kit.config import trl_choices

    allowed = trl_choices("loss_type")
    assert allowed and "dapo" in allowed and "grpo" in allowed
    help_text = next(f for f in dataclasses.fields(GRPOConfig) if f.name == "loss_type").metadata["help"]
    assert all(f"'{value}'" in help_text for value in allowed)
    for value in allowed:
        assert apply_overrides(load_preset("cpu-smoke"), [f"grpo.loss_type={value}"]).grpo.loss_type == value
    with pytest.raises(ConfigError, match=r"^grpo\.loss_type='ppo' is not one of: .*dapo") as err:
        apply_overrides(load_preset("cpu-smoke"), ["grpo.loss_type=ppo"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"grpo_variants\.a\.loss_type='x'"):
        apply_overrides(load_preset("cpu-smoke"), ["grpo_variants={a: {loss_type: x}}"])
    code = ("import sys; from haiku_kit.config import apply_overrides, load_preset\n"
            "try: apply_overrides(load_preset('cpu-smoke'), ['grpo.loss_type=ppo'])\n"
            "except Exception as e: print(type(e).__name__)\n"
            "print(sorted(m for m in ('trl', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ConfigError", "[]"]


def test_preset_files_refuse_empty_duplicate_keys_and_find_base_beside_them(tmp_path,
                                                                          monkeypatch):
    """An empty preset trained 100 default steps, a key given twice kept the last silently, and
    a relative `base:` was read from the working directory: each is now named or fixed."""
    import pytest

    from haiku_kit.config import ConfigError

    (tmp_path / "empty.yaml").write_text("\n")
    with pytest.raises(ConfigError, match=r"empty.yaml is empty"):
        load_preset(str(tmp_path / "empty.yaml"))
    (tmp_path / "twice.yaml").write_text("base: cpu-smoke\nsft: {max_steps: 3}\nsft: {max_steps: 9}\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: .*line 3, .*the key 'sft' is given twice"):
        load_preset(str(tmp_path / "twice.yaml"))
    sub = tmp_path / "presets"
    sub.mkdir()
    (sub / "parent.yaml").write_text("base: cpu-smoke\neval: {n_prompts: 3}\n")
    (sub / "child.yaml").write_text("base: parent.yaml\nsft: {max_steps: 7}\n")
    monkeypatch.chdir(tmp_path)  # not the presets' folder
    cfg = load_preset(str(sub / "child.yaml"))
    assert (cfg.sft.max_steps, cfg.eval.n_prompts, cfg.grpo.max_steps) == (7, 3, 2)
    (sub / "orphan.yaml").write_text("base: no-such-preset\n")
    with pytest.raises(ConfigError, match=r"unknown preset 'no-such-preset' \(the base: of .*orphan"):
        load_preset(str(sub / "orphan.yaml"))


# --------------------------------------------------------------------------- #38: new settings


@pytest.mark.parametrize(("override", "named"), [
    ("grpo.adam_beta2=1.0", "grpo.adam_beta2=1.0"), ("sft.adam_beta1=-0.1", "sft.adam_beta1=-0.1"),
    ("grpo.adam_beta1=.nan", "grpo.adam_beta1=nan"), ("sft.adam_beta2=abc", "sft.adam_beta2"),
    ("grpo_variants.x.adam_beta2=1.5", "grpo_variants.x.adam_beta2=1.5"),
    ("model.gradient_checkpointing=sometimes", "model.gradient_checkpointing='sometimes'"),
    ("model.gradient_checkpointing=1", "model.gradient_checkpointing='1'"),
    ("eval.protocol=published", "eval.protocol='published'"),
])
def test_new_settings_refuse_bad_values_naming_the_key(override, named):
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_preset("cpu-demo"), [override])
    assert named in str(err.value)


def test_adam_betas_pass_and_default_to_transformers():
    cfg = apply_overrides(load_preset("cpu-demo"), ["grpo.adam_beta2=0.99", "sft.adam_beta1=0.0"])
    assert (cfg.grpo.adam_beta1, cfg.grpo.adam_beta2, cfg.sft.adam_beta1) == (0.9, 0.99, 0.0)
    assert (RunConfig().sft.adam_beta1, RunConfig().sft.adam_beta2) == (0.9, 0.999)


def test_gradient_checkpointing_choices_and_yaml_booleans():
    demo = load_preset("cpu-demo")
    assert demo.model.gradient_checkpointing == "auto"
    # YAML reads a bare on / off as booleans: they mean "on" / "off"
    for value, meant in (("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"), ("'on'", "on")):
        cfg = apply_overrides(demo, [f"model.gradient_checkpointing={value}"])
        assert cfg.model.gradient_checkpointing == meant
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
    ref = load_preset("ref-full")
    assert apply_overrides(ref, ["model.gradient_checkpointing=off"]).model.gradient_checkpointing == "off"
    # Unsloth's offloaded checkpointing needs the unsloth backend on a GPU
    for override in ("model.backend=hf", "model.device=cpu"):
        with pytest.raises(ConfigError, match="gradient_checkpointing=unsloth.*" + override.replace(".", r"\.")):
            apply_overrides(ref, [override])
    with pytest.raises(ConfigError, match="gradient_checkpointing=unsloth"):
        apply_overrides(demo, ["model.gradient_checkpointing=unsloth"])  # cpu-demo: device cpu


def test_reference_protocol_needs_the_reference_eval_file(tmp_path):
    demo = load_preset("cpu-demo")
    assert (demo.eval.protocol, demo.eval.reference_data) == ("kit", "")
    with pytest.raises(ConfigError, match="eval.protocol=reference needs eval.reference_data.*axeld5/gemma_haiku"):
        apply_overrides(demo, ["eval.protocol=reference"])
    with pytest.raises(ConfigError, match="eval.reference_data='nope.json': no such file"):
        apply_overrides(demo, ["eval.protocol=reference", "eval.reference_data=nope.json"])
    data = tmp_path / "eval_data.json"
    data.write_text("[]")
    cfg = apply_overrides(demo, ["eval.protocol=reference", f"eval.reference_data={data}"])
    assert (cfg.eval.protocol, cfg.eval.reference_data) == ("reference", str(data))


def test_trainer_args_keys_are_checked_against_trls_configs_before_any_import():
    """Read from TRL's and transformers' source (no import): the same fields as the classes
    themselves, so a mistyped trainer_args key fails with the config, before a model loads."""
    import dataclasses

    from trl import GRPOConfig, SFTConfig

    from haiku_kit.config import trl_config_fields

    for cls in (SFTConfig, GRPOConfig):
        assert trl_config_fields(cls.__name__) == {f.name for f in dataclasses.fields(cls)}
    with pytest.raises(ConfigError, match="grpo.trainer_args: GRPOConfig has no field 'bogus_key'"):
        load_preset("cpu-smoke", ["grpo.trainer_args={bogus_key: 3}"])
    load_preset("cpu-smoke", ["sft.trainer_args={dataloader_num_workers: 0}"])
    with pytest.raises(ConfigError, match="sft.trainer_args"):
        load_preset("cpu-smoke", ["sft.trainer_args=[1, 2]"])
