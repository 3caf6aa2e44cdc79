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
# # 01 · Data: topics and haiku, split three ways
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/01_data.ipynb)
#
# The kit learns from pairs *(topic, haiku)*. This notebook loads the source named in the
# preset (`data.source`: the embedded corpus by default, or a csv/jsonl/json file, or
# `hub:NAME`), keeps rows whose haiku really is 5-7-5 and whose topic matches the poem, and
# splits them into three disjoint parts:
#
# - **sft**: supervised fine-tuning examples (prompt + reference haiku),
# - **rl**: prompts for GRPO (the reference is only used to measure train overlap),
# - **eval**: held-out prompts for every evaluation.
#
# Everything is written to `RUN/data/`, which the next notebooks read.

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
# `preset` names a preset shipped with the kit (`cpu-demo`, `cpu-smoke`, or a GPU preset on
# Colab); `overrides` are `key=value` settings on top of it, e.g. `"data.source=my.csv"`.

# %% tags=["parameters"]
preset: str = "auto"  # auto: cpu-demo on a CPU, colab-t4-gemma3-1b on a GPU under 20 GiB or without bf16, else h100-gemma3-1b; or a preset name (cpu-smoke, cpu-full, ref-*) or YAML file
overrides: list = []  # config overrides: a list of strings, each a dotted key, an equals sign, a YAML value
run_dir: str = "runs/demo"  # run folder: every artifact of the run is written here
drive: bool = False  # on Colab: keep the run folder on Google Drive (MyDrive/haiku-kit/NAME), so a disconnect loses nothing

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, stages.on_drive(run_dir, drive))
print(f"run folder: {run.paths.root}\nsource: {run.cfg.data.source}")

# %% [markdown]
# ## Build the splits

# %%
data_dir = stages.build_data(run)
stages.show_data(data_dir)

# %%
print(stages.elapsed(run))
