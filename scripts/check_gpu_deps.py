"""Resolve the kit's GPU extras against the package registry, as a new GPU user's pip would.

    python scripts/check_gpu_deps.py                       # [gpu] and [gpu,vllm], Python 3.11 and 3.12
    python scripts/check_gpu_deps.py --extras gpu --python 3.12

For each extra set and Python version it runs pip's resolver in `--dry-run --report` mode for
Linux x86_64 wheels. pip reads each wheel's metadata from the index (PEP 658) and downloads no
CUDA wheel. It prints every pin of pyproject.toml next to the version pip picked, the versions
that matter underneath (torch, triton, certifi...), or pip's conflict explanation. Exit code 0
when every set resolves, 1 otherwise, 2 on bad arguments.

This machine's own pip configuration (local wheel folders, constraint files) is ignored unless
`--use-pip-config` is given: the point is what a fresh Colab or H100 machine would get.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXTRAS = ("gpu", "gpu,vllm")
DEFAULT_PYTHONS = ("3.11", "3.12")
# Packages a GPU user should know the resolved version of, even when the kit does not pin them.
WATCHED = ("torch", "torchvision", "triton", "transformers", "trl", "peft", "accelerate",
           "datasets", "certifi", "bitsandbytes", "xformers", "vllm", "torchao")
# pip only takes the exact platform tags it is given; Colab is glibc 2.35, manylinux wheels
# declare the oldest glibc they need.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + [
    "manylinux2014_x86_64", "linux_x86_64",
]
CONFLICT_MARKERS = ("ResolutionImpossible", "conflict", "Could not find a version", "No matching distribution",
                    "requires", "depends on", "Cannot install")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canonical(re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0])


def read_requirements(pyproject: Path, extras: list[str]) -> tuple[list[str], list[str]]:
    """(the core dependencies, the requirements of the given extras) from pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise KeyError(f"unknown extra(s) {unknown}; pyproject.toml defines: {', '.join(optional)}")
    return list(project["dependencies"]), [req for extra in extras for req in optional[extra]]


def pip_env(use_pip_config: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not use_pip_config:
        env["PIP_CONFIG_FILE"] = os.devnull  # no config file at all: the plain public index
        for key in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
            env.pop(key, None)
    return env


def resolve(requirements: list[str], python: str, use_pip_config: bool) -> tuple[dict | None, str]:
    """pip's dry-run report (None when resolution failed) and pip's output."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--python-version", python, "--only-binary=:all:"]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        proc = subprocess.run(cmd + requirements, capture_output=True, text=True,
                              env=pip_env(use_pip_config), check=False)
        output = proc.stdout + proc.stderr
        if proc.returncode != 0 or not report.is_file():
            return None, output
        return json.loads(report.read_text(encoding="utf-8")), output


def resolved_versions(report: dict) -> dict[str, str]:
    return {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def conflict_lines(output: str) -> list[str]:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    picked = [line for line in lines if any(m in line for m in CONFLICT_MARKERS)]
    return picked or lines[-15:]


def describe(extras: str, python: str, pins: list[str], report: dict | None, output: str) -> list[str]:
    head = f"[{extras}] Python {python}, Linux x86_64"
    if report is None:
        return [f"{head}: CONFLICT", *("  " + line for line in conflict_lines(output))]
    versions = resolved_versions(report)
    lines = [f"{head}: resolves ({len(versions)} packages, metadata only)"]
    width = max(len(p) for p in pins) + 2
    for pin in pins:
        lines.append(f"  {pin:<{width}} -> {versions.get(requirement_name(pin), 'not installed (marker)')}")
    watched = [f"{name} {versions[name]}" for name in WATCHED if name in versions
               and not any(requirement_name(p) == name for p in pins)]
    if watched:
        lines.append("  also: " + ", ".join(watched))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", nargs="+", default=list(DEFAULT_EXTRAS),
                        help="extra sets to resolve, each comma-separated (default: gpu gpu,vllm)")
    parser.add_argument("--python", nargs="+", default=list(DEFAULT_PYTHONS), help="Python versions")
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    parser.add_argument("--use-pip-config", action="store_true",
                        help="keep this machine's pip configuration (index, wheel folders, constraints)")
    args = parser.parse_args(argv)
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 text=True, check=False).stdout.split(" from ")[0]
    print(f"{pip_version}; {'this machine' if args.use_pip_config else 'no'} pip configuration")
    ok = True
    for extras in args.extras:
        try:
            core, pins = read_requirements(args.pyproject, extras.split(","))
        except (KeyError, OSError, tomllib.TOMLDecodeError) as err:
            print(f"error: {args.pyproject}: {err}", file=sys.stderr)
            return 2
        for python in args.python:
            report, output = resolve(core + pins, python, args.use_pip_config)
            ok &= report is not None
            print("\n".join(describe(extras, python, pins, report, output)), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
