"""`haiku-kit` command line: a thin dispatcher; each command's logic lives in its module."""

from __future__ import annotations

import argparse
import importlib
import sys


def _handler(module: str, func: str):
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"haiku_kit.{module}"), func)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="haiku-kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    # --- check (verifier) ---
    p = sub.add_parser("check", help="check whether a text is a 5-7-5 haiku")
    p.add_argument("file", nargs="?", default="-", help="text file, or - for stdin")
    p.add_argument("--pattern", default="5-7-5", help="syllable pattern, e.g. 3-5-3")
    p.add_argument("--strict", action="store_true", help="most common pronunciation only")
    p.set_defaults(func=_handler("haiku", "cli_check"))

    # --- data (data) ---
    p = sub.add_parser("data", help="dataset commands")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser("build", help="build SFT/RL/eval splits from a source")
    b.add_argument("--source", default="embedded", help="embedded, a csv/jsonl/json path, or hub:NAME")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--topic-col", default=None)
    b.add_argument("--haiku-col", default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--min-similarity", type=lambda s: None if s.lower() == "none" else float(s),
                   default=0.5, help="topic-poem cosine threshold; none disables")
    b.add_argument("--on-bad-row", choices=["skip", "raise"], default="skip")
    b.set_defaults(func=_handler("data", "cli_data_build"))

    # --- train (train) ---
    p = sub.add_parser("train", help="run SFT or GRPO from a preset")
    p.add_argument("stage", choices=["sft", "grpo"])
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="run folder")
    p.set_defaults(func=_handler("train", "cli_train"))

    # --- eval / write (eval) ---
    p = sub.add_parser("eval", help="evaluate a model on prompts; writes JSONL, table, plots")
    p.add_argument("--model", default="embedded", help="model name/path")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder")
    p.add_argument("--data", default=None,
                   help="splits folder, jsonl, or chat json (default: bundled eval split)")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--n", type=int, default=None, help="first N prompts only")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", default=None, help="training answers for the overlap check")
    p.add_argument("--name", default=None, help="model name in the table")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.set_defaults(func=_handler("evaluate", "cli_eval"))

    p = sub.add_parser("write", help="write a verified haiku about a topic")
    p.add_argument("topic")
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter", default=None)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.set_defaults(func=_handler("evaluate", "cli_write"))

    # --- pipeline / demo (pipeline) ---
    p = sub.add_parser("pipeline", help="run the notebooks end to end with papermill")
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--from", dest="from_stage", default=None, help="resume from this stage")
    p.set_defaults(func=_handler("pipeline", "cli_pipeline"))

    p = sub.add_parser("demo", help="the CPU end-to-end demo (cpu-demo preset)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_handler("pipeline", "cli_demo"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
