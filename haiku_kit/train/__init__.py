"""Training with TRL: shared trainer plumbing, checkpoints, callbacks, rewards, curricula, SFT, distillation, GRPO."""
