"""stages.py: what the notebooks call, on real objects (tiny model, real TRL trainers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from haiku_kit import stages
from haiku_kit import stages as notebook_view
from haiku_kit.errors import HaikuKitError


def test_result_helpers_build_markdown_and_display_it(tmp_path, monkeypatch):
    from haiku_kit.evaluate.scoring import evaluate

    result = evaluate(
        ["old pond\na frog jumps in the\nsound of water"], ["a frog"], similarity=False
    )
    assert "Haiku" in stages.result_markdown(result, "base")
    assert "frog" in stages.samples_markdown(result, "base")
    assert "not part of this run" in stages.result_markdown(None, "sft")
    assert "no training log" in stages.training_markdown(tmp_path)

    shown: list = []
    monkeypatch.setattr(notebook_view, "_display", lambda *objs: shown.extend(objs))
    assert stages.show_result(result, "base") is None  # nothing echoed twice in a notebook
    assert "Haiku" in getattr(shown[0], "data", shown[0])


def test_data_stage_copies_an_existing_splits_folder(tmp_path):
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.data.splits import build_splits

    src = tmp_path / "splits"
    build_splits(load_embedded()[:60], src, min_similarity=None)
    run = stages.open_run("cpu-smoke", [f"data.splits_dir={src}"], tmp_path / "run")
    data_dir = stages.build_data(run)
    assert data_dir == run.paths.data and (data_dir / "manifest.json").is_file()
    assert stages.load_data(data_dir)["eval"]["topic"] == stages.load_data(src)["eval"]["topic"]
    assert "| eval |" in stages.data_markdown(data_dir)


def test_the_auto_preset_picks_for_this_machine_and_a_run_keeps_its_own(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(stages, "choose_preset", lambda: ("cpu-smoke", "a test machine"))
    run = stages.open_run("auto", ["grpo.max_steps=3"], tmp_path / "run")
    assert run.cfg.name == "cpu-smoke" and run.cfg.grpo.max_steps == 3
    assert "preset: cpu-smoke (a test machine)" in capsys.readouterr().out
    # a later stage notebook of the same run folder, on a machine that would choose otherwise
    monkeypatch.setattr(stages, "choose_preset", lambda: ("h100-gemma3-1b", "another machine"))
    again = stages.open_run("auto", [], tmp_path / "run")
    assert again.cfg.name == "cpu-smoke" and "as this run folder was started with" in (
        capsys.readouterr().out)


def test_a_preset_without_the_phase_says_so(tmp_path):
    run = stages.open_run("cpu-smoke", ["phases=[grpo]"], tmp_path / "run")
    with pytest.raises(HaikuKitError, match="trains no SFT phase"):
        stages.sft_setup(run, None, None, tmp_path)


def test_sft_notebook_cells_on_a_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    """03_sft's cells: the real model, SFTConfig's keyword arguments from the kit (a dict, changed
    before the trainer is built), SFTConfig and SFTTrainer built as the notebook writes them,
    its key arguments shown, trained, then the saved adapter."""
    from trl import SFTConfig, SFTTrainer

    from haiku_kit.data.sources import load_embedded
    from haiku_kit.data.splits import build_splits, load_eval_data

    data_dir = tmp_path / "run" / "data"
    build_splits(load_embedded()[:60], data_dir, min_similarity=None)
    run = stages.open_run("cpu-smoke", [f"model.name={tiny_model_dir}"], tmp_path / "run")
    model, tokenizer = stages.load_model(run)
    kit = stages.sft_setup(run, model, tokenizer, data_dir)
    assert isinstance(kit.args, dict) and kit.args["max_steps"] == 3
    kit.args["max_steps"] = 1  # the notebook's "change any before the next cell"
    args = SFTConfig(**kit.args)
    trainer = SFTTrainer(model=model, args=args, train_dataset=kit.train_dataset,
                         processing_class=tokenizer, callbacks=kit.callbacks)
    assert kit.attach(trainer) is trainer and trainer.kit_phase.folder == run.paths.phase_dir("sft")
    assert trainer.model is model and "input_ids" in trainer.train_dataset[0]

    shown: list = []
    monkeypatch.setattr(notebook_view, "_display", lambda *objs: shown.extend(objs))
    stages.show_args(trainer)
    table = getattr(shown[0], "data", shown[0])
    assert "SFTTrainer" in table and "| `max_steps` | `1` |" in table and "| `max_length` |" in table

    trainer.train()
    adapter = stages.save_sft(run, trainer)
    assert adapter == run.paths.sft_adapter and (adapter / "adapter_config.json").is_file()
    assert yaml.safe_load((run.paths.root / "sft" / "effective.yaml").read_text())["max_steps"] == 1
    assert stages.grpo_start(run, adapter) == adapter  # cpu-smoke: GRPO continues from SFT

    # 03's "+ constrained" cell: nothing unless the preset asks, then a row of its own.
    assert stages.evaluate_model(run, "sft", data_dir, adapter=adapter, constrained=True) is None
    run.cfg.eval.constrained = True
    poems = run.paths.root / "sft" / "distill" / "round-1" / "poems.jsonl"
    poems.parent.mkdir(parents=True)
    poems.write_text(json.dumps({"topic": "dusk", "haiku": "a\nb\nc"}) + "\n", encoding="utf-8")
    row = stages.evaluate_model(run, "sft", data_dir, adapter=adapter, constrained=True)
    assert row.meta["constrained"] is True and row.meta["name"] == "sft + constrained"
    # the poems a distillation round trained on count as training answers too
    answers = {a.strip() for a in load_eval_data(str(data_dir))[1]}
    assert row.meta["train_answers"] == len(answers) + 1
    assert (run.paths.root / "eval" / "sft+constrained" / "result.json").is_file()
    assert not (run.paths.root / "eval" / "sft").exists()  # the free row is not replaced

    # 04/00's "Try it" cell: one free and one constrained haiku per topic, as a table.
    from haiku_kit.verify import haiku as hk

    shown.clear()
    tried = stages.show_tried(model, tokenizer, ["autumn rain", "a | pipe"])
    assert [t.topic for t in tried] == ["autumn rain", "a | pipe"]
    for t in tried:  # the decoder never claims a poem check rejects
        assert t.constrained.is_haiku == hk.check(t.constrained.poem).is_haiku
        assert t.free.is_haiku == hk.check(t.free.poem).is_haiku
    table = getattr(shown[0], "data", shown[0])
    assert "| autumn rain |" in table and "| a \\| pipe |" in table


def test_reward_cells_list_the_rewards_and_score_examples_without_touching_training(monkeypatch):
    """04's reward cells: each reward with its weight and meaning; a haiku outscores filler; the
    scoring leaves the random states and the loaded sentence encoders as they were (the sentence
    encoder's loading draws random numbers: training must load it where it always did)."""
    import random

    import numpy as np
    import torch

    from haiku_kit.train.rewards import RewardSpec
    from haiku_kit.verify import similarity

    spec = RewardSpec.preset("counting")
    table = stages.rewards_markdown(spec)
    for name, weight in zip(spec.names, spec.weights):
        assert f"| `{name}` | {weight:g} |" in table
    assert "5-7-5" in table

    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    monkeypatch.setattr(similarity, "_SCORERS", {})

    def loading_cosine(topics, poems, **kw):  # as the first call does: load (drawing), then score
        similarity._SCORERS["minilm"] = object()
        torch.rand(3), random.random(), np.random.rand()
        return [0.6] * len(poems)

    monkeypatch.setattr(similarity, "cosine", loading_cosine)
    scores = stages.reward_scores(spec, "first snow in the city", {
        "a haiku": "soft flakes on the street\nthe city hushed under white\nmy breath joins the snow",
        "filler": "Here is a haiku about the first snow in the city. I hope you like it!",
    })
    assert scores["a haiku"]["haiku_reward"] == 1.0 and scores["filler"]["haiku_reward"] == 0.0
    assert scores["a haiku"]["total"] > scores["filler"]["total"]
    total = sum(w * scores["filler"][n] for n, w in zip(spec.names, spec.weights))
    assert scores["filler"]["total"] == pytest.approx(total)
    assert torch.equal(before[0], torch.get_rng_state()) and before[1] == random.getstate()
    assert (before[2] == np.random.get_state()[1]).all() and similarity._SCORERS == {}

    shown: list = []
    monkeypatch.setattr(notebook_view, "_display", lambda *objs: shown.extend(objs))
    assert stages.show_reward_scores(spec, "dusk", {"x": "a\nb\nc"}) is None
    assert "| x |" in getattr(shown[0], "data", shown[0])


def test_report_puts_constrained_rows_beside_the_free_ones(tmp_path):
    from haiku_kit.evaluate.scoring import evaluate

    run = stages.open_run("cpu-smoke", ["phases=[sft]", "eval.constrained=true"], tmp_path / "run")
    poem = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"
    for name in ("base", "sft", "sft + constrained"):
        evaluate([poem], ["autumn rain"], similarity=False, n_boot=20).save(run.paths.eval_dir(name))
    report_dir = stages.make_report(run, {})
    table = (report_dir / "table.md").read_text()
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| base", "| sft", "| sft + constrained"]


def test_a_stage_notebook_alone_builds_its_splits_and_names_what_else_is_missing(tmp_path, capsys):
    """03/04 on a fresh machine: the run's splits are built where missing (01's cell); a missing
    SFT adapter is named with the notebook that writes it."""
    run = stages.open_run("cpu-smoke", [], tmp_path / "run")
    data_dir = run.path("data_dir")
    assert (data_dir / "manifest.json").is_file() and data_dir == run.paths.data
    assert "no splits yet; building them as 01_data does" in capsys.readouterr().out
    assert run.path("data_dir") == data_dir and capsys.readouterr().out == ""  # built once
    adapter = run.path("sft_adapter")
    assert adapter == run.paths.artifact("sft_adapter") and not adapter.exists()
    said = capsys.readouterr().out
    assert "run notebook 03_sft.ipynb with run_dir=" in said and str(tmp_path / "run") in said
    given = tmp_path / "elsewhere"
    assert run.path("data_dir", given) == given.resolve()  # a given path is taken as it is


def test_free_memory_collects_and_reports_nothing_without_a_gpu():
    import torch

    if not torch.cuda.is_available():
        assert stages.free_memory() == {}


def _run(tmp_path, preset="cpu-smoke", overrides=(), **how):
    from haiku_kit.config import resolve_config
    from haiku_kit.runs import RunPaths

    root = tmp_path / "my runs" / "r1"  # a space: the command must quote it
    return stages.Run(preset, list(overrides), resolve_config(preset, list(overrides), root),
                      RunPaths(root), **how)


def test_launch_command_is_the_cli_train_command_of_this_run(tmp_path, monkeypatch):
    """The notebooks' "more than one GPU" cell prints this: it must parse as `haiku-kit train`
    with the run's own preset, overrides, resume/fresh and folder, and pass the launch checks."""
    import shlex

    from haiku_kit.cli import build_parser
    from haiku_kit.config import check_launch, load_preset

    run = _run(tmp_path, overrides=["sft.max_steps=5", "eval.n_prompts=3"], fresh="delete")
    argv = shlex.split(stages.launch_command(run, "sft", processes=4))
    assert argv[:3] == ["accelerate", "launch", "--config_file"] and Path(argv[3]).is_file()
    assert argv[3].endswith("resources/accelerate/ddp.yaml")
    assert argv[4:8] == ["--num_processes", "4", "-m", "haiku_kit.cli"]
    args = build_parser().parse_args(argv[8:])
    assert (args.command, args.stage, args.preset) == ("train", "sft", "cpu-smoke")
    assert args.overrides == ["sft.max_steps=5", "eval.n_prompts=3"]
    assert (args.fresh, args.resume, args.out) == ("delete", None, str(run.paths.root))

    resumed = _run(tmp_path, resume=str(tmp_path / "ckpt 3"))
    args = build_parser().parse_args(shlex.split(stages.launch_command(resumed, "grpo", 2, "fsdp"))[8:])
    assert (args.stage, args.resume, args.fresh, args.overrides) == ("grpo", str(tmp_path / "ckpt 3"), False, [])

    # a GPU preset on Unsloth: the command moves it to the hf backend, which passes the check
    # the launched processes make (config.check_launch, here as process 0 of 2)
    gpu = _run(tmp_path, preset="h100-gemma3-1b")
    assert "model.backend" not in stages.launch_command(gpu, "sft", processes=1)
    args = build_parser().parse_args(shlex.split(stages.launch_command(gpu, "sft", 2))[8:])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    check_launch(load_preset(args.preset, args.overrides))


def test_launch_command_says_a_grpo_batch_that_does_not_divide_and_refuses_bad_arguments(tmp_path):
    run = _run(tmp_path, overrides=["grpo.generation_batch_size=12"])  # per-device 4
    assert "#" not in stages.launch_command(run, "grpo", processes=3)  # 12 = 4 x 3
    assert "--num_processes 2 " in stages.launch_command(run, "sft")  # no GPU here: at least 2
    note, command = stages.launch_command(run, "grpo", processes=2).split("\n")
    assert note.startswith("# on 2 processes: grpo.generation_batch_size=12 must be a multiple")
    assert command.startswith("accelerate launch") and "#" not in stages.launch_command(run, "sft", 2)
    for bad, said in [({"stage": "eval"}, "stage='eval'"), ({"processes": 0}, "processes=0"),
                      ({"processes": True}, "processes=True"), ({"config": "zero9"}, "config='zero9'")]:
        with pytest.raises(HaikuKitError, match=said) as err:
            stages.launch_command(run, **{"stage": "sft", **bad})
        assert "\n" not in str(err.value)


def test_evaluate_model_under_the_reference_protocol(tmp_path, monkeypatch):
    """eval.protocol=reference: the reference's prompts (eval.reference_data, every one), its
    fixed settings whatever eval.k / max_new_tokens / n_prompts say, the overlap still checked
    against this run's training answers, and the row's schedule recorded for the side-by-side."""
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.data.splits import build_splits, load_eval_data
    from haiku_kit.evaluate.scoring import evaluate

    data_dir = tmp_path / "run" / "data"
    build_splits(load_embedded()[:60], data_dir, min_similarity=None)
    reference = tmp_path / "eval_data.json"
    reference.write_text(json.dumps([{"conversations": [
        {"role": "user", "content": f"Generate a haiku about the following topic: {t}\n"},
        {"role": "assistant", "content": "a\nb\nc"}]} for t in ("frogs", "moon", "rain")]))
    run = stages.open_run("cpu-smoke", ["eval.protocol=reference", f"eval.reference_data={reference}",
                                       "eval.n_prompts=1", "eval.k=8", "eval.max_new_tokens=128"],
                          tmp_path / "run")
    seen = {}

    def fake_run_eval(model, rows, **kwargs):
        seen.update(rows=rows, **kwargs)
        return evaluate(["x"] * len(rows), [r["topic"] for r in rows], similarity=False,
                        meta={"protocol": kwargs["protocol"]})

    monkeypatch.setattr(stages, "load_from_config", lambda *a, **k: (None, None))
    monkeypatch.setattr(stages, "run_eval", fake_run_eval)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    result = stages.evaluate_model(run, "grpo", data_dir, adapter=adapter)
    assert [r["topic"] for r in seen["rows"]] == ["frogs", "moon", "rain"]
    assert (seen["k"], seen["max_new_tokens"], seen["protocol"]) == (1, 50, "reference")
    s = seen["sampling"]
    assert (s.temperature, s.top_p, s.top_k, s.do_sample) == (1.0, 0.95, 64, True)
    assert set(seen["train_answers"]) == set(load_eval_data(str(data_dir))[1])
    assert result.meta["schedule"] == f"SFT {run.cfg.sft.max_steps} -> GRPO {run.cfg.grpo.max_steps}"
    assert "Reference protocol" in stages.result_markdown(result, "grpo")


def test_on_drive_keeps_the_run_folder_off_colab_and_moves_it_to_drive_on_colab(
        monkeypatch, capsys, tmp_path):
    """drive=True on Colab mounts Google Drive and puts the run under MyDrive/haiku-kit (Colab's
    module stands in here: no Colab runs these tests); elsewhere one line, the folder unchanged."""
    import sys
    import types

    assert stages.on_drive("runs/demo") == Path("runs/demo")
    monkeypatch.setitem(sys.modules, "google.colab", None)  # importing it fails, as off Colab
    assert stages.on_drive("runs/demo", drive=True) == Path("runs/demo")
    assert "on Colab only" in capsys.readouterr().out
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert stages.on_drive("runs/demo", drive=True) == Path(
        "/content/drive/MyDrive/haiku-kit/demo")
    assert mounted == ["/content/drive"]
