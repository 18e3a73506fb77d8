"""Runners, one per runtime, found by name through the ``edgekit.runners`` entry points."""
from __future__ import annotations

from ..registry import Registry
from .base import Runner, missing_runtime

RUNNERS: "Registry[type]" = Registry(
    "runner",
    "edgekit.runners",
    builtins={
        "onnxruntime": "edgekit.runners.onnxruntime:OnnxRuntimeRunner",
        "openvino": "edgekit.runners.openvino:OpenVinoRunner",
        "qnn": "edgekit.runners.qnn:QnnRunner",
        "tensorrt": "edgekit.runners.tensorrt:TensorRTRunner",
        "onnxruntime-gpu": "edgekit.runners.onnxruntime_gpu:OnnxRuntimeGpuRunner",
    },
)

__all__ = ["RUNNERS", "Runner", "missing_runtime"]
