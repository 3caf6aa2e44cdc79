"""`haiku-kit` command line: the argument parser and every command's handler.

One error rule for every command: bad input (a preset, file, row, key or argument) prints one
line naming it on stderr, `haiku-kit COMMAND: error: ...`, and exits 2. `check` and `write`
exit 1 for a text that is not a haiku; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import unicodedata
import warnings
from pathlib import Path

from haiku_kit.config import MAX_NEW_TOKENS, MAX_SAMPLES
from haiku_kit.errors import HaikuKitError, TrainingInterrupted, missing_extra
from haiku_kit.train.checkpoints import rerun_command

DEFAULT_PRESET = "cpu-demo"


# --------------------------------------------------------------------------- handlers


def cmd_check(args: argparse.Namespace) -> int:
    """Each line with its syllable count(s), then the verdict. 0 = haiku, 1 = not."""
    from haiku_kit.verify.haiku import MAX_TEXT_CHARS, check, parse_pattern

    pattern = parse_pattern(args.pattern)
    # At most one character past the cap is read: a longer text is not a haiku (check's rule),
    # and /dev/zero or a multi-GB file is not read whole.
    where = "standard input"
    if args.file in (None, "-"):
        text = sys.stdin.read(MAX_TEXT_CHARS + 1)
    else:
        where = args.file
        try:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read(MAX_TEXT_CHARS + 1)
        except UnicodeDecodeError as err:
            raise ValueError(f"{args.file}: not UTF-8 text (byte {err.start}: "
                             f"{err.object[err.start:err.start + 1]!r})") from None
    # a NUL or other control character: a binary or broken file, not a poem to count
    bad = next((i for i, ch in enumerate(text) if ch not in "\n\r\t\f\v"
                and unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        raise ValueError(f"{where}: a control character (U+{ord(text[bad]):04X}) on line {line}; "
                         "a haiku is plain text")
    result = check(text, pattern, strict=args.strict)
    for i, (line, c) in enumerate(zip(result.lines, result.counts)):
        target = f"/{pattern[i]}" if i < len(pattern) else "/-"
        shown = "|".join(str(n) for n in sorted(c))
        print(f"{shown:>6}{target:<4} {line}")
    if result.symbols:
        print(f"symbols (0 syllables): {' '.join(result.symbols)}")
    name = "-".join(map(str, pattern))
    print(f"haiku ({name})" if result.is_haiku else f"not a haiku ({name}): {result.reason}")
    return 0 if result.is_haiku else 1


def cmd_data_build(args: argparse.Namespace) -> int:
    """Load, filter and split a source; print the rows left after each filter step."""
    from haiku_kit.data.sources import (
        BadRowWarning,
        FilterReport,
        check_local_folder,
        load_source,
    )
    from haiku_kit.data.splits import build_splits

    _one_line_warnings(BadRowWarning)
    report = FilterReport()
    try:
        if Path(args.source).is_dir():  # datasets reads a folder silently: say what it reads
            files, size = check_local_folder(Path(args.source))
            print(f"reading {args.source}: {files} files, {size / 1e6:.1f} MB (datasets)",
                  file=sys.stderr)
        rows = load_source(args.source, args.topic_col, args.haiku_col,
                           on_bad_row=args.on_bad_row, report=report)
        dd = build_splits(rows, args.out, seed=args.seed, min_similarity=args.min_similarity,
                          report=report, sources=[args.source])
    except (HaikuKitError, OSError):
        if report.steps:
            print(report, file=sys.stderr)
        raise
    print(report)
    print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in dd.items())} to {args.out}")
    return 0


def _one_line_warnings(category: type[Warning]) -> None:
    """Print warnings of this category as one line each (no source line under them)."""
    default = warnings.showwarning

    def show(message, kind, filename, lineno, file=None, line=None):
        if issubclass(kind, category):
            print(f"warning: {message}", file=sys.stderr)
        else:
            default(message, kind, filename, lineno, file, line)

    warnings.showwarning = show


def backend_first(cfg) -> str:
    """Import the config's backend (Unsloth) before anything imports transformers/trl/peft."""
    from haiku_kit.model.backends import backend_for, import_backend

    return import_backend(backend_for(cfg))


