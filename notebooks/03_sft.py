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
# # 03 · SFT: supervised fine-tuning on reference haiku
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/03_sft.ipynb)
#
# A LoRA adapter is trained on the **sft** split: the model sees the prompt and learns to
# answer with the reference haiku. This mostly teaches the *format* (three short lines, no
# preamble); the syllable counts come next, with GRPO.
#
# Writes `RUN/sft/adapter/`, the training log and curves, and the evaluation of the SFT model
# in `RUN/eval/sft/`.

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
# `data_dir` is the splits folder written by 01 (empty: `RUN/data`).

# %% tags=["parameters"]
preset = "cpu-demo"
overrides = []
run_dir = "runs/demo"
data_dir = ""

# %%
from haiku_kit import pipeline

run = pipeline.open_run(preset, overrides, run_dir)
data_dir = run.path("data_dir", data_dir)

# %% [markdown]
# ## Train

# %%
sft_adapter = pipeline.train_sft(run, data_dir)
pipeline.show_training(run.paths.stage_dir("sft"))

# %% [markdown]
# ## Evaluate the SFT model

# %%
sft = pipeline.evaluate_model(run, "sft", data_dir, adapter=sft_adapter)
pipeline.show_result(sft, "SFT")

# %%
pipeline.show_samples(sft, "SFT")

# %%
print(pipeline.elapsed(run))
