"""haiku_kit.pipeline: stage order, artifacts between stages, resume, failures, papermill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from yaml import safe_load

from haiku_kit import pipeline
from haiku_kit.cli import main
from haiku_kit.config import load_config
from haiku_kit.errors import ConfigError
from haiku_kit.pipeline import ARTIFACTS, STAGES, PipelineError, RunPaths, StageFailed

SMOKE = "cpu-smoke"


def load_yaml(path: Path) -> dict:
    return safe_load(path.read_text()) or {}


# ------------------------------------------------------------------- orchestration, no papermill


def _write_outputs(stage: str, run_dir: Path, cfg) -> None:
    for param in pipeline.stage_outputs(stage, cfg):
        folder = RunPaths(run_dir).artifact(param)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ARTIFACTS[param].marker).write_text("{}")


@pytest.fixture
def fake_notebooks(monkeypatch):
    """Replace papermill with a stand-in that records calls and writes each stage's outputs."""
    calls: list[tuple[str, dict]] = []
    fail_at: dict[str, str] = {}

    def fake(src, out, parameters, stage, log_output=False):
        calls.append((stage, parameters))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
        if fail_at.get(stage) == "raise":
            raise StageFailed(stage, out, "ValueError", "boom", cell=3, source="x = 1 / 0")
        if fail_at.get(stage) != "silent":
            cfg = pipeline.resolve_config(
                parameters["preset"], parameters["overrides"], parameters["run_dir"]
            )
            _write_outputs(stage, Path(parameters["run_dir"]), cfg)

    monkeypatch.setattr(pipeline, "execute_notebook", fake)
    return calls, fail_at


def test_runs_every_stage_in_order_passing_artifacts(tmp_path, fake_notebooks):
    calls, _ = fake_notebooks
    run = pipeline.run_pipeline(SMOKE, ["grpo.max_steps=1"], tmp_path / "run")
    assert [stage for stage, _ in calls] == list(STAGES)
    params = dict(calls)
    for stage, p in params.items():
        assert p["preset"] == SMOKE and p["overrides"] == ["grpo.max_steps=1"]
        assert p["run_dir"] == str(run)
        for param in pipeline.STAGE_INPUTS[stage]:
            assert p[param] == str(RunPaths(run).artifact(param))
    assert params["grpo"]["sft_adapter"] == str(run / "sft" / "adapter")
    assert load_config(run / "config.yaml").grpo.max_steps == 1
    assert set(json.loads((run / "timings.json").read_text())) == set(STAGES)


def test_resume_reuses_earlier_artifacts(tmp_path, fake_notebooks):
    calls, _ = fake_notebooks
    run = pipeline.run_pipeline(SMOKE, [], tmp_path / "run")
    calls.clear()
    pipeline.run_pipeline(SMOKE, [], run, from_stage="grpo")
    assert [stage for stage, _ in calls] == ["grpo", "report"]


def test_resume_without_artifacts_names_what_is_missing(tmp_path, fake_notebooks):
    calls, _ = fake_notebooks
    with pytest.raises(PipelineError) as err:
        pipeline.run_pipeline(SMOKE, [], tmp_path / "run", from_stage="grpo")
    assert "sft/adapter/adapter_config.json" in str(err.value)
    assert "stage 'sft'" in str(err.value)
    assert calls == []


def test_cli_resume_error_and_unknown_stage_exit_non_zero(tmp_path, fake_notebooks, capsys):
    out = str(tmp_path / "run")
    assert main(["pipeline", "--preset", SMOKE, "--out", out, "--from", "report"]) == 1
    assert "eval/base/result.json" in capsys.readouterr().err
    assert main(["pipeline", "--preset", SMOKE, "--out", out, "--from", "nope"]) == 1
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert fake_notebooks[0] == []


def test_bad_override_fails_before_any_notebook(tmp_path, fake_notebooks):
    with pytest.raises(ConfigError):
        pipeline.run_pipeline(SMOKE, ["grpo.no_such_key=1"], tmp_path / "run")
    assert fake_notebooks[0] == []
    assert not (tmp_path / "run" / "notebooks").exists()


