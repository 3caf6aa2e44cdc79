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
# # 04 · GRPO: reinforcement learning with verifiable rewards
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/haiku-kit/haiku-kit/blob/main/notebooks/04_grpo.ipynb)
#
# Starting from the SFT adapter, GRPO samples several poems per **rl** prompt and pushes the
# model towards the better ones. The rewards are computed, not learned: a syllable counter
# checks the 5-7-5 shape and MiniLM checks that the poem is about the topic. Since the rewards
# need no reference poem, `grpo.extra_topics` (`embedded`: the kit's everyday feelings and
# situations) adds prompt-only topics to the rl prompts; `cpu-full` does.
#
# Writes `RUN/grpo/adapter/`, the log, sampled completions and curves, and the evaluation of
# the SFT→GRPO model in `RUN/eval/grpo/`.

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
# `data_dir` is the splits folder written by 01 and `sft_adapter` the adapter written by 03
# (empty: their places in the run folder).

# %% tags=["parameters"]
preset: str = "auto"  # auto: cpu-demo on a CPU, colab-t4-gemma3-1b on a GPU under 20 GiB or without bf16, else h100-gemma3-1b; or a preset name (cpu-smoke, cpu-full, ref-*) or YAML file
overrides: list = []  # config overrides: a list of strings, each a dotted key, an equals sign, a YAML value
run_dir: str = "runs/demo"  # run folder: every artifact of the run is written here
drive: bool = False  # on Colab: keep the run folder on Google Drive (MyDrive/haiku-kit/NAME), so a disconnect loses nothing
data_dir: str = ""  # splits folder written by 01 (empty: RUN/data)
sft_adapter: str = ""  # SFT adapter written by 03 (empty: RUN/sft/adapter)
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
data_dir = run.path("data_dir", data_dir)
sft_adapter = run.path("sft_adapter", sft_adapter)

# %% [markdown]
# ## More than one GPU
# A notebook kernel is one process, so this notebook trains on one GPU. To train this GRPO stage
# on several, run the command below in a terminal: `accelerate launch` starts one process per GPU
# with the kit's DDP config (`haiku_kit/resources/accelerate/`: DeepSpeed and FSDP configs there
# too), the main process writes the run folder, and the next notebook continues from it. The
# cell only prints the command; it launches nothing. Details: `docs/scale-out.md`.

# %%
print(stages.launch_command(run, "grpo"))  # one process per GPU here, at least 2

# %% [markdown]
# ## The model
# GRPO starts from the SFT adapter (or, as the preset's `grpo.init` says, from the base model:
# `start` is then None).

# %%
start = stages.grpo_start(run, sft_adapter)
# rollouts=True: the model GRPO samples from, the one load that starts vLLM (model.fast_inference)
model, tokenizer = stages.load_model(run, adapter=start, rollouts=True)

# %% [markdown]
# ## What the trainer is built from
# The kit turns the preset's `grpo.*` settings into `GRPOConfig`'s keyword arguments: `kit.args`,
# a plain dict, shown below. Change any before the trainer cell, e.g. `kit.args["max_steps"] = 5`.
# `kit.train_dataset` holds the rl prompts with the `topic` column the rewards read,
# `kit.reward_funcs` the reward functions, `kit.callbacks` the reward-hacking monitor, the
# collapse detector and the training log.

# %%
from pprint import pp

kit = stages.grpo_setup(run, model, tokenizer, data_dir, start)
pp(kit.args)  # GRPOConfig's keyword arguments

# %% [markdown]
# ## The rewards
# For every prompt GRPO samples `num_generations` completions, scores each with every reward
# function, sums them with their weights (`reward_weights`) and moves the model towards the
# completions that beat their group's mean. The preset's rewards (`grpo.rewards`), with what
# each one pays:

# %%
stages.show_rewards(kit)

# %% [markdown]
# The same functions on two completions for one topic: a 5-7-5 haiku, and filler that talks
# about the topic without being a poem. (The scores here reach no training log.)

# %%
stages.show_reward_scores(kit, "first snow in the city", {
    "a haiku": "soft flakes on the street\nthe city hushed under white\nmy breath joins the snow",
    "filler": "Here is a haiku about the first snow in the city. I hope you like it!",
})

# %% [markdown]
# ## The trainer
# TRL's own `GRPOConfig` and `GRPOTrainer`; the reward functions come wrapped so every scored
# batch also reaches the sample log (`RUN/grpo/samples.jsonl`), the monitor and the collapse
# detector. `kit.attach(trainer)` adds the rest of the kit's bookkeeping: the reward curriculum
# (`grpo.curriculum`), the settings the trainer really uses (`RUN/grpo/effective.yaml`), the
# checkpoint it resumes from (`trainer.kit_phase.resume`), the live training view.

# %%
from trl import GRPOConfig, GRPOTrainer

args = GRPOConfig(**kit.args)
trainer = GRPOTrainer(
    model=model,
    reward_funcs=kit.reward_funcs,
    args=args,
    train_dataset=kit.train_dataset,
    processing_class=tokenizer,
    callbacks=kit.callbacks,
)
kit.attach(trainer)
stages.show_args(trainer)

# %% [markdown]
# ## Train

# %%
trainer.train(resume_from_checkpoint=trainer.kit_phase.resume)  # None: from step 0

# %% [markdown]
# ## Save the adapter
# `RUN/grpo/adapter/`, the log, sampled completions with every reward, and the curves. A preset
# with several GRPO stages (e.g. `ref-full`: sparse, then dense rewards) trains the later ones
# here, each from the previous adapter.

# %%
grpo_adapter = stages.save_grpo(run, trainer, data_dir)
stages.show_training(run.paths.phase_dir("grpo"))

# %% [markdown]
# ## Evaluate the SFT→GRPO model

# %%
grpo = stages.evaluate_model(run, "grpo", data_dir, adapter=grpo_adapter)
stages.show_result(grpo, "SFT→GRPO")

# %%
stages.show_samples(grpo, "SFT→GRPO")

# %% [markdown]
# ## SFT→GRPO + constrained decoding
# The same prompts through the syllable-constrained decoder, reported beside the free-sampling
# row above, never instead of it. Runs when the preset's `eval.constrained` is on.

# %%
grpo_constrained = stages.evaluate_model(run, "grpo", data_dir, adapter=grpo_adapter,
                                         constrained=True)
if grpo_constrained is not None:
    stages.show_result(grpo_constrained, "SFT→GRPO + constrained")

# %% [markdown]
# ## Try it
# One haiku per topic from the trained model: one free sample (what the table above measures)
# and one through the constrained decoder, with the verifier's syllables per line. `model` is
# the trained model itself; `haiku_kit.generate.write.write_haiku(topic, model, tokenizer, k=8)` picks the best
# of 8.

# %%
tried = stages.show_tried(model, tokenizer, try_topics)

# %% [markdown]
# ## Save & share
# Always writes a model card (base model, data, rewards, hyperparameters, the eval table,
# versions, usage) into the adapter folder. `export_merged` / `export_gguf` also write merged
# weights / a GGUF to `RUN/export/grpo/`, re-scored beside the adapter. `push_to` uploads the
# result to the Hub (the token comes from `HF_TOKEN` or `hf auth login`, never from here);
# the same as `haiku-kit export RUN --merged --gguf q8_0 --push user/repo`.

# %%
shared = stages.save_and_share(run.paths.root, "grpo", merged=export_merged,
                               gguf=export_gguf or None, push_to=push_to or None)

# %%
print(stages.elapsed(run))

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
