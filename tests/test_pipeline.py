"""pipeline.py: stage order, artifacts between stages, resume, skipped stages, failures, papermill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from training_helpers import corpus_script, load_script
from yaml import safe_load

from haiku_kit import pipeline
from haiku_kit.cli import main
from haiku_kit.config import load_config
from haiku_kit.errors import ConfigError
from haiku_kit.pipeline import StageFailed
from haiku_kit.runs import ARTIFACTS, STAGE_INPUTS, STAGES, PipelineError, RunPaths

SMOKE = "cpu-smoke"


def load_yaml(path: Path) -> dict:
    return safe_load(path.read_text()) or {}


# ------------------------------------------------------------------- orchestration, no papermill


def test_runs_every_stage_in_order_passing_artifacts(tmp_path, fake_notebooks):
    calls, _ = fake_notebooks
    run = pipeline.run_pipeline(SMOKE, ["grpo.max_steps=1"], tmp_path / "run")
    assert [stage for stage, _ in calls] == list(STAGES)
    params = dict(calls)
    for stage, p in params.items():
        assert p["preset"] == SMOKE and p["overrides"] == ["grpo.max_steps=1"]
        assert p["run_dir"] == str(run)
        for param in STAGE_INPUTS[stage]:
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


def test_a_training_stage_the_preset_lacks_is_skipped(tmp_path, fake_notebooks, capsys):
    calls, _ = fake_notebooks
    pipeline.run_pipeline(SMOKE, ["phases=[grpo]", "grpo.init=base"], tmp_path / "run")
    assert [stage for stage, _ in calls] == ["data", "baseline", "grpo", "report"]
    assert "sft: skipped" in capsys.readouterr().out


def test_bad_override_fails_before_any_notebook(tmp_path, fake_notebooks):
    with pytest.raises(ConfigError):
        pipeline.run_pipeline(SMOKE, ["grpo.no_such_key=1"], tmp_path / "run")
    assert fake_notebooks[0] == []
    assert not (tmp_path / "run" / "notebooks").exists()


def test_a_stage_that_writes_nothing_fails(tmp_path, fake_notebooks):
    calls, fail_at = fake_notebooks
    fail_at["baseline"] = "silent"
    with pytest.raises(StageFailed) as err:
        pipeline.run_pipeline(SMOKE, [], tmp_path / "run")
    assert err.value.stage == "baseline" and "eval/base/result.json" in str(err.value)
    assert [stage for stage, _ in calls] == ["data", "baseline"]


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
    assert rc == 2
    err = capsys.readouterr().err
    assert "stage 'data' failed in cell [" in err and "/no/such/haiku.csv" in err
    assert (run / "notebooks" / "01_data.ipynb").is_file()
    assert not (run / "notebooks" / "02_baseline.ipynb").exists()


# The smoke run also goes through every optional cell: one self-distillation round on four
# topics (every valid poem kept) and the "+ constrained" eval rows.
SMOKE_EXTRA = ["distill.topics=4", "distill.min_similarity=-1", "distill.max_steps=1",
               "distill.save_steps=1",
               "eval.constrained=true"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "run"
    return pipeline.run_pipeline(SMOKE, SMOKE_EXTRA, run)


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
    assert all(f"| {name} |" in table
               for name in ("base", "sft", "sft + constrained", "grpo", "grpo + constrained"))
    distill = smoke_run / "sft" / "distill"
    assert (distill / "round-1" / "poems.jsonl").is_file()
    assert (distill / "sft-adapter" / "adapter_config.json").is_file()
    assert (smoke_run / "grpo" / "adapter" / "README.md").read_text().startswith("---")
    grpo_nb = (paths.notebooks / "04_grpo.ipynb").read_text()
    assert "| topic | free sampling | constrained |" in grpo_nb  # the Try it cell
    # the cells that teach the method ran: the reward table, two answers scored, TRL's config
    assert "| reward | weight | what it pays |" in grpo_nb and "weighted total" in grpo_nb
    assert "GRPOConfig(**kit.args)" in grpo_nb
    sft_nb = (paths.notebooks / "03_sft.ipynb").read_text()
    assert "SFTConfig(**kit.args)" in sft_nb and "loss mask:" in sft_nb
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
    pipeline.run_pipeline(SMOKE, SMOKE_EXTRA, smoke_run, from_stage="report")
    after = {p.name: p.stat().st_mtime_ns for p in notebooks.glob("*.ipynb")}
    assert after["05_report.ipynb"] > before["05_report.ipynb"]
    assert {k: v for k, v in after.items() if k != "05_report.ipynb"} == {
        k: v for k, v in before.items() if k != "05_report.ipynb"
    }
    assert adapter.stat().st_mtime_ns == adapter_time
    effective = load_yaml(smoke_run / "config.yaml").get("effective") or {}
    assert {"sft", "grpo"} <= set(effective), "resume dropped the trainer's effective settings"


def _efficacy_benchmark():
    return load_script("benchmarks/efficacy.py")


@pytest.mark.slow
def test_efficacy_benchmark_measures_chosen_models_with_k_samples_on_the_runs_eval_split(
        smoke_run, capsys):
    efficacy = _efficacy_benchmark()
    data = smoke_run / "data"
    assert efficacy.main(["--run", str(smoke_run), "--models", "sft,nope", "--eval-data",
                          str(data)]) == 2
    assert "'nope' is not one of base, sft, grpo" in capsys.readouterr().err
    assert efficacy.main(["--run", str(smoke_run), "--models", "sft,grpo", "--eval-data",
                          str(data), "--n", "3", "--k", "2"]) == 0
    out = smoke_run / "efficacy-data-0-n3-k2"
    for name in ("sft", "grpo"):
        records = [json.loads(line) for line in
                   (out / name / "generations.jsonl").read_text().splitlines()]
        assert [(r["prompt_index"], r["sample"]) for r in records] == [
            (i, j) for i in range(3) for j in range(2)]
    assert not (out / "base").exists() and not (smoke_run / "efficacy").exists()
    table = (out / "report" / "table.md").read_text()
    assert "| SFT |" in table and "| SFT→GRPO |" in table and "| base |" not in table
    assert "GRPO vs SFT:" in capsys.readouterr().out


@pytest.mark.slow
def test_efficacy_benchmark_publishes_the_runs_own_evals_as_results_files(smoke_run, tmp_path):
    """--run-evals --publish: the README's figures come from these files, written by the script."""
    out = tmp_path / "results"
    assert _efficacy_benchmark().main(["--run", str(smoke_run), "--run-evals", "--models",
                                       "base,sft,sft+constrained", "--publish", "smoke",
                                       "--eval-data", str(tmp_path / "not-needed.json"),
                                       "--results-dir", str(out)]) == 0
    published = out / "smoke"
    own_metrics = {}
    for name in ("base", "sft", "sft+constrained"):
        saved = json.loads((published / f"{name}.json").read_text())
        own = json.loads((smoke_run / "eval" / name / "result.json").read_text())
        own_metrics[name] = own["metrics"]
        assert saved["metrics"] == own["metrics"] and saved["ci"]["good"] == own["ci"]["good"]
        poems = (published / f"{name}.generations.jsonl").read_text().splitlines()
        assert len(poems) == own["meta"]["n"]
    about = json.loads((published / "run.json").read_text())
    assert about["run"] == str(smoke_run) and about["commit"] and about["timings_s"]
    assert about["run_commit"] == json.loads((smoke_run / "env.json").read_text())[
        "haiku_kit"]["git_commit"]
    assert (published / "config.yaml").read_text() == (smoke_run / "config.yaml").read_text()
    assert "| SFT |" in (published / "table.md").read_text()
    assert "drawn at random" in (published / "samples.md").read_text()
    assert sorted(p.name for p in published.iterdir()) == [
        "base.generations.jsonl", "base.json", "config.yaml", "run.json", "samples.md",
        "sft+constrained.generations.jsonl", "sft+constrained.json", "sft.generations.jsonl",
        "sft.json", "table.md"]
    # one row published again: the others stay, in the table's order, and run.json says which
    table = (published / "table.md").read_text()
    assert _efficacy_benchmark().main(["--run", str(smoke_run), "--run-evals", "--models", "sft",
                                       "--publish", "smoke", "--results-dir", str(out)]) == 0
    assert (published / "table.md").read_text() == table
    assert json.loads((published / "run.json").read_text())["replaced"] == ["sft"]
    # --rejudge: today's judge on the published outputs; a verdict an older judge got wrong is redone
    rows = [json.loads(line) for line in (published / "sft.generations.jsonl").read_text().splitlines()]
    for r in rows:
        r.update(good=False, fluent=False, judge_reasons=["an older judge's reason"])
    (published / "sft.generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _efficacy_benchmark().main(["--rejudge", "smoke", "--results-dir", str(out)]) == 0
    again = [json.loads(line) for line in (published / "sft.generations.jsonl").read_text().splitlines()]
    assert "an older judge's reason" not in str(again) and [r["completion"] for r in again] == [
        r["completion"] for r in rows]
    assert json.loads((published / "sft.json").read_text())["metrics"] == own_metrics["sft"]
    assert json.loads((published / "run.json").read_text())["rejudged"]
    assert _efficacy_benchmark().main(["--rejudge", "nothing-here", "--results-dir", str(out)]) == 2


def test_efficacy_benchmark_names_a_runs_bad_config_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("distill: {corpus: /no/such/poems.jsonl}\n")
    data = tmp_path / "eval.json"
    data.write_text("[]")
    assert _efficacy_benchmark().main(["--run", str(run), "--eval-data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run) in err and "/no/such/poems.jsonl" in err


@pytest.mark.slow
def test_the_corpus_script_samples_a_runs_teacher_on_training_and_prompt_only_topics(
        smoke_run, tmp_path, capsys):
    from haiku_kit.data.sources import load_topic_list
    from haiku_kit.data.splits import load_run_data
    from haiku_kit.verify import haiku as hk

    script = corpus_script()
    cfg = script.run_config(smoke_run)
    dataset = load_run_data(cfg)
    training = set(dataset["sft"]["topic"]) | set(dataset["rl"]["topic"])
    prompts = script.teacher_prompts(cfg, 4)
    assert [p["topic"] for p in prompts[:4]] == list(dict.fromkeys(dataset["sft"]["topic"]))[:4]
    extra = [p["topic"] for p in prompts[4:]]
    assert extra and set(extra) <= set(load_topic_list("embedded"))
    assert not set(extra) & set(dataset["eval"]["topic"])
    assert [p["topic"] for p in script.teacher_prompts(cfg, 4, "")] == [
        p["topic"] for p in prompts[:4]]

    out = tmp_path / "corpus.jsonl"
    assert script.main([str(tmp_path), "--teacher", "grpo", "--out", str(out)]) == 2
    assert "has no grpo/adapter" in capsys.readouterr().err
    assert script.main([str(smoke_run), "--teacher", "grpo", "--save-pool",
                        str(tmp_path / "absent" / "pool.jsonl"), "--out", str(out)]) == 2
    assert "no folder" in capsys.readouterr().err  # said before sampling
    pool = tmp_path / "pool.jsonl"
    rc = script.main([str(smoke_run), "--teacher", "grpo", "--topics", "4", "--extra-topics", "",
                      "--k", "2", "--temperature", "1.0", "--out", str(out),
                      "--save-pool", str(pool)])
    said = capsys.readouterr()
    assert "4 topics x 2 poems" in said.out
    saved = [json.loads(line) for line in pool.read_text().splitlines()]
    assert [r["topic"] for r in saved] == [p["topic"] for p in prompts[:4]]
    assert all(r["source"] == "grpo" and len(r["completions"]) == 2 for r in saved)
    if rc == 2:  # the smoke model's 3 SFT steps rarely write a haiku
        assert "no valid poem" in said.err and not out.exists()
    else:
        kept = [json.loads(line) for line in out.read_text().splitlines()]
        assert rc == 0 and kept
        assert all(hk.check(r["haiku"]).is_haiku and r["topic"] in training
                   and r["round"] == "grpo" and r["cosine"] >= 0.5 for r in kept)
        again = tmp_path / "again.jsonl"  # the saved pool selects the same corpus, unsampled
        assert script.main(["--from-pool", str(pool), "--out", str(again)]) == 0
        assert again.read_text() == out.read_text()


@pytest.mark.slow
def test_a_papermill_stage_prints_no_warning_a_user_cannot_act_on(tmp_path, capfd, monkeypatch):
    """`make demo` once printed ipykernel's "running over TCP without encryption" and tqdm's
    "IProgress not found" for every stage: the kernel now talks over Unix sockets in a private
    folder (removed afterwards) and tqdm's widget warning is filtered in the kernel alone."""
    import tempfile

    import nbformat

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass\nprint('cell ran')")]
    src = tmp_path / "one.ipynb"
    nbformat.write(nb, src)
    pipeline.execute_notebook(src, tmp_path / "out.ipynb", {}, "data", log_output=True)
    out, err = capfd.readouterr()
    assert "cell ran" in out + err
    assert "without encryption" not in err and "IProgress not found" not in err, err
    assert not list(tmp_path.glob("haiku-kit-kernel-*"))  # the socket folder is gone
