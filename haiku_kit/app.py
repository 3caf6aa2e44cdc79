"""Try a trained model in a web page: a topic in, a haiku out, with the verifier's count on
every line and the quality judge's verdict beside it.

    haiku-kit app runs/demo                      # the run's newest adapter (GRPO, else SFT)
    haiku-kit app runs/demo/sft/adapter runs/demo/grpo/adapter   # two models side by side

or, from a notebook, on the model already in memory (no second load):

    from haiku_kit.app import launch
    launch(model, tokenizer, name="SFT -> GRPO", share=True)   # share: a public Colab link

Three ways to write: one free sample (what the model does alone), the syllable-constrained
decoder (generate.constrained: every line steered onto 5-7-5, no line cut off on "the") and
best of N free samples ranked by the judge (generate.write.pick_best). Each answer is the same
function the CLI's `write` calls, so the page shows what the kit measures.

Gradio comes with the [app] extra and is imported only here, only when a page is built. The
server binds to 127.0.0.1 unless told otherwise; requests queue (one generation at a time) and
every generation is bounded in tokens and seconds.
"""

from __future__ import annotations

import html
import os
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haiku_kit.config import ModelSettings, RunConfig, load_config
from haiku_kit.errors import HaikuKitError
from haiku_kit.generate.write import MAX_TOPIC_CHARS, SamplingSettings, write_haiku
from haiku_kit.model.load import EMBEDDED, EMBEDDED_ENGLISH, adapter_base_model
from haiku_kit.runs import ARTIFACTS, RunPaths
from haiku_kit.verify.judge import Judge

HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 / --share are the user's explicit choice
PORT = 7860  # Gradio's first port; with no port asked for, the next free one after it is taken
MAX_NEW_TOKENS = 64  # a haiku is about 20 tokens; the constrained decoder's own default
GENERATE_SECONDS = 20.0  # one generate call; the constrained decoder's retries are bounded too
MAX_BEST_OF = 16
MAX_QUEUE = 32  # waiting requests beyond this are turned away, not piled up
MODES = ("free", "constrained", "best of N")
EXAMPLES = ("first snow on the harbour", "a cat asleep in the sun", "the smell of rain on hot stone",
            "an old man fixing his bicycle")
TEMPERATURE_RANGE = (0.1, 1.5)


class AppError(HaikuKitError):
    """A source the app cannot open (no such folder, a run with nothing trained)."""


# --------------------------------------------------------------------------- the models


@dataclass
class Contender:
    """One model on the page: its name, (model, tokenizer) and where it came from."""

    name: str
    model: Any
    tokenizer: Any
    source: str = ""


def resolve_source(source: str | Path) -> tuple[RunConfig, str | None, str]:
    """(config to load with, adapter folder or None, display name) of what the user named: a run
    folder (its newest adapter: GRPO, else SFT), an adapter folder, or a model name
    ("embedded", a local model folder, a hub id)."""
    text = str(source).strip()
    path = Path(text).expanduser()
    if (path / "adapter_config.json").is_file():
        owner = path.parent.name if path.name == "adapter" else path.name
        run = path.parent.parent if path.name == "adapter" else None
        name = f"{run.name}/{owner}" if run is not None and run.name else owner
        cfg = RunConfig(model=ModelSettings(name=adapter_base_model(path)))
        if run is not None and RunPaths(run).config.is_file():  # load as its run did (4-bit...)
            cfg = load_config(RunPaths(run).config)
        return cfg, str(path), name
    if RunPaths(path).config.is_file():
        paths = RunPaths(path)
        for param in ("grpo_adapter", "sft_adapter"):
            adapter = paths.artifact(param)
            if (adapter / ARTIFACTS[param].marker).is_file():
                return load_config(paths.config), str(adapter), f"{path.name} ({param[:-8]})"
        raise AppError(f"{text}: the run has no trained adapter yet (sft/adapter or "
                       "grpo/adapter); train it first, or name an adapter folder")
    if text in (EMBEDDED, EMBEDDED_ENGLISH) or (path / "config.json").is_file():
        return RunConfig(model=ModelSettings(name=text)), None, path.name or text
    if path.exists():
        raise AppError(f"{text}: not a run folder (config.yaml), an adapter folder "
                       "(adapter_config.json) or a model folder (config.json)")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return RunConfig(model=ModelSettings(name=text)), None, text  # a hub id
    raise AppError(f"{text}: no such run folder, adapter folder or model")


