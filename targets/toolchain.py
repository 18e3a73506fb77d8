"""Importing a target's toolchain lazily, and reading its errors (shared by every target)."""
from __future__ import annotations

import importlib
from typing import Any

from edgekit._validate import first_line
from edgekit.errors import RuntimeMissingError

__all__ = ["first_line", "require"]


def require(module: str, what: str, extra: str) -> Any:
    """``import module``, or one error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissingError(f"{what} needs {module.split('.')[0]} ({exc}); pip install 'edgekit[{extra}]'") \
            from None
