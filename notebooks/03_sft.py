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
resume = None  # None: the newest checkpoint, if any; "latest"; a checkpoint path
fresh: bool = False  # True: start over, old checkpoints moved aside; "delete": deleted

# %%
from haiku_kit import stages

run = stages.open_run(preset, overrides, stages.on_drive(run_dir, drive), resume, fresh)
data_dir = run.path("data_dir", data_dir)

# %% [markdown]
# ## More than one GPU
# A notebook kernel is one process, so this notebook trains on one GPU. To train this SFT stage
# on several, run the command below in a terminal: `accelerate launch` starts one process per GPU
# with the kit's DDP config (`haiku_kit/resources/accelerate/`: DeepSpeed and FSDP configs there
# too), the main process writes the run folder, and the next notebook continues from it. The
# cell only prints the command; it launches nothing. Details: `docs/scale-out.md`.

# %%
print(stages.launch_command(run, "sft"))  # one process per GPU here, at least 2

# %% [markdown]
# ## The model
# `model, tokenizer` are the real transformers + peft objects (Unsloth's on a GPU preset): the
# preset's model with a fresh LoRA adapter.

# %%
model, tokenizer = stages.load_model(run)

# %% [markdown]
# ## What the trainer is built from
# The kit turns the preset's `sft.*` settings into `SFTConfig`'s keyword arguments: `kit.args`,
# a plain dict, shown below. Change any before the next cell, e.g. `kit.args["max_steps"] = 20`.
# `kit.train_dataset` is the sft split formatted for the loss mask: with `assistant` masking, a
# chat `messages` column and TRL computes the loss on the assistant's turn (the poem) only; with
# `completion`, `prompt`/`completion` columns and the loss on the completion only.
# `kit.callbacks` writes the training log.

# %%
from pprint import pp

kit = stages.sft_setup(run, model, tokenizer, data_dir)
print(f"loss mask: {kit.loss_mask}; {len(kit.train_dataset)} training rows")
pp(kit.args)  # SFTConfig's keyword arguments

# %% [markdown]
# ## The trainer
# TRL's own `SFTConfig` and `SFTTrainer`. `kit.attach(trainer)` adds the kit's bookkeeping: the
# settings the trainer really uses (`RUN/sft/effective.yaml`), the checkpoint it resumes from
# (`trainer.kit_phase.resume`), the live training view. Everything is in `trainer.args`.

# %%
from trl import SFTConfig, SFTTrainer

args = SFTConfig(**kit.args)
trainer = SFTTrainer(
    model=model,
    args=args,
    train_dataset=kit.train_dataset,
    processing_class=tokenizer,
    callbacks=kit.callbacks,
)
kit.attach(trainer)
stages.show_args(trainer)

# %% [markdown]
# One training example as the trainer sees it: the chat template applied, then tokenized; the
# mask marks the tokens the loss is computed on.

# %%
example = trainer.train_dataset[0]
print(tokenizer.decode(example["input_ids"]))
# the columns and their lengths (print `example` itself to see every id)
print({key: len(value) if isinstance(value, list) else value for key, value in example.items()})

# %% [markdown]
# ## Train

# %%
trainer.train(resume_from_checkpoint=trainer.kit_phase.resume)  # None: from step 0

# %% [markdown]
# ## Save the adapter
# `RUN/sft/adapter/` (LoRA, safetensors), the training log and curves, and the settings the
# trainer really used (`RUN/sft/effective.yaml`).

# %%
sft_adapter = stages.save_sft(run, trainer)
stages.show_training(run.paths.phase_dir("sft"))

# %% [markdown]
# ## Self-distillation (presets with `distill.topics` > 0 or a `distill.corpus`)
# The SFT model writes one poem per training topic through the syllable-constrained decoder, the
# verifier keeps the valid, on-topic ones, and SFT continues on those poems alone: the model
# learns which of its own lines land on 5-7-5. `distill_trainer` is TRL's `SFTTrainer` again
# (None when the preset does not distil). `distill.rounds` repeats it, each round sampling from
# the model the last one trained (expert iteration). The plain SFT adapter is kept in
# `RUN/sft/distill/sft-adapter`, each round's in `RUN/sft/distill/round-N/adapter`, and the last
# one becomes `RUN/sft/adapter`. The evaluation below samples freely: the decoder only made
# training data. `distill.max_word_syllables: 1` has the decoder write one-syllable words only,
# so a line's syllable count is its word count, which the model learns far more easily (one
# number, or one per round); `distill.topic_words: true` still lets each poem use its own
# topic's longer words; `distill.clean_line_ends: true` keeps lines from ending on "the" or "of";
# `distill.extra_topics: embedded` adds prompt-only topics of everyday feelings and situations.
# `distill.corpus: embedded` has round 1 read its poems instead of sampling them: the verified
# poems `cpu-full`'s GRPO model wrote. They count right and read as filler ("... on the hill,
# then the"), and they taught it: `cpu-demo` no longer distils (research/log.md J6), and
# `distill.judge: true` keeps only the poems the judge passes.

# %%
for round_ in range(1, run.cfg.distill.rounds + 1):
    distill_trainer = stages.distill_trainer(run, model, tokenizer, data_dir, round_)
    if distill_trainer is None:  # the preset does not distil
        break
    stages.show_args(distill_trainer)
    distill_trainer.train(resume_from_checkpoint=distill_trainer.kit_phase.resume)
    sft_adapter = stages.save_distill(run, distill_trainer)
    stages.show_training(distill_trainer.kit_phase.folder)

# %% [markdown]
# ## Evaluate the SFT model

# %%
sft = stages.evaluate_model(run, "sft", data_dir, adapter=sft_adapter)
stages.show_result(sft, "SFT")

# %%
stages.show_samples(sft, "SFT")

# %% [markdown]
# ## SFT + constrained decoding
# The same prompts through the syllable-constrained decoder, which lets through only tokens that
# keep each line able to land on 5-7-5. This row is reported beside the free-sampling row above,
# never instead of it: it measures what the decoder adds, not what SFT taught. Runs when the
# preset's `eval.constrained` is on.

# %%
sft_constrained = stages.evaluate_model(run, "sft", data_dir, adapter=sft_adapter, constrained=True)
if sft_constrained is not None:
    stages.show_result(sft_constrained, "SFT + constrained")

# %%
print(stages.elapsed(run))
