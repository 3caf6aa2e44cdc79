"""The versions that decide whether a run behaves: Python, torch + CUDA, the Hugging Face stack,
Unsloth, vLLM, the GPUs, and the kit itself (version, git commit when run from a checkout).

Versions come from package metadata, never from importing the package: importing transformers,
trl or peft before Unsloth stops Unsloth from patching them, so this module must be safe to call
first. It imports torch (when installed) for the CUDA build and the GPUs: Unsloth only needs to
precede transformers, trl and peft (its own first import is torch).
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth", "unsloth_zoo",
    "vllm", "xformers", "bitsandbytes", "triton", "sentence-transformers",
)
KIT_DIST = "haiku-kit"
ENV_FILE = "env.json"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def kit_version() -> str:
    found = package_version(KIT_DIST)
    if found:
        return found
    from haiku_kit import __version__

    return __version__


def git_commit(folder: Path | None = None) -> str | None:
    """HEAD of the git checkout holding the kit's source, "+dirty" when it has local changes;
    None outside a checkout (an installed wheel) or without git."""
    folder = folder or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cuda_info() -> dict[str, Any]:
    """torch's CUDA build and the visible GPUs (name, compute capability, memory)."""
    if package_version("torch") is None:
        return {"torch_cuda": None, "cuda_available": False, "gpus": []}
    import torch

    info: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                            "gpus": []}
    if info["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
            })
    return info


# The oldest Linux NVIDIA driver each CUDA runtime runs on (NVIDIA's CUDA toolkit release
# notes, table 3). torch 2.13 / 2.14 wheels on PyPI are CUDA 13 builds: a driver >= 580.
MIN_DRIVER = {
    (11, 8): (520, 61), (12, 0): (525, 60), (12, 1): (530, 30), (12, 2): (535, 54),
    (12, 3): (545, 23), (12, 4): (550, 54), (12, 5): (555, 42), (12, 6): (560, 28),
    (12, 8): (570, 26), (12, 9): (575, 51), (13, 0): (580, 65), (13, 1): (590, 44),
}


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def nvidia_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports ("580.82.07"), None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else None


def driver_problem(torch_cuda: str | None, driver: str | None) -> str | None:
    """Why torch's CUDA build cannot run on this driver, or None (no CUDA build, no driver, or
    new enough). A CUDA 13 torch on a 12.x-era driver fails at the first CUDA call with a
    message that does not say which to change."""
    if not torch_cuda or not driver:
        return None
    cuda = _version(torch_cuda)[:2]
    needed = MIN_DRIVER.get(cuda) or max((v for k, v in MIN_DRIVER.items() if k <= cuda),
                                         default=None)
    if needed is None or _version(driver)[:2] >= needed:
        return None
    return (f"torch is a CUDA {torch_cuda} build, which needs an NVIDIA driver >= "
            f"{needed[0]}.{needed[1]}; this machine has {driver}: update the driver, or install "
            f"a torch built for an older CUDA (pip install torch --index-url "
            f"https://download.pytorch.org/whl/cu126)")


AUTO_PRESET = "auto"
T4_CLASS_GIB = 20.0  # below this much GPU memory (a 15 GB T4, a 16 GB V100) the T4 preset fits


def choose_preset(info: dict[str, Any] | None = None) -> tuple[str, str]:
    """The preset a notebook's preset="auto" runs on this machine, and why: on CUDA the T4 preset
    for a GPU under 20 GiB or of compute capability < 8.0 (float32 Gemma 3, no bf16), else the
    H100 preset; without CUDA, cpu-demo."""
    info = cuda_info() if info is None else info
    if not info.get("cuda_available") or not info.get("gpus"):
        return "cpu-demo", "no CUDA GPU: the CPU demo on the embedded 270M model"
    gpu = info["gpus"][0]
    major = int(str(gpu["capability"]).split(".")[0])
    about = f"{gpu['name']}, {gpu['memory_gib']} GiB, compute capability {gpu['capability']}"
    if gpu["memory_gib"] < T4_CLASS_GIB or major < 8:
        return "colab-t4-gemma3-1b", f"{about}: under {T4_CLASS_GIB:.0f} GiB or no bf16"
    return "h100-gemma3-1b", f"{about}: bf16 and room for the 1B model's larger batches"


def collect_env() -> dict[str, Any]:
    """Everything above as one JSON-ready mapping."""
    return {
        "haiku_kit": {"version": kit_version(), "git_commit": git_commit()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        **cuda_info(),
        "nvidia_driver": nvidia_driver(),
    }


def format_env(info: dict[str, Any]) -> str:
    """Readable lines for `haiku-kit env`."""
    kit = info["haiku_kit"]
    rows = [
        ("haiku-kit", kit["version"] + (f" (git {kit['git_commit']})" if kit["git_commit"] else "")),
        ("python", f"{info['python']} on {info['platform']}"),
        *((name, version or "not installed") for name, version in info["packages"].items()),
        ("torch CUDA", info["torch_cuda"] or "none (CPU build)"),
        ("NVIDIA driver", info.get("nvidia_driver") or "none found (nvidia-smi)"),
    ]
    problem = driver_problem(info["torch_cuda"], info.get("nvidia_driver"))
    if problem:
        rows.append(("problem", problem))
    rows += [(f"GPU {index}", f"{gpu['name']}, compute capability {gpu['capability']}, {gpu['memory_gib']} GiB")
             for index, gpu in enumerate(info["gpus"])] or [("GPU", "none visible")]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in rows]
    return "\n".join(lines)


def write_env_json(folder: str | Path, info: dict[str, Any] | None = None) -> Path:
    """RUN/env.json (or FOLDER/env.json): the environment a run was made in."""
    path = Path(folder) / ENV_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info or collect_env(), indent=1) + "\n", encoding="utf-8")
    return path


def main() -> int:
    print(format_env(collect_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