def test_stops_at_the_first_failing_stage(tmp_path, fake_notebooks, capsys):
    calls, fail_at = fake_notebooks
    fail_at["sft"] = "raise"
    rc = main(["pipeline", "--preset", SMOKE, "--out", str(tmp_path / "run")])
    assert rc == 1
    assert [stage for stage, _ in calls] == ["data", "baseline", "sft"]
    err = capsys.readouterr().err
    assert "stage 'sft' failed in cell [3]" in err and "ValueError: boom" in err


def test_a_stage_that_writes_nothing_fails(tmp_path, fake_notebooks):
    calls, fail_at = fake_notebooks
    fail_at["baseline"] = "silent"
    with pytest.raises(StageFailed) as err:
        pipeline.run_pipeline(SMOKE, [], tmp_path / "run")
    assert err.value.stage == "baseline" and "eval/base/result.json" in str(err.value)
    assert [stage for stage, _ in calls] == ["data", "baseline"]


def test_artifacts_follow_the_presets_stages():
    demo = pipeline.resolve_config("cpu-demo", [], "runs/x")
    assert pipeline.stage_inputs("grpo", demo) == ("data_dir", "sft_adapter")
    assert pipeline.expected_evals(demo) == ["base", "sft", "grpo"]

    rl_only = pipeline.resolve_config("cpu-demo", ["stages=[grpo]"], "runs/x")
    assert pipeline.stage_inputs("grpo", rl_only) == ("data_dir",)
    assert pipeline.stage_inputs("report", rl_only) == ("base_result", "grpo_result")
    assert pipeline.stage_outputs("sft", rl_only) == []

    sft_only = pipeline.resolve_config("cpu-demo", ["stages=[sft]"], "runs/x")
    assert pipeline.expected_evals(sft_only) == ["base", "sft"]
    assert pipeline.stage_outputs("grpo", sft_only) == []


def test_resolve_config_points_output_dir_at_the_run(tmp_path):
    cfg = pipeline.resolve_config(SMOKE, ["sft.max_steps=2"], tmp_path / "r")
    assert cfg.output_dir == str((tmp_path / "r").resolve()) and cfg.sft.max_steps == 2


def test_demo_prints_the_table_and_where_the_report_is(tmp_path, monkeypatch, capsys):
    from haiku_kit.config import save_config
    from haiku_kit.evaluate import evaluate

    run = tmp_path / "demo"

    def fake_run(preset, overrides, out_dir, from_stage=None, log_output=False):
        assert preset == pipeline.DEMO_PRESET and overrides == ["eval.k=1"]
        save_config(pipeline.resolve_config(preset, overrides, run), run / "config.yaml")
        for name in ("base", "sft", "grpo"):
            poem = f"{name} pond\na frog jumps in\nthe water"
            evaluate([poem], ["a frog"], similarity=False).save(run / "eval" / name)
        return run

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    assert main(["demo", "--out", str(run), "--set", "eval.k=1"]) == 0
    out = capsys.readouterr().out
    assert "| Model | n | Haiku | Similarity | Total | Train overlap |" in out
    assert all(f"| {name} | 1 |" in out for name in ("base", "sft", "grpo"))
    assert str(run / "report" / "report.md") in out


def test_result_helpers_build_markdown_and_display_it(tmp_path, monkeypatch):
    from haiku_kit.evaluate import evaluate

    result = evaluate(
        ["old pond\na frog jumps in the\nsound of water"], ["a frog"], similarity=False
    )
    assert "Haiku" in pipeline.result_markdown(result, "base")
    assert "frog" in pipeline.samples_markdown(result, "base")
    assert "not part of this run" in pipeline.result_markdown(None, "sft")
    assert "no training log" in pipeline.training_markdown(tmp_path)

    shown: list = []
    monkeypatch.setattr(pipeline, "_display", lambda *objs: shown.extend(objs))
    assert pipeline.show_result(result, "base") is None  # nothing echoed twice in a notebook
    assert "Haiku" in getattr(shown[0], "data", shown[0])


# ------------------------------------------------------------------- papermill, real kernels


def _notebook(path: Path, *cells: str, parameters: str = "") -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Py"}
    if parameters:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_kernel_runs_this_interpreter_with_injected_parameters(tmp_path):
    target = tmp_path / "exe.txt"
    src = _notebook(
        tmp_path / "in.ipynb",
        "import sys, pathlib\npathlib.Path(target).write_text(sys.executable + '|' + word)",
        parameters="target = ''\nword = 'default'",
    )
    pipeline.execute_notebook(
        src, tmp_path / "out.ipynb", {"target": str(target), "word": "given"}, "demo"
    )
    assert target.read_text() == f"{sys.executable}|given"


