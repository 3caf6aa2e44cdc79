# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# Install the kit where it is missing (Colab); with haiku-kit already installed this does nothing.
import importlib.util
import shutil
import subprocess
import sys

if importlib.util.find_spec("haiku_kit") is None:
    extra = "haiku-kit[gpu]" if shutil.which("nvidia-smi") else "haiku-kit"  # Unsloth needs a GPU
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", extra])

# %% [markdown]
# ## Parameters
# The eval result folders written by 02, 03 and 04 (empty: `RUN/eval/base`, `sft`, `grpo`).

# %% tags=["parameters"]
preset = "cpu-demo"
overrides = []
run_dir = "runs/demo"
base_result = ""
sft_result = ""
grpo_result = ""

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, run_dir)
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
