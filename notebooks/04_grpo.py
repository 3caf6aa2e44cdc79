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
# # 04 · GRPO: reinforcement learning with verifiable rewards
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/04_grpo.ipynb)
#
# Starting from the SFT adapter, GRPO samples several poems per **rl** prompt and pushes the
# model towards the better ones. The rewards are computed, not learned: a syllable counter
# checks the 5-7-5 shape and MiniLM checks that the poem is about the topic.
#
# Writes `RUN/grpo/adapter/`, the log, sampled completions and curves, and the evaluation of
# the SFT→GRPO model in `RUN/eval/grpo/`.

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
# `data_dir` is the splits folder written by 01 and `sft_adapter` the adapter written by 03
# (empty: their places in the run folder).

# %% tags=["parameters"]
preset = "cpu-demo"
overrides = []
run_dir = "runs/demo"
data_dir = ""
sft_adapter = ""

# %%
from haiku_kit import pipeline

run = pipeline.open_run(preset, overrides, run_dir)
data_dir = run.path("data_dir", data_dir)
sft_adapter = run.path("sft_adapter", sft_adapter)

# %% [markdown]
# ## Train

# %%
grpo_adapter = pipeline.train_grpo(run, data_dir, sft_adapter)
pipeline.show_training(run.paths.stage_dir("grpo"))

# %% [markdown]
# ## Evaluate the SFT→GRPO model

# %%
grpo = pipeline.evaluate_model(run, "grpo", data_dir, adapter=grpo_adapter)
pipeline.show_result(grpo, "SFT→GRPO")

# %%
pipeline.show_samples(grpo, "SFT→GRPO")

# %%
print(pipeline.elapsed(run))