def cmd_export(args: argparse.Namespace) -> int:
    """Merged weights and/or GGUF of a run's adapter, its model card, a re-scored table; push."""
    from haiku_kit.config import load_config
    from haiku_kit.runs import RunPaths
    from haiku_kit.share.export import export_run, push

    backend_first(load_config(RunPaths(Path(args.run)).config))
    result = export_run(args.run, phase=args.phase, merged=args.merged or not args.gguf,
                        gguf=args.gguf, out=args.out, repo_id=args.push, rescore=args.rescore)
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    if result.scores:
        print(f"valid haiku on the run's first {args.rescore} eval prompts (same seed):")
        print(result.table())
    if args.push:
        print(f"pushed: {push(result.folder, args.push)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """The versions that matter: Python, torch + CUDA, transformers, trl, peft, unsloth, vllm, GPUs."""
    from haiku_kit.env import collect_env, format_env, write_env_json

    info = collect_env()
    print(format_env(info))
    if args.out:
        print(f"wrote {write_env_json(args.out, info)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`haiku-kit train {sft,grpo} --preset P --set k=v --out RUN`."""
    from haiku_kit.config import check_launch, resolve_config
    from haiku_kit.runs import RunPaths, hold_run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch").setLevel(logging.WARNING)  # its exit-time cache stats
    cfg = resolve_config(args.preset, list(args.overrides or []), args.out)
    check_launch(cfg)  # under torchrun / accelerate launch: the backend trains in several processes
    backend_first(cfg)
    with hold_run(RunPaths.of(cfg).root, f"train {args.stage}"):  # one writer per run folder
        return _train(args, cfg)


def _train(args: argparse.Namespace, cfg) -> int:
    from haiku_kit import ranks
    from haiku_kit.config import save_config
    from haiku_kit.model.backends import resolve_device
    from haiku_kit.runs import RunPaths

    # torchrun / accelerate launch: every process trains, the main one writes (ranks.py)
    ranks.start(cpu=resolve_device(cfg) == "cpu")
    ranks.main_only(save_config, cfg, RunPaths.of(cfg).config)
    # trackio reads TRACKIO_DIR once, on import (TRL imports it early): keep its store in RUN/trackio
    if any("trackio" in str(getattr(cfg, st).report_to) for st in ("sft", "grpo")):
        os.environ.setdefault("TRACKIO_DIR", str(RunPaths.of(cfg).root.resolve() / "trackio"))
    if args.stage == "sft":
        from haiku_kit.train.distill import distil_after_sft
        from haiku_kit.train.sft import run_sft

        out = run_sft(cfg, resume_from_checkpoint=args.resume, fresh=args.fresh,
                      then=lambda model, tok, adapter: distil_after_sft(
                          cfg, model, tok, adapter, None, args.resume, args.fresh))
    else:
        from haiku_kit.train.grpo import run_grpo_phases

        out = run_grpo_phases(cfg, resume=args.resume, fresh=args.fresh)
    if ranks.is_main():
        print(f"adapter saved to {out}")
    return 0


def model_config(args: argparse.Namespace):
    """The RunConfig whose model `eval` and `write` load: --preset (+ --set) when given, else
    the defaults; --model names the model, else an --adapter's own base model."""
    from haiku_kit.config import RunConfig, apply_overrides, load_preset
    from haiku_kit.model.load import adapter_base_model

    if args.preset or args.overrides:
        cfg = apply_overrides(load_preset(args.preset or DEFAULT_PRESET), list(args.overrides))
    else:
        cfg = RunConfig()
    name = args.model
    if name is None and args.adapter and not args.preset:
        name = adapter_base_model(args.adapter)
    if name is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))
    return cfg


