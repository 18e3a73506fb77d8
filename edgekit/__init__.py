"""edgekit: one ONNX model, quantized and compiled per device family, run with one contract.

``import edgekit`` is cheap: it imports no ML runtime and no build-side
library; ``load``, ``build`` and friends are resolved on first use.
"""
from __future__ import annotations

from typing import Any

from .errors import (
    CalibrationError,
    ConfigError,
    EdgekitError,
    GateError,
    InputError,
    ManifestError,
    ModelError,
    PackageError,
    RuntimeMissingError,
    UnsupportedModelError,
)

__version__ = "0.1.0"


__all__ = [
    "__version__",
    "load",
    "build",
    "Model",
    "EdgekitError",
    "ConfigError",
    "ManifestError",
    "PackageError",
    "InputError",
    "ModelError",
    "UnsupportedModelError",
    "CalibrationError",
    "GateError",
    "RuntimeMissingError",
]

_LAZY = {
    "load": ("edgekit.model", "load"),
    "Model": ("edgekit.model", "Model"),
    "build": ("edgekit.targets.pipeline", "build"),
}


def __getattr__(name: str) -> Any:  # PEP 562: defer numpy and friends to first use
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