@pytest.mark.slow
def test_failing_cell_is_named_and_the_notebook_kept(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", "x = 1", "raise ValueError('no such source')", "y = 2")
    out = tmp_path / "kept" / "out.ipynb"
    with pytest.raises(StageFailed) as err:
        pipeline.execute_notebook(src, out, {}, "data")
    e = err.value
    assert (e.stage, e.cell, e.ename) == ("data", 2, "ValueError")
    assert "no such source" in e.evalue and "raise ValueError" in str(e)
    assert out.is_file() and "no such source" in out.read_text()


@pytest.mark.slow
def test_real_stage_failure_stops_with_stage_cell_and_notebook(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        ["pipeline", "--preset", SMOKE, "--set", "data.source=/no/such/haiku.csv",
         "--out", str(run)]
    )  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "stage 'data' failed in cell [" in err and "/no/such/haiku.csv" in err
    assert (run / "notebooks" / "01_data.ipynb").is_file()
    assert not (run / "notebooks" / "02_baseline.ipynb").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "run"
    return pipeline.run_pipeline(SMOKE, [], run)


@pytest.mark.slow
def test_smoke_pipeline_writes_every_artifact_and_the_report(smoke_run):
    paths = RunPaths(smoke_run)
    for art in ARTIFACTS.values():
        assert (paths.artifact(art.param) / art.marker).is_file(), art
    for name in ("table.md", "table.csv", "samples.md", "failures.md", "report.md"):
        assert (paths.report / name).is_file(), name
    assert list(paths.report.glob("*.png"))
    for stage in ("sft", "grpo"):
        assert (smoke_run / stage / "log.jsonl").is_file()
    table = (paths.report / "table.md").read_text()
    assert all(f"| {name} |" in table for name in ("base", "sft", "grpo"))
    report_md = (paths.report / "report.md").read_text()
    assert "GRPO vs SFT:" in report_md and "GRPO learning curve" in report_md
    assert (paths.report / "learning_curve.png").is_file()
    assert paths.config.is_file()
    for nb in pipeline.NOTEBOOKS.values():
        executed = json.loads((paths.notebooks / nb).read_text())
        assert any(c.get("outputs") for c in executed["cells"]), f"{nb} has no outputs"


@pytest.mark.slow
def test_smoke_resume_from_report_reuses_artifacts(smoke_run):
    notebooks = RunPaths(smoke_run).notebooks
    before = {p.name: p.stat().st_mtime_ns for p in notebooks.glob("*.ipynb")}
    adapter = smoke_run / "grpo" / "adapter" / "adapter_model.safetensors"
    adapter_time = adapter.stat().st_mtime_ns
    pipeline.run_pipeline(SMOKE, [], smoke_run, from_stage="report")
    after = {p.name: p.stat().st_mtime_ns for p in notebooks.glob("*.ipynb")}
    assert after["05_report.ipynb"] > before["05_report.ipynb"]
    assert {k: v for k, v in after.items() if k != "05_report.ipynb"} == {
        k: v for k, v in before.items() if k != "05_report.ipynb"
    }
    assert adapter.stat().st_mtime_ns == adapter_time
    effective = load_yaml(smoke_run / "config.yaml").get("effective") or {}
    assert {"sft", "grpo"} <= set(effective), "resume dropped the trainer's effective settings"


def test_data_stage_copies_an_existing_splits_folder(tmp_path):
    from haiku_kit.data import build_splits, load_embedded

    src = tmp_path / "splits"
    build_splits(load_embedded()[:60], src, min_similarity=None)
    run = pipeline.open_run(SMOKE, [f"data.splits_dir={src}"], tmp_path / "run")
    data_dir = pipeline.build_data(run)
    assert data_dir == run.paths.data and (data_dir / "manifest.json").is_file()
    assert pipeline.load_data(data_dir)["eval"]["topic"] == pipeline.load_data(src)["eval"]["topic"]
    assert "| eval |" in pipeline.data_markdown(data_dir)
