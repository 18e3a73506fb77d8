"""Core ML target (iPhone / iPad / Mac): ONNX → MIL lowering, compression, Neural Engine report."""
from __future__ import annotations

from .target import CoreMLTarget

__all__ = ["CoreMLTarget"]
