"""The Core ML runners: ``coreml`` (Core ML itself, macOS) and ``coreml-reference`` (numpy, any OS).

``runner`` (the macOS runner), ``reference`` (the numpy interpreter of a saved
ML Program and its runner), ``program`` (reads an ``.mlpackage``: spec and
weight blob), ``kernels`` (numpy kernels of the MIL operations) and
``features`` (manifest tensors ↔ Core ML features, image inputs).  Imports
numpy only; coremltools is imported when a package is opened.
"""
from __future__ import annotations

from .reference import CoreMLReferenceRunner, MilInterpreter, ReferencePrecision
from .runner import ComputeUnits, CoreMLRunner

__all__ = ["ComputeUnits", "CoreMLReferenceRunner", "CoreMLRunner", "MilInterpreter", "ReferencePrecision"]