def cmd_write(args: argparse.Namespace) -> int:
    """The poem, its per-line counts and the verdict. 0 = valid haiku, 1 = not."""
    from haiku_kit.generate.write import write_haiku
    from haiku_kit.model.load import load_from_config, validate_adapter

    cfg = model_config(args)
    if args.adapter:
        validate_adapter(args.adapter, cfg.model.name)
    backend_first(cfg)  # write_haiku scores with MiniLM (transformers): Unsloth goes first
    model, tokenizer = load_from_config(cfg, args.adapter, trainable=False)
    result = write_haiku(args.topic, model=model, tokenizer=tokenizer, k=args.k, seed=args.seed,
                         max_new_tokens=args.max_new_tokens, constrained=args.constrained)
    print(result.poem)
    print()
    print(result.diagnosis())
    print(f"similarity to topic: {result.similarity:+.3f} (cos - 0.5); best of {args.k}")
    return 0 if result.is_haiku else 1


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the web page (haiku_kit.app) on one or two models until Ctrl-C."""
    from haiku_kit.app import AppError, launch, open_source, resolve_source

    if len(args.sources) > 2:
        raise AppError(f"app: one or two models to compare, not {len(args.sources)}")
    for source in args.sources:  # a wrong folder is named before anything heavy loads
        resolve_source(source)
    import gradio  # noqa: F401 - without the [app] extra: one line naming it, before a model loads

    if args.share or args.host not in ("127.0.0.1", "localhost", "::1"):
        where = "a public gradio.live link" if args.share else args.host
        print(f"haiku-kit app: serving beyond this machine ({where}): anyone who can reach it "
              "can use the model and this machine's time", file=sys.stderr)
    launch(contenders=[open_source(s) for s in args.sources], host=args.host, port=args.port,
           share=args.share, block=True, max_new_tokens=args.max_new_tokens)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Generate on the eval prompts, score, write JSONL + table + plots."""
    from haiku_kit.data.splits import load_eval_data
    from haiku_kit.env import write_env_json
    from haiku_kit.errors import DataError
    from haiku_kit.evaluate.report import write_report
    from haiku_kit.evaluate.scoring import run_eval
    from haiku_kit.generate.write import SamplingSettings
    from haiku_kit.model.load import load_from_config, resolve_model_source, validate_adapter

    if args.candidates < 1 or (args.candidates != 1 and not args.constrained):
        raise ValueError(f"--candidates {args.candidates}: needs --constrained and at least 1")
    out = Path(args.out)
    cfg = model_config(args)
    protocol = args.protocol or cfg.eval.protocol
    data, k, max_new_tokens = args.data, args.k or 1, args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    sampling = SamplingSettings.greedy() if args.greedy else None
    if protocol == "reference":
        data, k, max_new_tokens, sampling = reference_eval_args(args, cfg)
    if args.adapter:  # a broken adapter or model path fails before the eval split is built
        validate_adapter(args.adapter, cfg.model.name)
    else:
        resolve_model_source(cfg.model.name)
    backend_first(cfg)  # the bundled eval split is built with MiniLM (transformers)
    rows, train = load_eval_data(data, args.train)  # bad data fails before a model loads
    if args.n is not None:
        rows = rows[: args.n]
    if not rows:
        raise DataError(f"--data {data}: no eval prompts")
    name = args.name or Path(args.adapter or cfg.model.name).name or "model"
    model, tokenizer = load_from_config(cfg, args.adapter, trainable=False)
    result = run_eval(model, rows, tokenizer=tokenizer, adapter=args.adapter, train_answers=train,
                      k=k, seed=args.seed, name=name, sampling=sampling,
                      max_new_tokens=max_new_tokens, batch_size=args.batch_size,
                      constrained=args.constrained, candidates=args.candidates, protocol=protocol)
    result.meta["model"] = cfg.model.name
    result.save(out)
    write_env_json(out)
    report = write_report({name: result}, out)
    print(f"wrote {out / 'generations.jsonl'}, {out / 'result.json'} and {report}")
    print((out / "table.md").read_text())
    if (out / "reference.md").is_file():
        print((out / "reference.md").read_text())
    return 0


