"""The tflite target: edgekit's own ONNX → TFLite lowering and its precision passes.

Modules: :mod:`.ir` (subgraph + flatbuffer writer), :mod:`.context` (layout
tracking), ``ops_*`` (one file per op family), :mod:`.optable` (the op table
as data), :mod:`.lower` (the driver), :mod:`.fp16`, :mod:`.calibrate`,
:mod:`.quantize` (full int8), :mod:`.target` (the :class:`TfliteTarget`).
"""
from __future__ import annotations

from .target import TfliteTarget

__all__ = ["TfliteTarget"]
