# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Report: base vs SFT vs SFT→GRPO
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/05_report.ipynb)
#
# Puts the three evaluations side by side (with 95% confidence intervals), plots them, and
# lists sample poems and typical failures. Everything lands in `RUN/report/`.

# %%
# Install the kit where it is missing (Colab); with haiku-kit installed this does nothing.
# From HAIKU_KIT_SOURCE if set: a wheel, a git URL, or haiku-kit with a version (haiku-kit==0.1.0).
import importlib.util
import os
import shutil
import subprocess
import sys

if importlib.util.find_spec("haiku_kit") is None:
    src = os.environ.get("HAIKU_KIT_SOURCE") or "git+https://github.com/haiku-kit/haiku-kit"
    extras = ["gpu"] * bool(shutil.which("nvidia-smi")) + ["app"] * ("google.colab" in sys.modules)
    extra = f"[{','.join(extras)}]" if extras else ""  # Unsloth on a GPU; Colab: the web page
    local = src.endswith(".whl") or os.path.exists(src)
    req = f"haiku-kit{extra} @ {src}" if "://" in src else src + extra if local else (
        f"haiku-kit{extra}{src.removeprefix('haiku-kit')}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", req])

# %% [markdown]
# ## Parameters
# The eval result folders written by 02, 03 and 04 (empty: `RUN/eval/base`, `sft`, `grpo`).

# %% tags=["parameters"]
preset: str = "auto"  # auto: cpu-demo on a CPU, colab-t4-gemma3-1b on a GPU under 20 GiB or without bf16, else h100-gemma3-1b; or a preset name (cpu-smoke, cpu-full, ref-*) or YAML file
overrides: list = []  # config overrides: a list of strings, each a dotted key, an equals sign, a YAML value
run_dir: str = "runs/demo"  # run folder: every artifact of the run is written here
drive: bool = False  # on Colab: keep the run folder on Google Drive (MyDrive/haiku-kit/NAME), so a disconnect loses nothing
base_result: str = ""  # eval folder of the base model (empty: RUN/eval/base)
sft_result: str = ""  # eval folder of the SFT model (empty: RUN/eval/sft)
grpo_result: str = ""  # eval folder of the SFT->GRPO model (empty: RUN/eval/grpo)

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, stages.on_drive(run_dir, drive))
results = {
    "base": run.path("base_result", base_result),
    "sft": run.path("sft_result", sft_result),
    "grpo": run.path("grpo_result", grpo_result),
}

# %% [markdown]
# ## Compare

# %%
report_dir = stages.make_report(run, results)
stages.show_report(report_dir)

# %%
print(f"report written to {report_dir}")
