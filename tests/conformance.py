"""Conformance data: per-target precisions, tolerances and exclusions (as data, like onnx's BackendTest.exclude).

A target joins the suite by being registered (``edgekit.targets`` entry point)
and adding its rows here.  ``min_sqnr_db`` is the parity floor against the fp32
model on onnxruntime, measured on held-out random-normal feeds; ``EXCLUDE``
maps (target, precision, model) to the reason it is skipped.
"""
from __future__ import annotations

from typing import Dict, Tuple

# (target, precision) -> minimum SQNR (dB) of every output vs fp32 onnxruntime
MIN_SQNR_DB: Dict[Tuple[str, str], float] = {
    ("onnxruntime", "fp32"): 60.0,
    ("onnxruntime", "fp16"): 30.0,
    ("onnxruntime", "int8"): 10.0,
    # openvino: fp32 IR on the CPU plugin (its own kernels, f32 here), fp16-compressed weights, NNCF int8
    ("openvino", "fp32"): 60.0,
    ("openvino", "fp16"): 30.0,
    # bf16 (8-bit mantissa) on CPUs with AVX512-BF16/AMX: its own precision, pinned and verified as such
    ("openvino", "bf16"): 25.0,
    ("openvino", "int8"): 10.0,
    # qnn: onnxruntime-qnn's HTP backend (simulated on x86_64), CPU fallback disabled
    ("qnn", "fp16"): 30.0,
    ("qnn", "int8"): 10.0,
    # tensorrt: the packaged graph on onnxruntime (TensorRT cannot be installed here; see HOST_RUNTIME).
    # fp16 keeps fp32 weights (the FP16 flag acts in the device's engine build), so here it matches fp32;
    # int8 is the explicit Q/DQ graph with Q/DQ reference semantics (measured 22–38 dB on the golden models)
    ("tensorrt", "fp32"): 60.0,
    ("tensorrt", "fp16"): 60.0,
    ("tensorrt", "int8"): 15.0,
    # tflite: edgekit's own lowering on ai-edge-litert with XNNPACK; fp16 weights (fp32 arithmetic),
    # full int8 per the TFLite spec (measured 30–45 dB on random-normal golden inputs)
    ("tflite", "fp32"): 60.0,
    ("tflite", "fp16"): 45.0,
    ("tflite", "int8"): 20.0,
    # coreml: the saved ML Program through the numpy reference executor (coreml-reference); fp16 rounds
    # every value the program types fp16; int8 = int8 per-channel weights with fp16 compute (w8)
    ("coreml", "fp32"): 60.0,
    ("coreml", "fp16"): 30.0,
    ("coreml", "int8"): 25.0,
}

# model-specific floors that override the table above, with the reason
MODEL_SQNR_DB: Dict[Tuple[str, str, str], Tuple[float, str]] = {}

# (target, precision, model) -> reason it is not run
EXCLUDE: Dict[Tuple[str, str, str], str] = {}

CALIBRATION_SAMPLES = 24
HOLDOUT_SAMPLES = 6

# target -> (runtime the suite runs its packages with on this host, why): for targets whose device
# runtime cannot be installed on a Linux CI machine.  The package's own verification runtime options
# (manifest.verification.runtime_options) apply too.
HOST_RUNTIME: Dict[str, Tuple[str, str]] = {
    "tensorrt": ("onnxruntime", "TensorRT is not installable from the package registries; onnxruntime runs "
                                "the same Q/DQ graph"),
    "coreml": ("coreml-reference", "Core ML runs only on macOS/iOS; edgekit's numpy executor interprets the "
                                   "same ML Program"),
}
