"""The web page (haiku_kit.app): its inputs, the `app` command, a real server answered through
Gradio's own client on the embedded model, and a real headless Chromium that types a topic,
clicks and reads three lines with their counts."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from haiku_kit.app import AppError, clean_topic, render, resolve_source
from haiku_kit.cli import main

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                        "google-chrome")) if p), None)
TOKENS = 32  # per poem in the server tests
BROWSER_MISSING = ("no headless browser: apt-get install chromium && pip install playwright "
                   "(or pip install -e '.[dev]'), then rerun tests/test_app.py")


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("topic, said", [
    ("", "Write a topic first"),
    ("   \n ", "Write a topic first"),
    ("x" * 10_000, "10,000 characters; at most 500"),
    ("a bell\x07 rings", "control character (U+0007)"),
    ("nul\x00", "control character (U+0000)"),
    (None, "Write a topic first"),
])
def test_a_bad_topic_is_one_sentence_for_the_page(topic, said):
    with pytest.raises(ValueError, match=None) as err:
        clean_topic(topic)
    assert said in str(err.value) and "\n" not in str(err.value)


def test_a_topic_keeps_its_words_and_loses_extra_space():
    assert clean_topic("  first\tsnow \n on the harbour ") == "first snow on the harbour"


def _adapter(folder: Path, base: str = "embedded") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (folder / "adapter_model.safetensors").write_bytes(b"")  # opened only when loaded
    return folder


def _run(root: Path, *adapters: str) -> Path:
    from haiku_kit.config import RunConfig, save_config

    root.mkdir(parents=True)
    save_config(RunConfig(output_dir=str(root)), root / "config.yaml")
    for phase in adapters:
        _adapter(root / phase / "adapter")
    return root


def test_a_run_folder_opens_its_newest_adapter(tmp_path):
    sft_only = _run(tmp_path / "a", "sft")
    _, adapter, name = resolve_source(sft_only)
    assert adapter == str(sft_only / "sft" / "adapter") and name == "a (sft)"
    both = _run(tmp_path / "b", "sft", "grpo")
    cfg, adapter, name = resolve_source(both)
    assert adapter == str(both / "grpo" / "adapter") and name == "b (grpo)"
    _, adapter, name = resolve_source(both / "sft" / "adapter")  # an adapter inside a run
    assert adapter == str(both / "sft" / "adapter") and name == "b/sft"
    cfg, adapter, name = resolve_source("embedded")
    assert adapter is None and cfg.model.name == "embedded"


@pytest.mark.parametrize("make, said", [
    (lambda tmp: tmp / "no-such-run", "no such run folder"),
    (lambda tmp: _run(tmp / "untrained"), "no trained adapter yet"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a run folder"),
])
def test_a_source_that_cannot_open_is_named(tmp_path, make, said):
    source = make(tmp_path)
    with pytest.raises(AppError, match=said) as err:
        resolve_source(source)
    assert str(source) in str(err.value)


def test_the_app_command_names_a_missing_folder_in_one_line(tmp_path, capsys):
    code = main(["app", str(tmp_path / "runs" / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "runs/nope: no such run folder" in err


def test_the_app_command_without_gradio_names_the_extra_before_loading(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    code = main(["app", "embedded"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert 'pip install "haiku-kit[app]"' in err


def test_the_notebook_cell_stays_quiet_when_off(capsys):
    from haiku_kit import stages

    assert stages.start_app(None, None, "x", web_app="auto") is None  # not on Colab
    assert "set web_app = True" in capsys.readouterr().out


def test_a_line_that_misses_is_marked_with_its_target():
    answer = {"model": "m", "mode": "free", "samples": 1, "seconds": 0.5, "poem": "",
              "lines": [{"text": "a <b> c", "syllables": [5], "target": 5, "ok": True},
                        {"text": "too short", "syllables": [2], "target": 7, "ok": False},
                        {"text": "maybe", "syllables": [2, 3], "target": 5, "ok": False}],
              "valid": False, "fluent": True, "on_topic": True, "original": True, "good": False,
              "cosine": 0.61, "reasons": ["line 2 has 2 syllables, needs 7"]}
    page = render(answer)
    assert "a &lt;b&gt; c" in page  # the model's text is escaped, never markup
    assert 'hk-ok">5<' in page and "2, needs 7" in page and "2/3, needs 5" in page
    assert "not a 5-7-5 haiku" in page and "line 2 has 2 syllables" in page


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def served(embedded):
    """The notebooks' last cell on the embedded model in memory: stages.start_app."""
    pytest.importorskip("gradio", reason="pip install -e '.[app]'")
    from haiku_kit import stages

    model, tokenizer = embedded
    # A handful of tokens: enough for three short constrained lines, quick on a CPU.
    url = stages.start_app(model, tokenizer, "embedded", web_app=True, max_new_tokens=TOKENS)
    assert url and url.startswith("http://127.0.0.1:")  # this machine only, by default
    yield url
    import gradio as gr

    gr.close_all()


