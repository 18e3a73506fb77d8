"""Importing a target's toolchain lazily, and reading its errors (shared by every target)."""
from __future__ import annotations

import importlib
from typing import Any

from edgekit.errors import RuntimeMissingError


def require(module: str, what: str, extra: str) -> Any:
    """``import module``, or one error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissingError(f"{what} needs {module.split('.')[0]} ({exc}); pip install 'edgekit[{extra}]'") \
            from None


def first_line(err: BaseException) -> str:
    """The first meaningful line of a toolchain's error (they append C++ source paths and checks)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
    return (lines[0] if lines else type(err).__name__)[:300]
