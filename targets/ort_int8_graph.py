"""A rewrite of the graph the onnxruntime target hands to ``quantize_static`` (int8 only): division by a
constant becomes multiplication by its reciprocal, so that it gets an int8 kernel.

onnxruntime's quantizer has no int8 Div, so every exported hard-swish ``x * Clip(x + 3, 0, 6) / 6`` (PP-OCR's
MobileNetV3 and PP-LCNet backbones: 18 in the text-line classifier, 24 in PP-OCRv4 det, 28 in rec) left a
float Div between int8 layers: DequantizeLinear → Div → QuantizeLinear, three nodes and two conversions for
one scaling, which the profile of the text-line classifier's optimized graph shows beside every hard-swish.
As ``Mul(x, 1/c)`` it runs as one QLinearMul.  The rounding points stay where they were: the product was
already rounded before the Div, and the Div's output was rounded by the int8 layer that reads it; the
reciprocal, a scalar, is exact in its own 8-bit encoding (its range is [0, 1/c]), and ``x * (1/c)`` differs
from ``x / c`` by at most one float32 ulp.

A division whose dividend comes from a float node (a layer the recipe or the mixed-precision search keeps
float, an op with no int8 kernel, a graph input) stays float: quantizing it alone would add a rounding the
search never measured and a conversion pair that buys no int8 kernel.
"""
from __future__ import annotations

from typing import Any, Collection, Dict, List, Tuple

#: op types onnxruntime's quantize_static quantizes by default (its QDQ and QLinear registries); read lazily
_QUANTIZABLE: Tuple[str, ...] = ()


def quantizable_ops() -> Collection[str]:
    global _QUANTIZABLE
    if not _QUANTIZABLE:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        _QUANTIZABLE = tuple(sorted(set(QDQRegistry) | set(QLinearOpsRegistry)))
    return _QUANTIZABLE


def divisions_as_products(model: Any, excluded: Collection[str]) -> Tuple[List[str], List[str]]:
    """Rewrite, in place, every ``Div(x, c)`` with a constant ``c`` free of zeros into ``Mul(x, 1/c)``.

    Returns (the nodes rewritten, those of them to keep float — their dividend's producer is float, see the
    module docstring — for the quantizer's ``nodes_to_exclude``).  Node names are kept.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits: Dict[str, Any] = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    quantizable = set(quantizable_ops())
    skip = set(excluded)
    rewritten: List[str] = []
    keep_float: List[str] = []
    for node in graph.node:
        if node.op_type != "Div" or (node.domain or "") not in ("", "ai.onnx") or len(node.input) != 2 \
                or node.input[1] not in inits or not node.name:
            continue
        c = numpy_helper.to_array(inits[node.input[1]])
        if c.dtype != np.float32 or c.size == 0 or not np.all(np.isfinite(c)) or np.any(c == 0):
            continue
        name = f"{node.name}_reciprocal"
        while name in inits:
            name += "_"
        inits[name] = numpy_helper.from_array((np.float32(1.0) / c).astype(np.float32), name)
        graph.initializer.append(inits[name])
        node.op_type = "Mul"
        node.input[1] = name
        rewritten.append(node.name)
        src = producer.get(node.input[0])
        if src is None or src.name in skip or src.op_type not in quantizable or (src.domain or "") not in ("", "ai.onnx"):
            keep_float.append(node.name)
    return rewritten, keep_float


def pools_after_float(model: Any, excluded: Collection[str]) -> List[str]:
    """MaxPools to keep float: those that read a float tensor (a graph input, or the output of a node that is
    excluded, has no int8 kernel, or is such a pool itself).

    Quantized, such a pool starts with a QuantizeLinear and runs on uint8 in NCHW layout — onnxruntime's
    generic pooling loop (MTCNN O-Net's first pool: 404 µs, against ~7 µs in float) unless a neighbouring
    int8 convolution draws it into NHWC.  Kept float, the QuantizeLinear the int8 reader needs comes after
    the pool, on a quarter of the elements; the numbers are the same (the maximum commutes with rounding).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    quantizable = set(quantizable_ops())
    floating = set(excluded)
    kept: List[str] = []
    for node in model.graph.node:  # topological order: a chain of pools follows its first
        if node.op_type != "MaxPool" or (node.domain or "") not in ("", "ai.onnx") or not node.name \
                or node.name in floating:
            continue
        src = producer.get(node.input[0])
        if src is None or src.name in floating or src.op_type not in quantizable \
                or (src.domain or "") not in ("", "ai.onnx"):
            kept.append(node.name)
            floating.add(node.name)
    return kept
