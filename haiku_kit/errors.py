"""Errors the kit raises on bad input. Each message names the row, file or argument at fault."""


class HaikuKitError(Exception):
    """Base class for the kit's own errors."""


class DataError(HaikuKitError, ValueError):
    """A dataset file, row or column is malformed or missing."""


class ConfigError(HaikuKitError, ValueError):
    """A preset, override or setting is wrong."""


class ModelLoadError(HaikuKitError, RuntimeError):
    """A model, backend, adapter or checkpoint cannot be loaded."""
