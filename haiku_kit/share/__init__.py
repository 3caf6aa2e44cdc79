"""Sharing a trained run: merged weights or GGUF, the model card, an optional push."""
