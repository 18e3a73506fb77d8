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
}

# model-specific floors that override the table above, with the reason
MODEL_SQNR_DB: Dict[Tuple[str, str, str], Tuple[float, str]] = {}

# (target, precision, model) -> reason it is not run
EXCLUDE: Dict[Tuple[str, str, str], str] = {}

CALIBRATION_SAMPLES = 24
HOLDOUT_SAMPLES = 6