def open_source(source: str | Path) -> Contender:
    """Load what `source` names (see resolve_source) for writing."""
    from haiku_kit.model.backends import backend_for, import_backend
    from haiku_kit.model.load import load_from_config

    cfg, adapter, name = resolve_source(source)
    import_backend(backend_for(cfg))  # Unsloth (on CUDA) before transformers
    model, tokenizer = load_from_config(cfg, adapter, trainable=False)
    return Contender(name, model, tokenizer, str(source))


# --------------------------------------------------------------------------- one answer


def clean_topic(topic: Any) -> str:
    """The topic as the model will read it, or ValueError with a sentence for the page."""
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError("Write a topic first: a word or a phrase, like \"first snow\".")
    if len(topic) > MAX_TOPIC_CHARS:
        raise ValueError(f"The topic has {len(topic):,} characters; at most {MAX_TOPIC_CHARS} "
                         "are read. A phrase or a sentence is enough.")
    for ch in topic:
        if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r":
            raise ValueError(f"The topic holds a control character (U+{ord(ch):04X}); "
                             "remove it and try again.")
    return " ".join(topic.split())


def _check_choice(mode: Any, temperature: Any, best_of: Any) -> tuple[str, float, int]:
    if mode not in MODES:
        raise ValueError(f"Mode {mode!r}: choose one of {', '.join(MODES)}.")
    lo, hi = TEMPERATURE_RANGE
    try:
        temperature = float(temperature)
        best_of = int(best_of)
    except (TypeError, ValueError):
        raise ValueError("Temperature and N must be numbers.") from None
    if not lo <= temperature <= hi:
        raise ValueError(f"Temperature {temperature}: choose from {lo} to {hi}.")
    if not 1 <= best_of <= MAX_BEST_OF:
        raise ValueError(f"N {best_of}: choose from 1 to {MAX_BEST_OF}.")
    return mode, temperature, best_of


_GENERATING = threading.Lock()  # one generation at a time, whatever calls in (page, API, code)


@contextmanager
def _time_limit(model: Any, seconds: float):
    """Every generate call of the block stops after `seconds` (transformers' max_time); the
    model's own generation config is put back afterwards."""
    config = model.generation_config
    before = getattr(config, "max_time", None)
    config.max_time = seconds
    try:
        yield
    finally:
        config.max_time = before