DEFAULT_MAX_NEW_TOKENS = 128


def reference_eval_args(args: argparse.Namespace, cfg) -> tuple:
    """(data, k, max_new_tokens, sampling) of `eval --protocol reference`: the reference's eval
    prompts (--data, else eval.reference_data) and its fixed settings (protocol.REFERENCE); a flag
    that would change those is refused, naming it."""
    from haiku_kit.config import REFERENCE_EVAL_SOURCE
    from haiku_kit.errors import ConfigError
    from haiku_kit.evaluate.protocol import eval_plan
    from haiku_kit.generate.write import SamplingSettings

    plan = eval_plan(cfg.eval, "reference")
    changed = [flag for flag, value, fixed in (("--k", args.k, plan.k),
                                               ("--max-new-tokens", args.max_new_tokens, plan.max_new_tokens))
               if value is not None and value != fixed] + ["--greedy"] * bool(args.greedy)
    if changed:
        raise ConfigError(f"--protocol reference fixes one sample per prompt, temperature "
                          f"{plan.temperature}, top_p {plan.top_p}, top_k {plan.top_k} and "
                          f"{plan.max_new_tokens} new tokens: drop {', '.join(changed)}")
    data = args.data or cfg.eval.reference_data
    if not data:
        raise ConfigError("--protocol reference needs the reference's eval prompts: --data PATH "
                          f"(the {REFERENCE_EVAL_SOURCE}), or eval.reference_data in the preset")
    sampling = SamplingSettings(temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k)
    return data, plan.k, plan.max_new_tokens, sampling


def cmd_pipeline(args: argparse.Namespace) -> int:
    from haiku_kit.pipeline import run_pipeline

    run_dir = run_pipeline(args.preset, args.overrides, args.out, from_stage=args.from_stage,
                           log_output=True, resume=args.resume, fresh=args.fresh)
    print(f"run folder: {run_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The cpu-demo preset end to end, then the headline table and where the report is."""
    from haiku_kit.evaluate.report import summary_table, verdict
    from haiku_kit.pipeline import DEMO_PRESET, run_pipeline
    from haiku_kit.runs import RunPaths
    from haiku_kit.stages import load_results

    # The demo uses only the embedded model and MiniLM: make any hub access fail fast.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    began = time.perf_counter()
    run_dir = run_pipeline(DEMO_PRESET, args.overrides, args.out, log_output=True)
    paths = RunPaths(run_dir)
    print()
    results = load_results(run_dir)
    print(summary_table(results))
    for metric in ("good", "haiku"):
        line = verdict(results, metric=metric)
        if line:
            print(line)
    print(f"report: {paths.report / 'report.md'} (full table: {paths.report / 'table.md'})")
    print(f"executed notebooks: {paths.notebooks}")
    print(f"demo finished in {(time.perf_counter() - began) / 60:.1f} min")
    return 0


# --------------------------------------------------------------------------- parser


def _add_config_args(p: argparse.ArgumentParser, preset_default: str | None, what: str) -> None:
    p.add_argument("--preset", default=preset_default, help=what)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE",
                   help="config overrides, e.g. --set sft.max_steps=20 sft.learning_rate=1e-4")


