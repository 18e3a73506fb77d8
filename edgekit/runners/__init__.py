"""Runners, one per runtime, found by name through the ``edgekit.runners`` entry points."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..registry import Registry
from .base import Runner, missing_runtime

#: the runners that ship with edgekit (the same as pyproject's ``edgekit.runners`` entry points, which a
#: test checks; the map lets a source checkout without an install find them)
BUILTINS: Dict[str, str] = {
    "onnxruntime": "edgekit.runners.onnxruntime:OnnxRuntimeRunner",
    "openvino": "edgekit.runners.openvino:OpenVinoRunner",
    "qnn": "edgekit.runners.qnn:QnnRunner",
    "tensorrt": "edgekit.runners.tensorrt:TensorRTRunner",
    "onnxruntime-gpu": "edgekit.runners.onnxruntime_gpu:OnnxRuntimeGpuRunner",
    "coreml": "edgekit.runners.coreml:CoreMLRunner",
    "coreml-reference": "edgekit.runners.coreml.reference:CoreMLReferenceRunner",
    "tflite": "edgekit.runners.tflite:TfliteRunner",
}

RUNNERS: "Registry[type]" = Registry("runner", "edgekit.runners", builtins=BUILTINS)


def describe_options(name: str) -> List[Dict[str, Any]]:
    """The options of runner ``name`` (name, type, default, range, help) without importing its runtime.

    Runner modules import their SDK only when a runner is created, so this
    works on a machine that lacks the runtime (``edgekit targets --json``).
    """
    return RUNNERS.get(name).options.describe()


def describe_all_options() -> Dict[str, Any]:
    """``{runner: its options}`` for every registered runner; a plug-in that fails to import gets
    ``{"error": ...}`` instead of hiding the others."""
    out: Dict[str, Any] = {}
    for name in RUNNERS.names():
        try:
            out[name] = describe_options(name)
        except Exception as exc:  # noqa: BLE001 - a broken third-party plug-in must not break the listing
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def resolved_options(manifest: Any, runtime: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """The options ``edgekit.load(pkg)`` would run a package with, without loading it: per option its
    value and where it comes from (``package`` or ``default``), for ``edgekit inspect``."""
    import enum

    cls = RUNNERS.get(runtime or manifest.runtime)
    values, sources = cls.resolve_options(manifest, {})
    return {name: {"value": value.value if isinstance(value, enum.Enum) else value, "from": sources[name]}
            for name, value in values.items()}


__all__ = ["BUILTINS", "RUNNERS", "resolved_options", "Runner", "describe_all_options", "describe_options", "missing_runtime"]