def write(contender: Contender, topic: str, mode: str = "constrained", temperature: float = 1.0,
          seed: int = 0, best_of: int = 8, scorer: Any = None,
          max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """One poem about `topic` the way `mode` writes it, judged: a JSON-ready dict with the poem,
    each line's syllable counts against its target, valid, the judge's parts and its reasons.

    Raises ValueError (a sentence fit for the page) on a bad topic or setting."""
    topic = clean_topic(topic)
    mode, temperature, best_of = _check_choice(mode, temperature, best_of)
    k = best_of if mode == "best of N" else 1
    with _GENERATING:
        started = time.time()
        with _time_limit(contender.model, GENERATE_SECONDS):
            written = write_haiku(topic, model=contender.model, tokenizer=contender.tokenizer,
                                  k=k, seed=int(seed), max_new_tokens=max_new_tokens,
                                  sampling=SamplingSettings(temperature=temperature),
                                  scorer=scorer, constrained=mode == "constrained")
        finished = time.time()
    verdict = Judge().judge([written.poem], [topic], cosines=[written.similarity + 0.5])[0]
    check = written.check
    lines = []
    for i, (text, counts) in enumerate(zip(check.lines, check.counts)):
        target = check.pattern[i] if i < len(check.pattern) else None
        lines.append({"text": text, "syllables": sorted(counts), "target": target,
                      "ok": target is not None and target in counts})
    return {
        "model": contender.name, "topic": topic, "mode": mode, "temperature": temperature,
        "seed": int(seed), "samples": k, "poem": written.poem, "lines": lines,
        "valid": verdict.valid, "fluent": verdict.fluent, "on_topic": verdict.on_topic,
        "original": verdict.original, "good": verdict.good, "cosine": round(verdict.cosine, 3),
        "reasons": list(verdict.reasons), "started": started, "finished": finished,
        "seconds": round(finished - started, 2),
    }


# --------------------------------------------------------------------------- the page


def _mark(ok: bool) -> str:
    return '<span class="hk-yes">yes</span>' if ok else '<span class="hk-no">no</span>'


def render(answer: dict) -> str:
    """The answer as HTML: each line with its count (a miss marked with its target), then the
    judge's parts and what failed."""
    rows = []
    for line in answer["lines"]:
        counts = "/".join(str(n) for n in line["syllables"]) or "0"
        if line["ok"]:
            badge = f'<span class="hk-count hk-ok">{counts}</span>'
        elif line["target"] is None:
            badge = f'<span class="hk-count hk-miss">{counts} (extra line)</span>'
        else:
            badge = f'<span class="hk-count hk-miss">{counts}, needs {line["target"]}</span>'
        rows.append(f'<div class="hk-line"><span class="hk-text">{html.escape(line["text"])}'
                    f"</span> {badge}</div>")
    if not rows:
        rows.append('<div class="hk-line"><em>(no poem came back)</em></div>')
    verdict = "good haiku" if answer["good"] else ("valid, not good" if answer["valid"]
                                                   else "not a 5-7-5 haiku")
    parts = (f'<table class="hk-parts"><tr><td>valid 5-7-5</td><td>{_mark(answer["valid"])}</td>'
             f'</tr><tr><td>reads as English</td><td>{_mark(answer["fluent"])}</td></tr>'
             f'<tr><td>on topic (cosine {answer["cosine"]:.2f})</td>'
             f'<td>{_mark(answer["on_topic"])}</td></tr><tr><td>not a copy</td>'
             f'<td>{_mark(answer["original"])}</td></tr></table>')
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in answer["reasons"])
    how = answer["mode"] + (f" ({answer['samples']} samples)" if answer["samples"] > 1 else "")
    return (f'<div class="hk-answer"><div class="hk-model">{html.escape(answer["model"])} · '
            f'{html.escape(how)} · {answer["seconds"]:.1f} s</div>'
            f'<div class="hk-poem">{"".join(rows)}</div>'
            f'<div class="hk-verdict">{verdict}</div>{parts}'
            f'{f"<ul class=hk-reasons>{reasons}</ul>" if reasons else ""}</div>')


def _problem(message: str) -> str:
    return f'<div class="hk-error">{html.escape(message)}</div>'


CSS = """
.hk-line { font-size: 1.25em; line-height: 1.8; }
.hk-count { font-size: 0.75em; margin-left: 0.6em; padding: 0 0.4em; border-radius: 0.3em; }
.hk-ok { background: #d9f2dd; color: #14532d; }
.hk-miss { background: #fde2e1; color: #7f1d1d; }
.hk-model { color: #666; font-size: 0.85em; margin-bottom: 0.4em; }
.hk-verdict { font-weight: 600; margin-top: 0.6em; }
.hk-yes { color: #15803d; } .hk-no { color: #b91c1c; }
.hk-error { color: #b91c1c; font-weight: 600; }
"""


