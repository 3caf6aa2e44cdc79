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
# # 00 · Quickstart: teach a small model to write haiku, in one notebook
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/00_quickstart.ipynb)
#
# The whole pipeline in one place, for Colab: build the data, measure the base model, fine-tune
# it on reference haiku (SFT), then reinforce it with verifiable rewards (GRPO: a syllable
# counter and a topic-similarity score), and compare the three. Notebooks 01-05 run the same
# steps one stage each; `haiku-kit pipeline` runs those from the command line.
#
# `preset = "auto"` picks the preset for this machine and prints why: `colab-t4-gemma3-1b` on a
# GPU under 20 GiB or without bf16 (a Colab T4), `h100-gemma3-1b` on a larger bf16 GPU, and on a
# CPU `cpu-demo`, which runs in about a quarter of an hour.

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

# %% tags=["parameters"]
preset: str = "auto"  # auto: cpu-demo on a CPU, colab-t4-gemma3-1b on a GPU under 20 GiB or without bf16, else h100-gemma3-1b; or a preset name (cpu-smoke, cpu-full, ref-*) or YAML file
overrides: list = []  # config overrides: a list of strings, each a dotted key, an equals sign, a YAML value
run_dir: str = "runs/quickstart"  # run folder: every artifact of the run is written here
drive: bool = False  # on Colab: keep the run folder on Google Drive (MyDrive/haiku-kit/NAME), so a disconnect loses nothing
resume = None  # None: the newest checkpoint, if any; "latest"; a checkpoint path
fresh: bool = False  # True: start over, old checkpoints moved aside; "delete": deleted
try_topics: list = ["first snow in the city", "a cat asleep in the sun", "the last train home"]  # topics the Try it cell writes about
export_merged: bool = False  # True: also save merged 16-bit weights (Save & share cell)
export_gguf: str = ""  # q8_0 or f16: also write a GGUF (empty: none)
push_to: str = ""  # Hub repo (user/name) to upload to (empty: nothing is uploaded)
web_app = "auto"  # the Try-it page's last cell: "auto" serves it on Colab only, True anywhere, False never

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, stages.on_drive(run_dir, drive), resume, fresh)
print(f"run folder: {run.paths.root}\nstages: {run.cfg.phases}")

# %% [markdown]
# ## 1 · Data

# %%
data_dir = stages.build_data(run)
stages.show_data(data_dir)

# %% [markdown]
# ## 2 · The base model

# %%
base = stages.evaluate_model(run, "base", data_dir)
stages.show_result(base, "base model")
stages.show_samples(base, "base model", n=3)

# %% [markdown]
# ## 3 · SFT

# %% [markdown]
# The real objects: `model, tokenizer` (transformers + peft, or Unsloth on a GPU) and TRL's own
# `SFTConfig` and `SFTTrainer`, built from what the kit prepares (`kit.args`: SFTConfig's keyword
# arguments, a dict to change before the trainer cell; the formatted sft split; the training
# log). (A preset without SFT, such as `ref-rl-only-sparse`, skips this section: go on to GRPO.)

# %%
from trl import SFTConfig, SFTTrainer

model, tokenizer = stages.load_model(run)
kit = stages.sft_setup(run, model, tokenizer, data_dir)
trainer = SFTTrainer(
    model=model,
    args=SFTConfig(**kit.args),
    train_dataset=kit.train_dataset,
    processing_class=tokenizer,
    callbacks=kit.callbacks,
)
kit.attach(trainer)
stages.show_args(trainer)

# %%
trainer.train(resume_from_checkpoint=trainer.kit_phase.resume)  # None: from step 0

# %%
sft_adapter = stages.save_sft(run, trainer)
stages.show_training(run.paths.phase_dir("sft"))

# %% [markdown]
# Self-distillation, when the preset asks (`distill.topics` > 0): the SFT model writes poems for
# the training topics through the syllable-constrained decoder, the verifier keeps the valid ones,
# and SFT continues on them (see 03). With `distill.corpus` the round reads its poems from a file
# instead of sampling; `cpu-demo` has no round.

