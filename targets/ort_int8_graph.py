"""Where the onnxruntime target keeps nodes float beyond what the recipe and the mixed-precision search name.

onnxruntime's CPU kernels decide what an int8 Q/DQ graph costs, and a few placements cost far more than the
float graph they replace.  Measured with onnxruntime's profiler on the optimized graph of the MTCNN O-Net
package (mixed precision keeps its first convolution float): ``Conv → PRelu → MaxPool → conv(int8)``.  With
a QuantizeLinear before it the MaxPool runs on uint8 in NCHW layout — onnxruntime's generic pooling loop,
404 µs of the package's 937 µs of kernel time, against ~7 µs for the same pool in float (NCHWc) or in uint8
NHWC.  (onnxruntime's own QDQ propagation moved the QuantizeLinear there; the package turns it off, see
``targets.onnxruntime.INT8_DISABLED_OPTIMIZERS``; :func:`pools_after_float` keeps the quantizer from
putting one there itself.)

The same profile of PP-LCNet (every layer int8) shows each hard-swish ``x * HardSigmoid(x)`` running as
DequantizeLinear, a float HardSigmoid and QuantizeLinear before its QLinearMul — onnxruntime has no int8
HardSigmoid — 1.5 ms of 4.2 ms of kernel time; :func:`hardsigmoid_as_requantize` gives it one.

And a float 1-D convolution never reaches MLAS's blocked (NCHWc) kernels: Silero VAD's package, whose STFT
and encoder convolutions mixed precision keeps float, spent 1.65 of 2.1 ms in them on im2col and one small
GEMM per batch item; :func:`conv1d_as_conv2d` hands them to onnxruntime as 2-D convolutions.
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


def hardsigmoid_as_requantize(model: Any, excluded: Collection[str]) -> List[str]:
    """Rewrite, in place, ``DequantizeLinear → HardSigmoid(α, β) → QuantizeLinear`` (uint8 output on
    [0, 1]: scale 1/255, zero point 0 — the natural range every int8 build gives a HardSigmoid) into
    ``DequantizeLinear → Add(b) → QuantizeLinear(scale 1/(255 α), zero point ⌊255 β⌋)``; the HardSigmoids
    rewritten (their names are kept, now on the Add).

    onnxruntime has no int8 HardSigmoid, so each PP-LCNet / MobileNetV3 hard-swish ``x * HardSigmoid(x)``
    ran as DequantizeLinear, a float HardSigmoid and QuantizeLinear before its QLinearMul (PP-LCNet, all
    int8: 1.5 ms of 4.2 ms of kernel time in those three, more than its 32 convolutions).  The output codes
    are the same: ``round(255 (α x + β))`` saturated to [0, 255] is the clip to [0, 1], and with
    ``b = (255 β − ⌊255 β⌋) / (255 α)`` the new quantizer computes ``round(255 α (x + b)) + ⌊255 β⌋``, the
    same number; the pair fuses into one QLinearAdd.  Up to float rounding of the scale products: a code
    within ~1e-7 of a tie may round the other way (PP-LCNet, all int8: 0.72x the CPU time, bit-identical
    outputs on random inputs, but one output code in 255 differs on its 5 held-out images, 26.4 → 26.1 dB).
    A HardSigmoid the recipe or the search keeps float is left alone, as is one whose output is read by
    anything but its quantizer or is quantized otherwise.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    skip = set(excluded)

    def scalar(name: str) -> Any:
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    rewritten: List[str] = []
    new_nodes: List[Any] = []
    for node in graph.node:
        if node.op_type != "HardSigmoid" or (node.domain or "") not in ("", "ai.onnx") or not node.name \
                or node.name in skip:
            continue
        src = producer.get(node.input[0])
        readers = consumers.get(node.output[0], [])
        if src is None or src.op_type != "DequantizeLinear" or len(readers) != 1 or node.output[0] in outputs:
            continue
        q = readers[0]
        if q.op_type != "QuantizeLinear" or len(q.input) < 3:
            continue
        scale, zp = scalar(q.input[1]), scalar(q.input[2])
        if scale is None or zp is None or scale.size != 1 or zp.dtype != np.uint8 or int(zp.reshape(())) != 0 \
                or not np.isclose(float(scale.reshape(())), 1.0 / 255.0, rtol=1e-6, atol=0.0):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        if alpha <= 0.0 or not 0.0 <= beta <= 1.0:
            continue
        offset = int(np.floor(255.0 * beta))
        b = (255.0 * beta - offset) / (255.0 * alpha)
        base = node.name
        # b as an exact 8-bit constant (code 255 at scale b/255; code 0 when b is 0) for the QLinearAdd fusion
        b_scale = np.float32(b / 255.0) if b > 0 else np.float32(1.0)
        b_code = np.uint8(255 if b > 0 else 0)
        for name, value in ((f"{base}_b_quantized", np.array(b_code)), (f"{base}_b_scale", np.array(b_scale)),
                            (f"{base}_b_zero_point", np.array(np.uint8(0))),
                            (f"{base}_requant_scale", np.array(np.float32(1.0 / (255.0 * alpha)))),
                            (f"{base}_requant_zero_point", np.array(np.uint8(offset)))):
            graph.initializer.append(numpy_helper.from_array(value, name))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{base}_b_quantized", f"{base}_b_scale",
                                                               f"{base}_b_zero_point"], [f"{base}_b"],
                                          name=f"{base}_b_DequantizeLinear"))
        node.op_type = "Add"
        del node.attribute[:]
        node.input.append(f"{base}_b")
        q.input[1], q.input[2] = f"{base}_requant_scale", f"{base}_requant_zero_point"
        rewritten.append(base)
    if new_nodes:
        nodes = new_nodes + list(graph.node)  # constants' dequantizers first: the order stays topological
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def conv1d_as_conv2d(model: Any, names: Collection[str]) -> Tuple[List[str], List[str]]:
    """Rewrite, in place, the float 1-D convolutions named in ``names`` as 2-D ones on a height-1 image:
    ``Squeeze(Conv2d(Unsqueeze(x), W[:, :, None, :]))``, input channels zero-padded to a multiple of 4
    where that decides onnxruntime's layout, and a chain of them 4-D throughout (:func:`_stay_2d`); the
    convolutions rewritten and the helper nodes written (the caller keeps them float too).

    onnxruntime's NCHWc transformer, which gives a float convolution MLAS's blocked kernels, takes only
    4-D weights (and, past the first layer, input channels in multiples of 4); a 1-D convolution runs as
    im2col plus one small GEMM per batch item instead.  Silero VAD's int8 package keeps three of them float
    (the mixed-precision search found their int8 versions lose the model: the STFT convolution's input is
    the raw signal, ``encoder.0``'s the STFT magnitude, ~45 dB apart within a window), and they took 1.65 of
    its 2.1 ms of kernel time, one thread.  As 2-D (one thread, the same shapes): the STFT convolution 461 →
    175 µs, ``encoder.1`` (stride 2) 238 → 40 µs, ``encoder.0`` (129 input channels) 392 → 113 µs once
    padded to 132 (unpadded it stays on the slow path).  Exact in fp32 up to summation order (max |Δ| 4e-5
    on outputs up to ~80): the same products, zeros added for the padding.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    opset = next((int(i.version) for i in model.opset_import if (i.domain or "") in ("", "ai.onnx")), 0)
    axes_as_input = opset >= 13
    wanted = set(names)
    helpers: List[str] = []
    rewritten: List[str] = []
    replaced: set = set()  # the 1-D weights given a 2-D copy
    out_nodes: List[Any] = []

    def axes_node(op: str, x: str, y: str, name: str) -> Any:
        if axes_as_input:
            axes = f"{name}/axes"
            graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
            return helper.make_node(op, [x, axes], [y], name=name)
        return helper.make_node(op, [x], [y], name=name, axes=[2])

    for node in list(graph.node):
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if node.name not in wanted or (node.domain or "") not in ("", "ai.onnx") or w is None or len(w.dims) != 3:
            out_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        weight = numpy_helper.to_array(w).astype(np.float32, copy=False)
        channels = weight.shape[1] * group
        # past MLAS's first-layer case (fewer input channels than its block of 8 or 16), NCHWc wants a multiple
        # of 4; a grouped convolution's channels are the model's own business
        extra = (-channels) % 4 if group == 1 and channels >= 8 else 0
        if extra:
            weight = np.concatenate([weight, np.zeros((weight.shape[0], extra, weight.shape[2]), np.float32)], axis=1)
        base = node.name
        replaced.add(w.name)
        w2 = f"{base}/weight_2d"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight[:, :, None, :]), w2))
        x, y = node.input[0], node.output[0]
        x4, y4 = f"{base}/input_2d", f"{base}/output_2d"
        up = axes_node("Unsqueeze", x, x4, f"{base}/as_2d")
        new: List[Any] = [up]
        if extra:
            pads = f"{base}/channel_pads"
            graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), pads))
            new.append(helper.make_node("Pad", [x4, pads], [f"{base}/input_2d_padded"], name=f"{base}/pad_channels"))
            x4 = f"{base}/input_2d_padded"
        node.input[0], node.input[1], node.output[0] = x4, w2, y4
        for a in list(node.attribute):
            v = attrs[a.name]
            if a.name == "kernel_shape":
                a.CopyFrom(helper.make_attribute("kernel_shape", [1, int(v[0])]))
            elif a.name in ("strides", "dilations"):
                a.CopyFrom(helper.make_attribute(a.name, [1, int(v[0])]))
            elif a.name == "pads":
                a.CopyFrom(helper.make_attribute("pads", [0, int(v[0]), 0, int(v[1])]))
        down = axes_node("Squeeze", y4, y, f"{base}/as_1d")
        out_nodes.extend(new + [node, down])
        helpers.extend(n.name for n in new + [down])
        rewritten.append(base)
    if helpers:
        del graph.node[:]
        graph.node.extend(out_nodes)
        helpers_all = set(helpers)
        for gone in _stay_2d(graph, set(helpers)):
            helpers.remove(gone)
        used = {i for n in graph.node for i in n.input}
        # the 1-D weights no node reads any more, and the axes of the helpers _stay_2d dropped
        unused = [t for t in graph.initializer if t.name not in used
                  and (t.name in replaced or t.name.endswith("/axes") and t.name[:-len("/axes")] in helpers_all)]
        for t in unused:
            graph.initializer.remove(t)
    return rewritten, helpers


#: ops that act element by element, whatever the rank: a chain of rewritten convolutions stays 4-D through them
_ELEMENTWISE = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "Elu", "Selu", "Softplus")


def _stay_2d(graph: Any, helpers: Collection[str]) -> List[str]:
    """Between two rewritten convolutions, drop the ``as_1d`` Squeeze and the next ``as_2d`` Unsqueeze (with at
    most one elementwise op between them, then run on the 4-D tensor); the helper names removed.  Only the
    Squeeze/Unsqueeze nodes named in ``helpers`` (the ones :func:`conv1d_as_conv2d` wrote) are candidates.

    Each Squeeze/Unsqueeze pair otherwise makes onnxruntime reorder the NCHWc output back to NCHW and in again
    (Silero's encoder: ~60 µs of reorders between three float convolutions), and an activation between them
    could not fuse into the blocked convolution.
    """
    consumers: dict = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    removed: List[str] = []
    drop = set()
    for sq in list(graph.node):
        if sq.op_type != "Squeeze" or sq.name not in helpers:
            continue
        y = sq.output[0]
        readers = consumers.get(y, [])
        if len(readers) != 1 or y in outputs:
            continue
        act = readers[0] if readers[0].op_type in _ELEMENTWISE and (readers[0].domain or "") in ("", "ai.onnx") \
            else None
        tail = act.output[0] if act is not None else y
        after = consumers.get(tail, []) if act is not None else readers
        if len(after) != 1 or tail in outputs or after[0].op_type != "Unsqueeze" or after[0].name not in helpers:
            continue
        up = after[0]
        if act is not None:  # the activation now reads the 4-D output and writes what the Unsqueeze wrote
            act.input[0], act.output[0] = sq.input[0], up.output[0]
        else:  # the next convolution's input is this one's 4-D output
            for reader in consumers.get(up.output[0], []):
                reader.input[:] = [sq.input[0] if i == up.output[0] else i for i in reader.input]
        drop.update((sq.name, up.name))
        removed.extend((sq.name, up.name))
    if drop:
        kept = [n for n in graph.node if n.name not in drop]
        del graph.node[:]
        graph.node.extend(kept)
    return removed