@dataclass
class App:
    """The page's functions over one or two models; `blocks()` builds the Gradio page."""

    contenders: list[Contender]
    scorer: Any = None
    max_new_tokens: int = MAX_NEW_TOKENS
    answers: list[dict] = field(default_factory=list)  # the newest answers, for tests and logs

    def __post_init__(self):
        if not 1 <= len(self.contenders) <= 2:
            raise AppError(f"the app shows one or two models, not {len(self.contenders)}")

    def _answer(self, contender: Contender, *settings) -> tuple[str, dict]:
        try:
            answer = write(contender, *settings, scorer=self.scorer,
                           max_new_tokens=self.max_new_tokens)
        except ValueError as err:
            return _problem(str(err)), {"error": str(err)}
        self.answers = (self.answers + [answer])[-8:]
        return render(answer), answer

    def write(self, topic, mode, temperature, seed, best_of, which=None):
        """The "Write" tab: one model (by name, default the first)."""
        names = [c.name for c in self.contenders]
        contender = self.contenders[names.index(which) if which in names else 0]
        return self._answer(contender, topic, mode, temperature, seed, best_of)

    def compare(self, topic, mode, temperature, seed, best_of):
        """The "Compare" tab: both models, the same topic, settings and seed."""
        (left, a), (right, b) = (self._answer(c, topic, mode, temperature, seed, best_of)
                                 for c in self.contenders)
        return left, right, [a, b]

    def blocks(self):
        # No usage reports to Gradio's servers unless the user turned them on themselves.
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        import gradio as gr

        names = [c.name for c in self.contenders]
        with gr.Blocks(title="haiku-kit", analytics_enabled=False) as page:
            gr.Markdown("# haiku-kit\nA topic in, a 5-7-5 haiku out. Each line shows its "
                        "syllable count; the judge says whether the poem is valid, reads as "
                        "English, is on topic and is not a copy.")

            def controls(prefix: str):
                topic = gr.Textbox(label="Topic", placeholder="first snow on the harbour",
                                   max_lines=2, elem_id=f"{prefix}-topic")
                with gr.Row():
                    mode = gr.Radio(list(MODES), value="constrained", label="Mode",
                                    info="free: one sample as the model writes alone; "
                                         "constrained: every line steered onto 5-7-5; best of "
                                         "N: N free samples, the judge picks")
                    temperature = gr.Slider(*TEMPERATURE_RANGE, value=1.0, step=0.05,
                                            label="Temperature")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    best_of = gr.Slider(2, MAX_BEST_OF, value=8, step=1, label="N (best of N)")
                return topic, mode, temperature, seed, best_of

            with gr.Tab("Write"):
                inputs = controls("write")
                which = gr.Dropdown(names, value=names[0], label="Model",
                                    visible=len(names) > 1)
                button = gr.Button("Write", variant="primary", elem_id="write-button")
                poem = gr.HTML(elem_id="write-poem")
                with gr.Accordion("details (JSON)", open=False):
                    details = gr.JSON()
                gr.Examples([[e] for e in EXAMPLES], inputs=[inputs[0]])
                button.click(self.write, [*inputs, which], [poem, details], api_name="write")
                inputs[0].submit(self.write, [*inputs, which], [poem, details],
                                 api_visibility="private")
            if len(self.contenders) == 2:
                with gr.Tab("Compare"):
                    inputs = controls("compare")
                    button = gr.Button("Write with both", variant="primary",
                                       elem_id="compare-button")
                    with gr.Row():
                        with gr.Column():
                            left = gr.HTML(elem_id="compare-left")
                        with gr.Column():
                            right = gr.HTML(elem_id="compare-right")
                    with gr.Accordion("details (JSON)", open=False):
                        details = gr.JSON()
                    button.click(self.compare, list(inputs), [left, right, details],
                                 api_name="compare")
        # One generation at a time: a second request waits its turn (a CPU runs one well).
        page.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
        return page


def launch(model: Any = None, tokenizer: Any = None, name: str = "model", *,
           contenders: list[Contender] | None = None, host: str = HOST, port: int | None = None,
           share: bool | None = False, block: bool | None = None, scorer: Any = None,
           max_new_tokens: int = MAX_NEW_TOKENS):
    """Serve the page; returns (App, Gradio page, local URL).

    Pass a loaded (model, tokenizer) (a notebook's, no second load) or `contenders` (see
    open_source). host: 127.0.0.1 unless you mean to serve others (0.0.0.0: every interface);
    port: that port only (None: PORT, or the next free one when it is taken);
    share=True asks Gradio for a public *.gradio.live link (anyone with it can use the model;
    None: Gradio's choice, a link on Colab only).
    block: wait until Ctrl-C (default: yes from a script, no in a notebook). max_new_tokens:
    each poem's bound (a haiku is about 20 tokens)."""
    if contenders is None:
        if model is None or tokenizer is None:
            raise AppError("launch: pass a model and its tokenizer, or contenders")
        contenders = [Contender(name, model, tokenizer)]
    app = App(contenders, scorer=scorer, max_new_tokens=max_new_tokens)
    page = app.blocks()
    if block is None:
        block = not _in_notebook()
    try:
        page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                    quiet=True, css=CSS, footer_links=[])
    except OSError as err:  # the port is taken, the host is not this machine's
        first = (str(err).splitlines() or [""])[0].split(". ")[0]
        raise AppError(f"cannot serve on {host}:{port or PORT}: {first} (try --port)") from None
    url = page.local_url
    print(f"haiku-kit app: {url} ({', '.join(c.name for c in contenders)})"
          + (f"; public link: {page.share_url}" if share and page.share_url else ""))
    if block:
        try:
            page.block_thread()
        finally:
            page.close()
    return app, page, url


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ != "TerminalInteractiveShell"
