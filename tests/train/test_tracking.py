"""Trainer pass-through and trackers: trainer_args reach TRL's config, report_to=tensorboard and
report_to=trackio write stores their own readers load with the reward curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import FAST_REWARDS, rows, tiny_cfg

from haiku_kit.errors import ConfigError


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_list(rows())


def test_trainer_args_reach_trl_and_overriding_a_kit_setting_warns(tiny_model_dir, tmp_path, dataset, caplog):
    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.sft import sft_trainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "sft.trainer_args={logging_first_step: true, max_grad_norm: 0.5}")
    model, tokenizer = load_from_config(cfg)
    with caplog.at_level("WARNING"):
        trainer = sft_trainer(cfg, model, tokenizer, dataset)
    assert trainer.args.logging_first_step is True and trainer.args.max_grad_norm == 0.5
    assert any("sft.trainer_args.max_grad_norm=0.5 overrides" in r.message for r in caplog.records)
    assert not any("logging_first_step" in r.message for r in caplog.records)  # not a kit setting
    eff = yaml.safe_load((tmp_path / "sft" / "effective.yaml").read_text())
    assert eff["trainer_args"] == {"logging_first_step": True, "max_grad_norm": 0.5} and eff["report_to"] == []


def test_unknown_trl_field_is_named(tiny_model_dir, tmp_path):
    """With the config, before a model loads (SFTConfig's fields read from TRL's source); the
    trainer's own check (train/common.py) stays for a TRL whose source cannot be read."""
    from trl import SFTConfig

    from haiku_kit.train.common import with_trainer_args

    with pytest.raises(ConfigError, match="sft.trainer_args: SFTConfig has no field 'no_such_field'"):
        tiny_cfg(tiny_model_dir, tmp_path, "sft.trainer_args={no_such_field: 1}")
    with pytest.raises(ConfigError, match="sft.trainer_args: SFTConfig has no field 'no_such_field'"):
        with_trainer_args(SFTConfig, {}, {"no_such_field": 1}, "sft")


def test_bad_report_to_is_named(tiny_model_dir, tmp_path):
    from haiku_kit.train.common import report_targets

    assert report_targets("tensorboard", "k") == ["tensorboard"] and report_targets("none", "k") == "none"
    with pytest.raises(ConfigError, match="grpo.report_to: expected a tracker name"):
        report_targets([1], "grpo.report_to")


def test_cli_unknown_trainer_arg_is_one_line_and_exit_2(tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "haiku_kit.cli", "train", "grpo", "--preset", "cpu-smoke", "--out", str(tmp_path),
         "--set", f"model.name={tiny_model_dir}", "--set", "grpo.init=base",
         "--set", "grpo.trainer_args={bogus_key: 3}"],
        capture_output=True, text=True, env=env, check=False, timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "GRPOConfig has no field 'bogus_key'" in errors[0]


def test_grpo_with_tensorboard_writes_reward_curves(tiny_model_dir, tmp_path, dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from haiku_kit.train.grpo import run_grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "grpo.init=base", FAST_REWARDS, "grpo.report_to=[tensorboard]",
                   "grpo.log_completions=true")
    run_grpo(cfg, dataset)
    events = list((tmp_path / "grpo").rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file under RUN/grpo"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    # the kit's monitor/* shares join the log after the trackers ran (they stay in log.jsonl)
    for tag in ("train/reward", "train/rewards/haiku_reward/mean", "train/rewards/line_count_penalty/mean"):
        assert tag in scalars, scalars
    assert [e.step for e in acc.Scalars("train/reward")] == [1, 2]


def test_grpo_with_trackio_writes_its_local_store(tiny_model_dir, tmp_path, small_splits):
    """In a fresh process (trackio reads TRACKIO_DIR on import): the CLI run logs into RUN/trackio."""
    env = {k: v for k, v in os.environ.items() if k != "TRACKIO_DIR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.run(
        [sys.executable, "-m", "haiku_kit.cli", "train", "grpo", "--preset", "cpu-smoke", "--out", str(tmp_path),
         "--set", f"model.name={tiny_model_dir}", "--set", f"data.splits_dir={small_splits}",
         "--set", "grpo.init=base", "--set", FAST_REWARDS,
         "--set", "grpo.report_to=trackio", "--set", "grpo.trainer_args={project: haiku-test}"],
        capture_output=True, text=True, env=env, check=False, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "trackio"
    assert store.is_dir(), list(tmp_path.iterdir())
    reader = (
        "import json, sys\n"
        "from trackio.sqlite_storage import SQLiteStorage as S\n"
        "runs = S.get_runs('haiku-test')\n"
        "print(json.dumps({'runs': runs, 'logs': S.get_logs('haiku-test', runs[0])}, default=str))\n"
    )
    out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=300, check=False,
                         env={**env, "TRACKIO_DIR": str(store)})
    assert out.returncode == 0, out.stderr[-2000:]
    logs = json.loads(out.stdout.strip().splitlines()[-1])["logs"]
    rewards = [e for e in logs if "train/reward" in e]
    assert len(rewards) == 2 and all("train/rewards/haiku_reward/mean" in e for e in rewards)


def test_trainers_get_the_live_view_unless_turned_off(tiny_model_dir, tmp_path, dataset):
    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.sft import sft_trainer

    def callback_names(trainer):
        return [type(cb).__name__ for cb in trainer.callback_handler.callbacks]

    cfg = tiny_cfg(tiny_model_dir, tmp_path / "on")
    model, tokenizer = load_from_config(cfg)
    names = callback_names(sft_trainer(cfg, model, tokenizer, dataset))
    assert "CompactProgress" in names and "ProgressCallback" not in names
    cfg = tiny_cfg(tiny_model_dir, tmp_path / "off", "live_every=0")
    names = callback_names(sft_trainer(cfg, model, tokenizer, dataset))
    assert "CompactProgress" not in names and "ProgressCallback" in names
