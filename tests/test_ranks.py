"""The process rules of a multi-process launch that need no second process: one process is the
plain case, the GRPO batch is checked against the launcher's process count, the Unsloth backend
stays in one process, and the lock is the main process's. The launch itself is
tests/train/test_multiprocess.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from haiku_kit import ranks, runs
from haiku_kit.cli import main
from haiku_kit.config import ConfigError, check_launch, generation_batch_problem, load_preset

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


@pytest.fixture
def launched(monkeypatch):
    """Pretend to be process `rank` of `size` (the environment a launcher sets), no group."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def as_process(rank: int, size: int):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(size))
    return as_process


def test_one_process_is_the_plain_case(launched):
    assert (ranks.processes(), ranks.rank(), ranks.launched(), ranks.is_main()) == (1, 0, False, True)
    assert ranks.on_main(lambda x: x + 1, 1) == 2 and ranks.gather("a") == ["a"]
    ranks.barrier()
    with pytest.raises(ValueError, match="boom"):  # the main process's own error, as it is
        ranks.on_main(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_launcher_variables_say_which_process(launched):
    launched(1, 4)
    assert (ranks.processes(), ranks.rank(), ranks.local_rank(), ranks.is_main()) == (4, 1, 1, False)
    assert ranks.describe() == "process 1 of 4"


def test_grpo_generation_batch_is_checked_as_trl_does_on_n_processes():
    g = load_preset("cpu-smoke").grpo  # per-device 4, 4 generations
    two = replace(g, num_generations=8)  # settings only: a config would be checked on 1 process
    assert generation_batch_problem("grpo", g, 3) is None
    # 4 x 1 is not a multiple of 8 generations; 4 x 2 processes is
    assert "grpo.num_generations=8" in generation_batch_problem("grpo", two, 1)
    assert generation_batch_problem("grpo", two, 2) is None
    three = replace(g, generation_batch_size=12)
    assert generation_batch_problem("grpo", three, 1) is None
    said = generation_batch_problem("grpo", three, 2)  # TRL: a multiple of 4 x 2 processes
    assert "grpo.generation_batch_size=12" in said and "x 2 processes = 8" in said


def test_the_cli_checks_the_batch_against_the_launch_in_one_line(launched, tmp_path, capsys):
    launched(0, 3)  # 3 processes x per-device 2 = 6 completions: not a multiple of 4
    assert main(["train", "grpo", "--preset", "cpu-smoke", "--set",
                 "grpo.per_device_train_batch_size=2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "on 3 processes" in err
    assert "grpo.per_device_train_batch_size" in err and "grpo.num_generations=4" in err
    assert not (tmp_path / "r").exists()


def test_unsloth_trains_in_one_process_and_trl_vllm_needs_the_hf_backend(launched, tmp_path, capsys):
    check_launch(load_preset("h100-gemma3-1b"))  # one process: fine
    launched(0, 2)
    with pytest.raises(ConfigError, match="model.backend=unsloth.*set model.backend=hf"):
        check_launch(load_preset("h100-gemma3-1b"))
    check_launch(load_preset("h100-gemma3-1b", ["model.backend=hf"]))  # the override the docs give
    assert main(["train", "sft", "--preset", "h100-gemma3-1b", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.backend=unsloth" in err
    with pytest.raises(ConfigError, match="grpo.use_vllm=true"):
        load_preset("cpu-smoke", ["grpo.use_vllm=true"])


def test_the_main_process_holds_the_lock_for_the_whole_launch(launched, tmp_path):
    with runs.hold_run(tmp_path, "train sft") as lock:
        held = lock.read_text()
        with pytest.raises(runs.RunInUse), runs.hold_run(tmp_path, "train sft"):  # another launch
            pass
        launched(1, 2)  # another process of the launch: no lock to wait for, nothing written
        with runs.hold_run(tmp_path, "train sft"):
            assert lock.read_text() == held


@pytest.mark.parametrize("rank", [0, 1])
def test_the_pipeline_refuses_a_launch_in_one_line_naming_the_per_stage_command(launched, rank,
                                                                                tmp_path, capsys):
    """papermill runs the notebooks in one kernel: under a launcher every copy would run its own
    whole pipeline into one folder. Each process refuses before writing anything."""
    launched(rank, 2)
    assert main(["pipeline", "--preset", "cpu-smoke", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("haiku-kit pipeline: error:")
    assert f"process {rank} of 2" in err and "--num_processes 2" in err
    assert "accelerate launch" in err and "train sft|grpo --preset cpu-smoke" in err
    assert not (tmp_path / "r").exists()


def test_the_shipped_accelerate_configs_load_in_accelerate_itself():
    """Each config under resources/accelerate is read by accelerate's own ClusterConfig, which
    refuses unknown keys; the FSDP one wraps a layer class Gemma 3 really has (accelerate finds
    it by name among the model's modules)."""
    from importlib import resources

    from accelerate.commands.config.config_args import ClusterConfig
    from transformers.models.gemma3 import modeling_gemma3

    folder = resources.files("haiku_kit") / "resources" / "accelerate"
    loaded = {p.name: ClusterConfig.from_yaml_file(str(p)) for p in folder.iterdir()
              if p.name.endswith(".yaml")}
    assert set(loaded) == {"ddp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml",
                           "fsdp.yaml", "multi-node-ddp.yaml"}
    assert loaded["deepspeed-zero2.yaml"].deepspeed_config["zero_stage"] == 2
    assert loaded["deepspeed-zero3.yaml"].deepspeed_config["zero_stage"] == 3
    assert loaded["multi-node-ddp.yaml"].num_machines == 2
    layer = loaded["fsdp.yaml"].fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert hasattr(modeling_gemma3, layer), layer
