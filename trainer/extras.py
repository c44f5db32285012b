"""Optional packages (pyproject's extras): imported when a feature that needs one is used.

A tracker or a picture asked for without its package is refused with the extra to install,
rather than failing with an ImportError deep inside a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from trainer.errors import MissingExtraError


def import_extra(module: str, extra: str, what: str, key: str | None = None) -> ModuleType:
    """``module``, imported; MissingExtraError (exit 2) naming ``extra`` if it is not installed.
    Any ImportError counts: a package half installed cannot be used either."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(what, module.split(".")[0], extra, key=key) from err
