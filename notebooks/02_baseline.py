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
# # 02 · Baseline: how well does the untrained model write haiku?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/02_baseline.ipynb)
#
# Before training anything we measure the base instruction model on the held-out **eval**
# prompts. Each output is scored on:
#
# - **Haiku**: share of outputs that are three lines of 5-7-5 syllables,
# - **Similarity**: cosine similarity of topic and poem (MiniLM embeddings) minus 0.5,
# - **Total** = Haiku + Similarity, and **Train overlap**: share of outputs copied verbatim
#   from a training answer.
#
# The result is saved to `RUN/eval/base/` for the final comparison.

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
# `data_dir` is the splits folder written by 01 (empty: `RUN/data`).

# %% tags=["parameters"]
preset: str = "auto"  # auto: cpu-demo on a CPU, colab-t4-gemma3-1b on a GPU under 20 GiB or without bf16, else h100-gemma3-1b; or a preset name (cpu-smoke, cpu-full, ref-*) or YAML file
overrides: list = []  # config overrides: a list of strings, each a dotted key, an equals sign, a YAML value
run_dir: str = "runs/demo"  # run folder: every artifact of the run is written here
drive: bool = False  # on Colab: keep the run folder on Google Drive (MyDrive/haiku-kit/NAME), so a disconnect loses nothing
data_dir: str = ""  # splits folder written by 01 (empty: RUN/data)

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, stages.on_drive(run_dir, drive))
data_dir = run.path("data_dir", data_dir)

# %% [markdown]
# ## Generate and score

# %%
base = stages.evaluate_model(run, "base", data_dir)
stages.show_result(base, "base model")

# %% [markdown]
# ## A few of its poems

# %%
stages.show_samples(base, "base model")

# %%
print(stages.elapsed(run))
