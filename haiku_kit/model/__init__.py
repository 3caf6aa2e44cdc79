"""Models: backends (Unsloth / transformers), loading with LoRA, the chat format, the embedded model, GGUF."""
