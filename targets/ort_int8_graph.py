"""Where the onnxruntime target keeps nodes float beyond what the recipe and the mixed-precision search name.

onnxruntime's CPU kernels decide what an int8 Q/DQ graph costs, and a few placements cost far more than the
float graph they replace.  Measured with onnxruntime's profiler on the optimized graph of the MTCNN O-Net
package (mixed precision keeps its first convolution float): ``Conv → PRelu → MaxPool → conv(int8)``.  With
a QuantizeLinear before it the MaxPool runs on uint8 in NCHW layout — onnxruntime's generic pooling loop,
404 µs of the package's 937 µs of kernel time, against ~7 µs for the same pool in float (NCHWc) or in uint8
NHWC.  (onnxruntime's own QDQ propagation moved the QuantizeLinear there; the package turns it off, see
``targets.onnxruntime.INT8_DISABLED_OPTIMIZERS``; :func:`pools_after_float` keeps the quantizer from
putting one there itself.)
"""
from __future__ import annotations

from typing import Any, Collection, List, Tuple

#: op types onnxruntime's quantize_static quantizes by default (its QDQ and QLinear registries); read lazily
_QUANTIZABLE: Tuple[str, ...] = ()


def quantizable_ops() -> Collection[str]:
    global _QUANTIZABLE
    if not _QUANTIZABLE:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        _QUANTIZABLE = tuple(sorted(set(QDQRegistry) | set(QLinearOpsRegistry)))
    return _QUANTIZABLE


def pools_after_float(model: Any, excluded: Collection[str]) -> List[str]:
    """MaxPools to keep float: those that read a float tensor (a graph input, or the output of a node that is
    excluded, has no int8 kernel, or is such a pool itself).

    Quantized, such a pool starts with a QuantizeLinear and runs on uint8 in NCHW layout unless a
    neighbouring int8 convolution draws it into NHWC.  Kept float, the QuantizeLinear the int8 reader needs
    comes after the pool, on a quarter of the elements; the numbers are the same (the maximum commutes with
    rounding).
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
