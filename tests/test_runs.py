"""runs.py: the run-folder layout, the training stages of a config, where GRPO starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from haiku_kit import runs
from haiku_kit.config import load_preset, resolve_config


def test_artifacts_follow_the_presets_stages():
    demo = resolve_config("cpu-demo", ["eval.constrained=false"], "runs/x")
    assert runs.stage_inputs("grpo", demo) == ("data_dir", "sft_adapter")
    assert runs.expected_evals(demo) == ["base", "sft", "grpo"]

    rl_only = resolve_config("cpu-demo", ["phases=[grpo]"], "runs/x")
    assert runs.stage_inputs("grpo", rl_only) == ("data_dir",)
    assert runs.stage_inputs("report", rl_only) == ("base_result", "grpo_result")
    assert runs.stage_outputs("sft", rl_only) == []

    sft_only = resolve_config("cpu-demo", ["phases=[sft]", "eval.constrained=false"], "runs/x")
    assert runs.expected_evals(sft_only) == ["base", "sft"]
    both = resolve_config("cpu-demo", ["eval.constrained=true"], "runs/x")
    assert runs.expected_evals(both) == ["base", "sft", "sft + constrained",
                                         "grpo", "grpo + constrained"]
    assert runs.stage_inputs("report", both) == ("base_result", "sft_result", "grpo_result")
    paths = runs.RunPaths(Path("runs/x"))
    assert paths.eval_dir("grpo + constrained") == Path("runs/x/eval/grpo+constrained")
    assert runs.stage_outputs("grpo", sft_only) == []


def test_grpo_stage_folders_and_phases():
    cfg = load_preset("ref-full")
    assert runs.grpo_phases(cfg) == ["grpo:sparse", "grpo:dense"]
    assert [runs.phase_dir_name(cfg, s) for s in cfg.phases] == ["sft", "grpo-sparse", "grpo"]
    assert [runs.variant_of(s) for s in cfg.phases] == [None, "sparse", "dense"]
    assert runs.has_sft(cfg) and not runs.has_sft(load_preset("ref-rl-only-sparse"))
    assert runs.phase_dir_name(load_preset("cpu-demo"), "grpo") == "grpo"


def test_the_one_rule_for_where_grpo_starts():
    assert runs.grpo_starts_from_sft("sft", sft_ready=False)
    assert runs.grpo_starts_from_sft("auto", sft_ready=True)
    assert not runs.grpo_starts_from_sft("auto", sft_ready=False)
    assert not runs.grpo_starts_from_sft("base", sft_ready=True)
    assert not runs.grpo_starts_from_sft("/some/adapter", sft_ready=True)


def test_paths_of_a_config_point_into_its_run_folder(tmp_path):
    cfg = resolve_config("cpu-smoke", [], tmp_path / "r")
    paths = runs.RunPaths.of(cfg)
    assert paths.root == (tmp_path / "r").resolve()
    assert paths.sft_adapter == paths.root / "sft" / "adapter"
    assert paths.config == paths.root / "config.yaml" and paths.eval_dir("sft") == paths.root / "eval" / "sft"
    assert runs.run_data_dir(cfg) == paths.data
    given = resolve_config("cpu-smoke", [f"data.splits_dir={tmp_path / 's'}"], tmp_path / "r")
    assert runs.run_data_dir(given) == Path(tmp_path / "s")


def test_unknown_stage_and_missing_artifacts_are_named(tmp_path):
    cfg = resolve_config("cpu-smoke", [], tmp_path)
    with pytest.raises(runs.PipelineError, match="unknown stage 'nope'"):
        runs.check_stage("nope")
    missing = runs.missing_artifacts("report", runs.RunPaths.of(cfg), cfg)
    assert len(missing) == 3 and "stage 'baseline'" in missing[0]


def test_resolve_config_points_output_dir_at_the_run(tmp_path):
    cfg = resolve_config("cpu-smoke", ["sft.max_steps=2"], tmp_path / "r")
    assert cfg.output_dir == str((tmp_path / "r").resolve()) and cfg.sft.max_steps == 2


def test_one_writer_per_run_folder(tmp_path):
    """A second writer fails at once, naming the holder; the lock goes with its holder."""
    import subprocess
    import sys
    import textwrap

    from haiku_kit.runs import RunInUse, hold_run

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from haiku_kit.runs import hold_run
        with hold_run({str(run)!r}, "train sft"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=rf"{run} is in use by pid {holder.pid} on .*train sft"), \
                hold_run(run, "pipeline"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with hold_run(run, "pipeline") as lock:  # the killed holder left no stale lock
        assert f"pid {os.getpid()}" in lock.read_text()
    with hold_run(run, "train"):  # and a finished one neither; the folder's files are kept
        assert (run / ".lock").is_file()


def test_a_run_folder_or_cache_that_is_a_file_is_named(tmp_path, monkeypatch):
    from haiku_kit.errors import HaikuKitError, ModelLoadError
    from haiku_kit.model.embedded import cache_root
    from haiku_kit.runs import hold_run

    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    with pytest.raises(HaikuKitError, match=rf"{taken} is a file, not a run folder"), \
            hold_run(taken):
        pass
    assert taken.read_text() == "a user's file"
    monkeypatch.setenv("HAIKU_KIT_CACHE", str(taken))
    with pytest.raises(ModelLoadError, match=rf"HAIKU_KIT_CACHE={taken}: .* is a file"):
        cache_root()
