"""haiku_kit.train.checkpoints: rerunning a stage resumes or moves old state aside; it never deletes it."""

from __future__ import annotations

import json

import pytest

from haiku_kit.errors import ConfigError, ModelLoadError
from haiku_kit.train.checkpoints import (
    find_checkpoint,
    prepare_phase,
    rerun_command,
    resolve_checkpoint,
)


def _checkpoint(stage, step, complete=True):
    path = stage / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"w" * 10)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def _log(stage, steps, name="log.jsonl"):
    lines = [json.dumps({"step": s, "loss": 1.0 / (s + 1)}) for s in steps]
    (stage / name).write_text("\n".join(lines) + "\n")


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_default_resumes_latest_complete_checkpoint_and_trims_logs(tmp_path):
    stage = tmp_path / "sft"
    _checkpoint(stage, 2)
    latest = _checkpoint(stage, 4)
    _checkpoint(stage, 6, complete=False)  # killed mid-save: passed over, kept
    _log(stage, [1, 2, 3, 4, 5, 6, 7])
    _log(stage, [2, 4, 6], name="samples.jsonl")
    start = prepare_phase(stage)
    assert start.checkpoint == str(latest)
    assert start.message == (
        f"resuming sft from {latest} (step 4, by default; pass --fresh to start over)"
    )
    assert _steps(stage / "log.jsonl") == [1, 2, 3, 4]
    assert _steps(stage / "log.redone.jsonl") == [5, 6, 7]
    assert _steps(stage / "samples.jsonl") == [2, 4]
    assert start.redone_lines == 4
    assert (stage / "checkpoints" / "checkpoint-6").is_dir()


def test_torn_last_log_line_moves_out_so_appends_stay_valid(tmp_path):
    stage = tmp_path / "sft"
    _checkpoint(stage, 2)
    (stage / "log.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert prepare_phase(stage).redone_lines == 1
    assert (stage / "log.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert (stage / "log.redone.jsonl").read_text() == '{"step": 3, "lo\n'


def test_fresh_moves_old_state_aside(tmp_path):
    stage = tmp_path / "grpo"
    _checkpoint(stage, 3)
    _log(stage, [1, 2, 3])
    (stage / "adapter").mkdir()  # a finished stage's output is not training state: left alone
    start = prepare_phase(stage, fresh=True)
    assert start.checkpoint is None and start.moved_aside is not None
    assert start.moved_aside.name.startswith("checkpoints.old-")
    assert (start.moved_aside / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    assert _steps(start.moved_aside / "log.jsonl") == [1, 2, 3]
    assert not (stage / "checkpoints").exists() and not (stage / "log.jsonl").exists()
    assert (stage / "adapter").is_dir()
    assert find_checkpoint(stage) is None  # the old checkpoints are not resumed by accident
    again = prepare_phase(stage, fresh=True)  # nothing left to move: no empty folder
    assert again.moved_aside is None and again.message == "starting grpo"


def test_two_fresh_starts_in_one_second_keep_both(tmp_path):
    stage = tmp_path / "sft"
    stage.mkdir()
    _log(stage, [1])
    first = prepare_phase(stage, fresh=True).moved_aside
    _log(stage, [1, 2])
    second = prepare_phase(stage, fresh=True).moved_aside
    assert first != second and _steps(first / "log.jsonl") == [1]
    assert _steps(second / "log.jsonl") == [1, 2]


def test_fresh_delete_is_the_only_delete(tmp_path):
    stage = tmp_path / "sft"
    _checkpoint(stage, 3)
    start = prepare_phase(stage, fresh="delete")
    assert start.moved_aside is None and not (stage / "checkpoints").exists()
    assert "deleted" in start.message
    assert [p.name for p in stage.iterdir()] == []


def test_no_checkpoint_but_old_logs_moves_them_aside(tmp_path):
    stage = tmp_path / "sft"
    stage.mkdir()
    _log(stage, [1, 2])
    start = prepare_phase(stage)
    assert start.checkpoint is None and _steps(start.moved_aside / "log.jsonl") == [1, 2]


def test_resume_latest_without_checkpoint_is_one_clear_error(tmp_path):
    stage = tmp_path / "sft"
    with pytest.raises(ModelLoadError, match="holds no complete checkpoint-N"):
        prepare_phase(stage, resume="latest")
    with pytest.raises(ConfigError, match="cannot be used together"):
        prepare_phase(stage, resume="latest", fresh=True)
    with pytest.raises(ConfigError, match="fresh='yes'"):
        prepare_phase(stage, fresh="yes")


def test_resume_path_to_checkpoint_or_to_a_folder_holding_them(tmp_path):
    stage = tmp_path / "sft"
    ckpt = _checkpoint(stage, 5)
    assert resolve_checkpoint(ckpt, stage) == ckpt
    assert resolve_checkpoint(stage, stage) == ckpt
    assert prepare_phase(stage, resume=str(ckpt)).message.endswith("(step 5, as asked)")
    with pytest.raises(ModelLoadError, match="no such checkpoint folder"):
        resolve_checkpoint(tmp_path / "nope", stage)
    (tmp_path / "adapter").mkdir()
    with pytest.raises(ModelLoadError, match="not a trainer checkpoint"):
        resolve_checkpoint(tmp_path / "adapter", stage)


def test_resume_false_starts_fresh_without_deleting(tmp_path):
    stage = tmp_path / "sft"
    _checkpoint(stage, 1)
    start = prepare_phase(stage, resume=False)
    assert start.checkpoint is None and (start.moved_aside / "checkpoints").is_dir()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "sft", "--preset", "cpu-smoke"], "haiku-kit train sft --preset cpu-smoke"),
        (["train", "sft", "--fresh", "--set", "a=1"], "haiku-kit train sft --set a=1"),
        (["train", "sft", "--fresh", "delete"], "haiku-kit train sft"),
        (
            ["train", "sft", "--resume", "/r/ck", "--run-dir", "r"],
            "haiku-kit train sft --run-dir r",
        ),
        (["train", "sft", "--resume", "--run-dir", "r"], "haiku-kit train sft --run-dir r"),
        (["pipeline", "--resume=latest", "--set", "x=a b"], "haiku-kit pipeline --set 'x=a b'"),
    ],
)
def test_rerun_command(argv, expected):
    assert rerun_command(argv) == expected
