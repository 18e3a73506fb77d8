"""Runners, one per runtime, found by name through the ``edgekit.runners`` entry points."""
from __future__ import annotations

from ..registry import Registry
from .base import Runner, missing_runtime

RUNNERS: "Registry[type]" = Registry(
    "runner",
    "edgekit.runners",
    builtins={"onnxruntime": "edgekit.runners.onnxruntime:OnnxRuntimeRunner"},
)

__all__ = ["RUNNERS", "Runner", "missing_runtime"]
