"""Build side: one compiler per target, device profiles and the build pipeline.

Import direction is one way: ``edgekit`` (device side) ← ``quantize`` ← ``targets``.
"""
from __future__ import annotations

from edgekit.registry import Registry

from .base import Artifact, BuildJob, BuildSpec, CheckFindings, Precision, SupportReport, Target, UnsupportedNode
from .optable import OpRule, OpTable

TARGETS: "Registry[type]" = Registry(
    "target",
    "edgekit.targets",
    builtins={
        "onnxruntime": "edgekit.targets.onnxruntime:OnnxRuntimeTarget",
        "openvino": "edgekit.targets.openvino:OpenVinoTarget",
        "qnn": "edgekit.targets.qnn:QnnTarget",
        "tensorrt": "edgekit.targets.tensorrt:TensorRTTarget",
        "coreml": "edgekit.targets.coreml:CoreMLTarget",
        "tflite": "edgekit.targets.tflite:TfliteTarget",
    },
)

__all__ = ["TARGETS", "Artifact", "BuildJob", "BuildSpec", "CheckFindings", "OpRule", "OpTable", "Precision",
           "SupportReport", "Target", "UnsupportedNode"]