def _add_resume_args(p: argparse.ArgumentParser) -> None:
    """Rerunning resumes each training phase from its newest checkpoint by default."""
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", nargs="?", const="latest", default=None, metavar="latest|PATH",
                     help="resume from the newest checkpoint (the default when there is one; "
                          "then an error when there is none) or from PATH")
    how.add_argument("--fresh", nargs="?", const=True, default=False, choices=["delete"],
                     help="start over: old checkpoints and logs move to "
                          "checkpoints.old-TIME/ (--fresh delete deletes them)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, None, "load the model as this preset does (name, backend, 4-bit)")
    p.add_argument("--model", default=None,
                   help="embedded, embedded-english (its English-trimmed vocabulary), a folder or "
                        "a hub id (default: the --adapter's base model, else embedded)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder")


def _bounded(lo: int, hi: int):
    """An argparse type: a whole number from lo to hi (the same bounds as the presets')."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {lo} to {hi:,}")
        return value
    return parse


def _cosine_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or none)") from None
    if not -1.0 <= value <= 1.0:  # nan fails this too
        raise argparse.ArgumentTypeError(f"{text!r}: a cosine, from -1 to 1 (or none)")
    return value


def _topic(text: str) -> str:
    """A topic for `write`: one line of at most MAX_TOPIC_CHARS characters, no NUL."""
    from haiku_kit.generate.write import MAX_TOPIC_CHARS

    if not text.strip() or "\x00" in text or len(text) > MAX_TOPIC_CHARS:
        raise argparse.ArgumentTypeError(
            f"a topic of 1 to {MAX_TOPIC_CHARS} characters, no NUL (got {len(text):,})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="haiku-kit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check whether a text is a 5-7-5 haiku")
    p.add_argument("file", nargs="?", default="-", help="text file, or - for stdin")
    p.add_argument("--pattern", default="5-7-5", help="syllable pattern, e.g. 3-5-3")
    p.add_argument("--strict", action="store_true", help="most common pronunciation only")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="dataset commands")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser("build", help="build SFT/RL/eval splits from a source")
    b.add_argument("--source", default="embedded", help="embedded, a csv/jsonl/json path, or hub:NAME")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--topic-col", default=None)
    b.add_argument("--haiku-col", default=None)
    b.add_argument("--seed", type=_bounded(0, 2**32 - 1), default=0)
    b.add_argument("--min-similarity", type=_cosine_or_none, default=0.5, help="topic-poem cosine threshold; none disables")
    b.add_argument("--on-bad-row", choices=["skip", "raise"], default="skip")
    b.set_defaults(func=cmd_data_build)

    p = sub.add_parser("train", help="run SFT or GRPO from a preset")
    p.add_argument("stage", choices=["sft", "grpo"])
    _add_config_args(p, DEFAULT_PRESET, "preset name or YAML file")
    p.add_argument("--out", required=True, help="run folder")
    _add_resume_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on prompts; writes JSONL, table, plots")
    _add_model_args(p)
    p.add_argument("--data", default=None,
                   help="splits folder, jsonl, or chat json (default: bundled eval split)")
    p.add_argument("--k", type=_bounded(1, MAX_SAMPLES), default=None, help="samples per prompt (default 1)")
    p.add_argument("--n", type=_bounded(1, 1_000_000), default=None, help="first N prompts only")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=_bounded(0, 2**32 - 1), default=0)
    p.add_argument("--train", default=None, help="training answers for the overlap check")
    p.add_argument("--name", default=None, help="model name in the table")
    p.add_argument("--max-new-tokens", type=_bounded(1, MAX_NEW_TOKENS), default=None,
                   help="default 128")
    p.add_argument("--batch-size", type=_bounded(1, 1024), default=8)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--protocol", choices=["kit", "reference"], default=None,
                   help="reference: the reference's eval (its prompts via --data, 1 sample, "
                        "T 1.0, top-p 0.95, top-k 64, 50 new tokens, pyphen on its answer cut) "
                        "beside the kit's metrics; default: the preset's eval.protocol (kit)")
    p.add_argument("--constrained", action="store_true",
                   help="syllable-constrained decoding (report it beside the free row)")
    p.add_argument("--candidates", type=_bounded(1, MAX_SAMPLES), default=1,
                   help="with --constrained: drafts per poem, valid and fluent first, then the likeliest")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("write", help="write a verified haiku about a topic")
    p.add_argument("topic", type=_topic)
    _add_model_args(p)
    p.add_argument("--k", type=_bounded(1, MAX_SAMPLES), default=8)
    p.add_argument("--seed", type=_bounded(0, 2**32 - 1), default=0)
    p.add_argument("--max-new-tokens", type=_bounded(1, MAX_NEW_TOKENS), default=128)
    p.add_argument("--constrained", action="store_true",
                   help="steer every line onto 5-7-5 while writing, no line cut off on 'the' "
                        "(check stays the judge)")
    p.set_defaults(func=cmd_write)

    p = sub.add_parser("app", help="try a model in a web page (needs haiku-kit[app])")
    p.add_argument("sources", nargs="+", metavar="RUN_OR_ADAPTER",
                   help="a run folder (its newest adapter), an adapter folder or a model name; "
                        "two to compare them side by side")
    p.add_argument("--port", type=_bounded(1, 65535), default=None,
                   help="default: 7860, or the next free port when it is taken")
    p.add_argument("--host", default="127.0.0.1",
                   help="127.0.0.1: this machine only; 0.0.0.0: every network interface")
    p.add_argument("--share", action="store_true",
                   help="also a public *.gradio.live link (anyone with it can use the model)")
    p.add_argument("--max-new-tokens", type=_bounded(1, MAX_NEW_TOKENS), default=64,
                   help="each poem's bound in tokens (a haiku is about 20)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("pipeline", help="run the notebooks end to end with papermill")
    _add_config_args(p, DEFAULT_PRESET, "preset name or YAML file")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--from", dest="from_stage", default=None,
                   help="start at this stage, reusing the artifacts of the earlier ones")
    _add_resume_args(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("export", help="merged model / GGUF of a run, with its model card")
    p.add_argument("run", help="run folder")
    p.add_argument("--phase", default="grpo", help="the trained phase to export: sft, grpo or grpo-VARIANT (default: grpo)")
    p.add_argument("--merged", action="store_true", help="merged 16-bit safetensors (default)")
    p.add_argument("--gguf", default=None, choices=["q8_0", "f16", "f32"], help="also a GGUF")
    p.add_argument("--out", default=None, help="folder (default: RUN/export/STAGE)")
    p.add_argument("--push", default=None, metavar="USER/REPO",
                   help="upload to the Hub (token from HF_TOKEN or `hf auth login`)")
    p.add_argument("--rescore", type=_bounded(0, 100_000), default=32, help="eval prompts to re-score (0: none)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("env", help="print the versions and GPUs that matter (also RUN/env.json)")
    p.add_argument("--out", default=None, help="also write FOLDER/env.json")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("demo", help="the CPU end-to-end demo (cpu-demo preset)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)
    return parser


def _on_sigterm(terminated: list[int]):
    """SIGTERM (timeout, a scheduler, Colab stopping a cell), recorded in `terminated`."""
    def handler(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt  # the same way out as Ctrl-C: training saves a checkpoint
    return handler


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    terminated: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm(terminated))
    try:
        return _run(args, argv, terminated)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, argv: list[str], terminated: list[int]) -> int:
    how, code = ("terminated (SIGTERM)", 143), ("interrupted", 130)
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as err:
        said, rc = how if terminated else code
        print(f"haiku-kit {args.command}: {said} at step {err.step}; checkpoint saved to "
              f"{err.checkpoint}; to resume, run: {rerun_command(argv)}", file=sys.stderr)
        return rc
    except KeyboardInterrupt:
        said, rc = how if terminated else code
        again = ""
        if args.command in ("train", "pipeline"):
            again = ("; no checkpoint was saved on the way out (a rerun resumes the newest one "
                     f"saved before, if any): {rerun_command(argv)}")
        print(f"haiku-kit {args.command}: {said}{again}", file=sys.stderr)
        return rc
    except (HaikuKitError, OSError, ValueError) as err:
        print(f"haiku-kit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        line = missing_extra(err)
        if line is None:
            raise
        print(f"haiku-kit {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
