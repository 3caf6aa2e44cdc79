"""Environment info: real versions from metadata, no transformers/trl/peft import, git commit."""

import json
import subprocess
import sys
from importlib import metadata

from haiku_kit import env as env_info

PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft", "unsloth")


def test_collect_env_imports_nothing_unsloth_must_patch():
    code = (
        "import json, sys\n"
        "from haiku_kit.env import collect_env\n"
        "info = collect_env()\n"
        f"print(json.dumps({{'info': info, 'loaded': [m for m in {PATCHED_BY_UNSLOTH!r} if m in sys.modules]}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    info = result["info"]
    for name in ("torch", "transformers", "trl", "peft"):
        assert info["packages"][name] == metadata.version(name)
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))


def test_cuda_fields_match_torch():
    import torch

    info = env_info.collect_env()
    assert info["torch_cuda"] == torch.version.cuda
    assert info["cuda_available"] == torch.cuda.is_available()
    assert len(info["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_missing_package_is_none():
    assert env_info.package_version("no-such-package-haiku-kit-test") is None


def _git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def test_git_commit_of_a_checkout_and_its_dirty_flag(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert env_info.git_commit(repo) == head
    (repo / "a.py").write_text("x = 2\n")
    assert env_info.git_commit(repo) == head + "+dirty"


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert env_info.git_commit(tmp_path) is None


def test_env_json_round_trips_and_format_names_every_package(tmp_path):
    info = env_info.collect_env()
    path = env_info.write_env_json(tmp_path / "run", info)
    assert path.name == "env.json"
    assert json.loads(path.read_text()) == info
    text = env_info.format_env(info)
    for name in env_info.PACKAGES:
        assert name in text
    assert info["haiku_kit"]["version"] in text


def test_format_shows_gpu_name_and_capability():
    info = env_info.collect_env()
    info["gpus"] = [{"name": "Tesla T4", "capability": "7.5", "memory_gib": 14.7}]
    assert "Tesla T4, compute capability 7.5, 14.7 GiB" in env_info.format_env(info)
    info["gpus"] = []
    assert "none visible" in env_info.format_env(info)


def _gpu(name, capability, gib):
    return {"cuda_available": True, "gpus": [{"name": name, "capability": capability,
                                              "memory_gib": gib}]}


def test_auto_preset_follows_the_gpu():
    """A Colab T4 (15 GB, no bf16) gets the T4 preset, never the CPU demo or the H100 one."""
    assert env_info.choose_preset({"cuda_available": False, "gpus": []})[0] == "cpu-demo"
    preset, why = env_info.choose_preset(_gpu("Tesla T4", "7.5", 14.7))
    assert preset == "colab-t4-gemma3-1b" and "Tesla T4" in why and "14.7 GiB" in why
    assert env_info.choose_preset(_gpu("Tesla V100-SXM2-32GB", "7.0", 31.7))[0] == (
        "colab-t4-gemma3-1b")  # 32 GB but no bf16
    assert env_info.choose_preset(_gpu("NVIDIA A10G", "8.6", 19.9))[0] == "colab-t4-gemma3-1b"
    assert env_info.choose_preset(_gpu("NVIDIA H100 80GB HBM3", "9.0", 79.1))[0] == (
        "h100-gemma3-1b")
    # this machine: whatever torch sees
    import torch

    expected = "cpu-demo" if not torch.cuda.is_available() else None
    if expected:
        assert env_info.choose_preset()[0] == expected


def test_a_cuda_13_torch_on_an_old_driver_is_named_with_the_fix():
    """torch 2.13/2.14 wheels are CUDA 13 builds: a driver >= 580 (Colab shipped 550-570)."""
    problem = env_info.driver_problem("13.0", "550.54.15")
    assert "CUDA 13.0 build" in problem and ">= 580.65" in problem and "550.54.15" in problem
    assert env_info.driver_problem("13.0", "580.82.07") is None
    assert env_info.driver_problem("12.6", "560.35.03") is None
    assert "560.28" in env_info.driver_problem("12.6", "555.42.06")
    assert env_info.driver_problem("12.7", "555.0") is not None  # no entry: the one below
    assert env_info.driver_problem(None, "550.54") is None  # a CPU build
    assert env_info.driver_problem("13.0", None) is None  # no driver to judge


def test_env_prints_the_driver_line_and_any_problem():
    info = env_info.collect_env()
    assert "nvidia_driver" in info
    text = env_info.format_env({**info, "torch_cuda": "13.0", "nvidia_driver": "550.54.15"})
    assert any(line.startswith("NVIDIA driver") and line.endswith("550.54.15")
               for line in text.splitlines())
    assert "problem" in text and "needs an NVIDIA driver >= 580.65" in text