# %%
for round_ in range(1, run.cfg.distill.rounds + 1):
    distill_trainer = stages.distill_trainer(run, model, tokenizer, data_dir, round_)
    if distill_trainer is None:  # the preset does not distil
        break
    distill_trainer.train(resume_from_checkpoint=distill_trainer.kit_phase.resume)
    sft_adapter = stages.save_distill(run, distill_trainer)

# %%
sft = stages.evaluate_model(run, "sft", data_dir, adapter=sft_adapter)
stages.show_result(sft, "SFT")
# the same prompts through the syllable-constrained decoder, a row beside the free one
# (when the preset's eval.constrained is on)
stages.evaluate_model(run, "sft", data_dir, adapter=sft_adapter, constrained=True)

# %%
# Hand the SFT model's GPU memory to GRPO (this notebook runs every stage in one process)
model = trainer = None  # drop the references (also where this preset skipped SFT)
print(stages.free_memory())

# %% [markdown]
# ## 4 · GRPO

# %% [markdown]
# GRPO samples several poems per prompt and rewards the better ones; the rewards are computed
# (syllables, lines, topic), and here they score a haiku and filler on one topic.

# %%
start = stages.grpo_start(run, run.paths.sft_adapter)
# rollouts=True: the model GRPO samples from, the one load that starts vLLM (model.fast_inference)
model, tokenizer = stages.load_model(run, adapter=start, rollouts=True)
kit = stages.grpo_setup(run, model, tokenizer, data_dir, start)
stages.show_rewards(kit)
stages.show_reward_scores(kit, "first snow in the city", {
    "a haiku": "soft flakes on the street\nthe city hushed under white\nmy breath joins the snow",
    "filler": "Here is a haiku about the first snow in the city. I hope you like it!",
})

# %%
from trl import GRPOConfig, GRPOTrainer

trainer = GRPOTrainer(
    model=model,
    reward_funcs=kit.reward_funcs,
    args=GRPOConfig(**kit.args),
    train_dataset=kit.train_dataset,
    processing_class=tokenizer,
    callbacks=kit.callbacks,
)
kit.attach(trainer)
stages.show_args(trainer)

# %%
trainer.train(resume_from_checkpoint=trainer.kit_phase.resume)  # None: from step 0

# %%
grpo_adapter = stages.save_grpo(run, trainer, data_dir)
stages.show_training(run.paths.phase_dir("grpo"))
grpo = stages.evaluate_model(run, "grpo", data_dir, adapter=grpo_adapter)
stages.show_result(grpo, "SFT→GRPO")
stages.evaluate_model(run, "grpo", data_dir, adapter=grpo_adapter, constrained=True)

# %% [markdown]
# ## 5 · Compare

# %%
results = {name: run.paths.eval_dir(name) for name in ("base", "sft", "grpo")}
report_dir = stages.make_report(run, results)
stages.show_report(report_dir)

# %% [markdown]
# ## 6 · Try it
# One haiku per topic from the trained model (`model` is the SFT→GRPO model in memory): one free
# sample and one through the syllable-constrained decoder, with the verifier's syllables per line.

# %%
tried = stages.show_tried(model, tokenizer, try_topics)

# %% [markdown]
# ## 7 · Save & share
# A model card in the adapter folder; with `export_merged` / `export_gguf`, merged weights / a
# GGUF in `RUN/export/grpo/`, re-scored beside the adapter; with `push_to`, an upload to the Hub
# (token from `HF_TOKEN` or `hf auth login`).

# %%
shared = stages.save_and_share(run.paths.root, "grpo", merged=export_merged,
                               gguf=export_gguf or None, push_to=push_to or None)

# %% [markdown]
# ## Try it in a web page
# A page on the model in memory (no second load): type a topic, pick free / constrained / best
# of N, and see each line's syllable count and the judge's verdict. On Colab Gradio prints a
# public `*.gradio.live` link (anyone with it can use the model until the session ends);
# elsewhere it binds to 127.0.0.1. The same page from a terminal: `haiku-kit app RUN`
# (two run or adapter folders side by side: `haiku-kit app RUN/sft/adapter RUN/grpo/adapter`).
# Needs `pip install "haiku-kit[app]"`.

# %%
app_url = stages.start_app(model, tokenizer, "SFT→GRPO", web_app)
