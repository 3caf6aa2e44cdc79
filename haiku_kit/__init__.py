"""haiku-kit: teach a small instruction model to write English haiku."""

import importlib.util as _importlib_util
import sys as _sys
import warnings as _warnings

__version__ = "0.1.0"


def _unsloth_comes_too_late() -> None:
    """On a GPU install (unsloth present), say at once when transformers/trl/peft were imported
    before unsloth: Unsloth can no longer patch them, and only a restart fixes that."""
    if "unsloth" in _sys.modules or _importlib_util.find_spec("unsloth") is None:
        return
    from haiku_kit.model.backends import unsloth_import_order_problem

    problem = unsloth_import_order_problem(_sys.modules)
    if problem:
        _warnings.warn(f"haiku_kit: {problem}", stacklevel=3)


_unsloth_comes_too_late()
