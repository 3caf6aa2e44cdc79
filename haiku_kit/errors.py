"""Errors the kit raises on bad input. Each message names the row, file or argument at fault."""


class HaikuKitError(Exception):
    """Base class for the kit's own errors."""


class DataError(HaikuKitError, ValueError):
    """A dataset file, row or column is malformed or missing."""


class ConfigError(HaikuKitError, ValueError):
    """A preset, override or setting is wrong."""


class ModelLoadError(HaikuKitError, RuntimeError):
    """A model, backend, adapter or checkpoint cannot be loaded."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. `checkpoint` is the folder saved on the way out, or None when
    nothing was saved (e.g. interrupted while the model was still loading)."""

    def __init__(self, checkpoint: str | None = None, step: int | None = None):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint
        self.step = step


# The optional modules the kit imports, and the extra of pyproject.toml that installs each.
EXTRAS: dict[str, str] = {
    "papermill": "notebooks", "jupytext": "notebooks", "nbformat": "notebooks",
    "nbclient": "notebooks", "ipykernel": "notebooks", "jupyter_client": "notebooks",
    "IPython": "notebooks",
    "unsloth": "gpu", "unsloth_zoo": "gpu", "xformers": "gpu", "bitsandbytes": "gpu",
    "vllm": "vllm", "tensorboard": "track", "trackio": "track", "gradio": "app",
    "wordfreq": "dev",  # verify.judge.slor, the judge validation benchmark's comparison
}


def missing_extra(err: ImportError) -> str | None:
    """One line for a missing optional module: which extra installs it. None when `err` is not
    about one of the kit's optional modules (a broken install is not hidden behind a hint)."""
    top = (getattr(err, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return (f"{top} is not installed; it comes with the [{extra}] extra: "
            f"pip install \"haiku-kit[{extra}]\"")
