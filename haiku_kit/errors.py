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
