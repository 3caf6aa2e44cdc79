"""The GPU settings wired through the kit, checked on CPU with the real TRL trainer: explicit
epsilon_high, no eos_token_id in generation_kwargs, precision recorded, fast_inference refused
where it cannot work, Unsloth's regex target_modules kept on reload, env.json and `haiku-kit env`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from training_helpers import FAST_REWARDS, rows, tiny_cfg

from haiku_kit.config import apply_overrides, load_preset
from haiku_kit.errors import ConfigError


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(rows())


def _grpo_effective(tiny_model_dir, tmp_path, dataset, *overrides):
    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.grpo import grpo_trainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, *overrides)
    model, tokenizer = load_from_config(cfg)
    trainer = grpo_trainer(cfg, model, tokenizer, dataset)
    return trainer, yaml.safe_load((tmp_path / "grpo" / "effective.yaml").read_text())


def test_grpo_passes_epsilon_high_and_no_generation_kwargs(tiny_model_dir, tmp_path, dataset):
    trainer, eff = _grpo_effective(tiny_model_dir, tmp_path, dataset)
    assert trainer.args.epsilon_high == trainer.args.epsilon == 0.2  # explicit, not TRL's fallback
    assert eff["epsilon_high"] == 0.2 and eff["use_vllm"] is False and eff["generation_kwargs"] == {}
    assert 106 in trainer.eos_token_ids  # <end_of_turn> still stops: from the generation config
    assert eff["precision"] == "fp32" and eff["precision_reason"] == "CPU: float32"
    assert json.loads((tmp_path / "env.json").read_text())["packages"]["trl"]


def test_grpo_epsilon_high_override_is_used_and_recorded(tiny_model_dir, tmp_path, dataset):
    trainer, eff = _grpo_effective(tiny_model_dir, tmp_path, dataset, "grpo.epsilon_high=0.28")
    assert trainer.args.epsilon_high == 0.28 and eff["epsilon_high"] == 0.28


def test_gpu_presets_set_epsilon_high_explicitly():
    for name in ("colab-t4-gemma3-1b", "h100-gemma3-1b"):
        assert load_preset(name).grpo.epsilon_high == 0.28, name  # what Unsloth would pick for dapo


def test_fast_inference_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="model.fast_inference=true needs the unsloth backend"):
        load_preset("cpu-smoke", ["model.fast_inference=true"])
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_preset("h100-gemma3-1b", ["model.gpu_memory_utilization=1.5"])
    cfg = apply_overrides(load_preset("h100-gemma3-1b"), ["model.fast_inference=true"])
    assert cfg.model.fast_inference and cfg.model.gpu_memory_utilization == 0.5


def test_unsloth_regex_target_modules_survive_reload(tiny_model_dir, tmp_path):
    """Unsloth saves target_modules as one regex: reloading must target the same modules."""
    from peft import PeftModel

    from haiku_kit.model.backends import unsloth_peft_kwargs
    from haiku_kit.model.load import load_model, lora_from_adapter, save_adapter

    regex = r".*\.self_attn\.(q_proj|v_proj)"
    model, tokenizer = load_model(str(tiny_model_dir), backend="hf", lora={"r": 4, "alpha": 8,
                                                                          "target_modules": regex})
    adapter = save_adapter(model, tokenizer, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == regex
    lora = lora_from_adapter(adapter)
    assert lora.target_modules == regex and unsloth_peft_kwargs(lora, 0)["target_modules"] == regex
    reloaded, _ = load_model(str(tiny_model_dir), backend="hf", adapter=adapter)
    assert isinstance(reloaded, PeftModel)
    wrapped = {n.rsplit(".", 1)[-1] for n, _ in reloaded.named_modules() if n.endswith(("q_proj", "v_proj", "k_proj"))
               and hasattr(reloaded.get_submodule(n), "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


def test_env_command_prints_and_writes(tmp_path, capsys):
    from haiku_kit.cli import main

    assert main(["env", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trl" in out and "torch CUDA" in out and "GPU" in out
    assert json.loads((tmp_path / "env.json").read_text())["python"]


def test_every_stage_notebook_run_writes_env_json(tmp_path):
    from haiku_kit.stages import open_run

    run = open_run("cpu-smoke", [], tmp_path / "run")
    env = json.loads((run.paths.root / "env.json").read_text())
    assert env["haiku_kit"]["version"] and "gpus" in env


# --------------------------------------------------------------------------- import order

FAKE_UNSLOTH = """
import json, os, sys
with open(os.environ["ORDER_FILE"], "w") as f:
    json.dump([m for m in ("transformers", "trl", "peft") if m in sys.modules], f)
raise SystemExit(0)  # the real unsloth would patch now; the record is all this test needs
"""


@pytest.mark.parametrize("argv", [
    ["eval", "--preset", "h100-gemma3-1b", "--out", "OUT"],
    ["write", "a lighthouse in fog", "--preset", "h100-gemma3-1b"],
    ["train", "sft", "--preset", "h100-gemma3-1b", "--out", "OUT"],
])
def test_cli_imports_unsloth_before_transformers(tmp_path, argv):
    """With a GPU and unsloth present, each entry path imports unsloth before anything imports
    transformers/trl/peft. unsloth is a stand-in that records what was loaded before it."""
    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_UNSLOTH)
    order = tmp_path / "order.json"
    code = textwrap.dedent(f"""
        import sys
        import haiku_kit.model.backends as b
        b.cuda_available = lambda: True  # this machine has no GPU; the decision is what is tested
        from haiku_kit.cli import main
        main({[a.replace("OUT", str(tmp_path / "out")) for a in argv]!r})
    """)
    env = {**os.environ, "ORDER_FILE": str(order),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                   check=False)
    assert order.is_file(), "unsloth was never imported"
    assert json.loads(order.read_text()) == []


def test_python_api_warns_early_when_transformers_came_first(tmp_path):
    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    late = subprocess.run([sys.executable, "-W", "always", "-c", "import transformers, haiku_kit"], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert "transformers imported before unsloth" in late.stderr and "import unsloth` first" in late.stderr
    fine = subprocess.run([sys.executable, "-W", "always", "-c", "import haiku_kit"], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert "imported before unsloth" not in fine.stderr