def test_the_server_writes_three_counted_lines(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    page, answer = client.predict("first snow on the harbour", "constrained", 1.0, 0, 8,
                                  "embedded", api_name="/write")
    assert answer["mode"] == "constrained" and answer["topic"] == "first snow on the harbour"
    assert [line["target"] for line in answer["lines"]] == [5, 7, 5]
    assert all(line["syllables"] for line in answer["lines"])
    assert answer["valid"] == all(line["ok"] for line in answer["lines"])
    assert page.count('class="hk-line"') == 3
    assert {"valid", "fluent", "on_topic", "original", "good", "reasons"} <= set(answer)


def test_bad_inputs_are_answered_and_the_server_keeps_serving(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError as RefusedByGradio

    client = Client(served, verbose=False)
    for args, said in [(("", "free", 1.0, 0, 8), "Write a topic first"),
                       (("x" * 10_000, "free", 1.0, 0, 8), "10,000 characters"),
                       (("bell\x07", "free", 1.0, 0, 8), "control character")]:
        page, answer = client.predict(*args, "embedded", api_name="/write")
        assert said in answer["error"] and said.split()[0] in page
    # Out of a slider's range: Gradio itself answers, in a sentence.
    for args, said in [(("snow", "sonnet", 1.0, 0, 8), "'sonnet' .* not in the list of choices"),
                       (("snow", "free", 9.0, 0, 8), "greater than maximum value 1.5"),
                       (("snow", "best of N", 1.0, 0, 99), "greater than maximum value 16")]:
        with pytest.raises(RefusedByGradio, match=said):
            client.predict(*args, "embedded", api_name="/write")
    # Still up: two requests at once both come back, one after the other (the queue).
    jobs = [client.submit(topic, "free", 1.0, 0, 8, "embedded", api_name="/write")
            for topic in ("autumn rain", "a lighthouse")]
    (_, a), (_, b) = (job.result(timeout=300) for job in jobs)
    assert a["topic"] == "autumn rain" and b["topic"] == "a lighthouse"
    first, second = sorted((a, b), key=lambda x: x["started"])
    assert first["finished"] <= second["started"], "two generations ran at once"


def test_compare_puts_two_models_side_by_side_on_one_seed(embedded):
    pytest.importorskip("gradio", reason="pip install -e '.[app]'")
    from gradio_client import Client

    from haiku_kit.app import Contender, launch

    model, tokenizer = embedded
    _, page, url = launch(contenders=[Contender("left", model, tokenizer),
                                        Contender("right", model, tokenizer)],
                            port=None, block=False, max_new_tokens=TOKENS)
    try:
        left, right, (a, b) = Client(url, verbose=False).predict(
            "a cat asleep in the sun", "constrained", 0.8, 3, 8, api_name="/compare")
    finally:
        page.close()
    assert (a["model"], b["model"]) == ("left", "right") and a["seed"] == b["seed"] == 3
    assert a["poem"] == b["poem"]  # one model twice, one seed: the same poem
    assert "left" in left and "right" in right


def test_a_port_in_use_is_one_line(capsys):
    pytest.importorskip("gradio", reason="pip install -e '.[app]'")
    import socket

    from haiku_kit.app import Contender, launch

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AppError, match=f"cannot serve on 127.0.0.1:{port}"):
            launch(contenders=[Contender("m", None, None)], port=port, block=False)


@pytest.mark.skipif(CHROMIUM is None, reason=BROWSER_MISSING)
def test_a_real_browser_writes_a_haiku(served, tmp_path):
    """Chromium (system package) driven by Playwright: type a topic, click Write, read three
    lines each with its count. HAIKU_KIT_SCREENSHOT=path also keeps the screenshot there, and
    HAIKU_KIT_APP_SOURCE=RUN serves that run's model instead (the README's picture:
    HAIKU_KIT_APP_SOURCE=runs/demo HAIKU_KIT_SCREENSHOT=docs/images/app.png)."""
    playwright = pytest.importorskip("playwright.sync_api", reason=BROWSER_MISSING)
    page_of_run = None
    url = served
    if os.environ.get("HAIKU_KIT_APP_SOURCE"):
        from haiku_kit.app import launch, open_source

        _, page_of_run, url = launch(contenders=[open_source(os.environ["HAIKU_KIT_APP_SOURCE"])],
                                     port=None, block=False)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(url)
                page.locator("#write-topic textarea").fill("first snow on the harbour")
                page.locator("#write-button").click()
                lines = page.locator("#write-poem .hk-line")
                lines.nth(2).wait_for(timeout=120_000)
                texts = lines.all_inner_texts()
                counts = page.locator("#write-poem .hk-count").all_inner_texts()
                shot = tmp_path / "app.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        if page_of_run is not None:
            page_of_run.close()
    assert len(texts) == 3 and len(counts) == 3, texts
    assert all(c.split(",")[0].replace("/", "").isdigit() for c in counts), counts
    assert shot.stat().st_size > 10_000
    if os.environ.get("HAIKU_KIT_SCREENSHOT"):
        shutil.copy(shot, os.environ["HAIKU_KIT_SCREENSHOT"])
