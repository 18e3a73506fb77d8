"""Data movement and reductions: Reshape family, Transpose, Concat, Split, Slice, Pad,
Gather, Cast, Resize, Reduce*, ArgMax, Expand, Tile, DepthToSpace/SpaceToDepth."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..lowering import GraphView, Node, const_ints, needs_const
from .context import NHWC, Context, Perm, identity, inverse, permuted, reshape_compatible, tfl_dtype
from .ir import QuantRole

INT32_MAX = 2**31 - 1


# -- reshape family ------------------------------------------------------------
def lower_reshape(ctx: Context, node: Node) -> None:
    """Reshape / Flatten / Squeeze / Unsqueeze: one RESHAPE to the inferred output shape.

    The input is read in ONNX order, which costs nothing when its layout only
    moves size-1 axes (a pooled NHWC [1,1,1,C] is already in NCHW byte order).
    """
    src, out = node.input(0), node.outputs[0]
    shape = ctx.shape(src)
    have = ctx.perm_of(src)
    target = ctx.shape(out)
    if src in ctx.values and reshape_compatible(shape, have):
        x = ctx.values[src][0]
    else:
        out_perm = grouped_reshape_perm(shape, have, target)
        if src in ctx.values and out_perm is not None:
            # merging/splitting axis groups that stay contiguous in the current layout: reshape in place
            x = ctx.values[src][0]
            y = ctx.reshape(x, permuted(target, out_perm), out)
            ctx.define(out, y, out_perm)
            return
        x = ctx.get(src)
    if tuple(ctx.graph.tensors[x].shape) == tuple(target):
        ctx.define(out, x)
        return
    y = ctx.output(out)
    ctx.op("RESHAPE", [x, ctx.int32(f"{node.name}/shape", target)], [y],
           ctx.options("ReshapeOptions", newShape=np.asarray(target, np.int32)), role=QuantRole.SAME)


def _axis_groups(ishape: Sequence[int], oshape: Sequence[int]) -> Optional[List[Tuple[List[int], List[int]]]]:
    """Pair minimal runs of input and output axes (size-1 axes left out) with equal products."""
    ia = [a for a, d in enumerate(ishape) if d != 1]
    oa = [a for a, d in enumerate(oshape) if d != 1]
    groups: List[Tuple[List[int], List[int]]] = []
    i = j = 0
    while i < len(ia) and j < len(oa):
        gi, go = [ia[i]], [oa[j]]
        pi, po = ishape[ia[i]], oshape[oa[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                if i >= len(ia):
                    return None
                gi.append(ia[i])
                pi *= ishape[ia[i]]
                i += 1
            else:
                if j >= len(oa):
                    return None
                go.append(oa[j])
                po *= oshape[oa[j]]
                j += 1
        groups.append((gi, go))
    return groups if i == len(ia) and j == len(oa) else None


def grouped_reshape_perm(ishape: Sequence[int], have: Sequence[int], oshape: Sequence[int]) -> Optional[Perm]:
    """The output layout when a Reshape only merges or splits axis groups that are contiguous and
    in order in the input's layout (``[1,C,H,W] → [1,C,H*W]`` on NHWC gives NLC); else None."""
    groups = _axis_groups(ishape, oshape)
    if groups is None:
        return None
    order = [p for p in have if ishape[p] != 1]
    by_first = {g[0][0]: g for g in groups}
    out: List[int] = []
    k = 0
    while k < len(order):
        g = by_first.get(order[k])
        if g is None or order[k:k + len(g[0])] != g[0]:
            return None
        out.extend(g[1])
        k += len(g[0])
    for a, d in enumerate(oshape):
        if d == 1:
            out.insert(min(a, len(out)), a)
    return tuple(out)


def lower_transpose(ctx: Context, node: Node) -> None:
    """No op: out = in.T(t) is the input's TFLite tensor read with perm inverse(t)[have]."""
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    t = node.attr("perm", list(reversed(range(rank))))
    have = ctx.perm_of(src)
    x = ctx.get(src, have)
    inv_t = inverse(t)
    ctx.define(out, x, tuple(inv_t[h] for h in have))


# -- concat / split / slice ---------------------------------------------------------
def _perm_for(ctx: Context, names: List[str], rank: int) -> Perm:
    for n in names:
        if n and not ctx.view.is_const(n) and len(ctx.shape(n)) == rank:
            return ctx.perm_of(n)
    return identity(rank)


def lower_concat(ctx: Context, node: Node) -> None:
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    names = [n for n in node.inputs if n and int(np.prod(ctx.shape(n))) > 0]
    perm = _perm_for(ctx, names, rank)
    axis = inverse(perm)[int(node.attr("axis")) % rank]
    ins = [ctx.get(n, perm) for n in names]
    y = ctx.output(out, perm)
    if len(ins) == 1:
        ctx.define(out, ins[0], perm)
        return
    ctx.op("CONCATENATION", ins, [y], ctx.options("ConcatenationOptions", axis=axis), role=QuantRole.SAME_ALL)


check_split = needs_const(1, what="split sizes", emitter="TFLite")


def lower_split(ctx: Context, node: Node) -> None:
    src = node.input(0)
    shape = ctx.shape(src)
    rank = len(shape)
    perm = ctx.perm_of(src)
    onnx_axis = int(node.attr("axis", 0)) % rank
    axis = inverse(perm)[onnx_axis]
    sizes = const_ints(ctx.view, node, "split", 1)
    if sizes is None:
        sizes = [ctx.shape(o)[onnx_axis] for o in node.outputs]
    x = ctx.get(src, perm)
    outs = [ctx.output(o, perm) for o in node.outputs]
    axis_t = ctx.const_tensor(f"{node.name}/axis", np.array(axis, np.int32))
    if len(set(sizes)) == 1:
        ctx.op("SPLIT", [axis_t, x], outs, ctx.options("SplitOptions", numSplits=len(outs)), role=QuantRole.SAME)
    else:
        sz = ctx.int32(f"{node.name}/sizes", sizes)
        ctx.op("SPLIT_V", [x, sz, axis_t], outs, ctx.options("SplitVOptions", numSplits=len(outs)),
               role=QuantRole.SAME)


check_slice = needs_const(1, 2, 3, 4, what="starts/ends/axes/steps", emitter="TFLite")


def lower_slice(ctx: Context, node: Node) -> None:
    view = ctx.view
    src, out = node.input(0), node.outputs[0]
    shape = ctx.shape(src)
    rank = len(shape)
    starts = const_ints(view, node, "starts", 1) or []
    ends = const_ints(view, node, "ends", 2) or []
    axes = const_ints(view, node, "axes", 3) or list(range(len(starts)))
    steps = const_ints(view, node, "steps", 4) or [1] * len(starts)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    end_mask = 0
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= rank
        dim = shape[a]
        if st > 0:
            s = min(max(s + dim if s < 0 else s, 0), dim)
            e = min(max(e + dim if e < 0 else e, 0), dim)
        else:
            s = min(max(s + dim if s < 0 else s, 0), dim - 1)
            e = e + dim if e < 0 else e
            if e < 0:
                end_mask |= 1 << a  # up to and including index 0
            e = min(max(e, -1), dim - 1)
        begin[a], end[a], stride[a] = s, e, st
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    mask = sum(1 << i for i, p in enumerate(perm) if end_mask & (1 << p))
    y = ctx.output(out, perm)
    opts = ctx.options("StridedSliceOptions", endMask=mask)
    ctx.op("STRIDED_SLICE", [x, ctx.int32(f"{node.name}/begin", permuted(begin, perm)),
                             ctx.int32(f"{node.name}/end", [max(v, 0) for v in permuted(end, perm)]),
                             ctx.int32(f"{node.name}/strides", permuted(stride, perm))], [y], opts,
           role=QuantRole.SAME)


# -- pad ---------------------------------------------------------------------------
def check_pad(node: Node, view: GraphView) -> Optional[str]:
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect"):
        return f"mode={mode!r}; only constant and reflect pads lower to TFLite"
    pads = const_ints(view, node, "pads", 1)
    if pads is None:
        return "pads computed at run time"
    if any(p < 0 for p in pads):
        return "negative pads (cropping) have no PAD lowering"
    if node.input(3):
        return "Pad with axes has no lowering here"
    if node.input(2) and view.const(node.input(2)) is None:
        return "the pad value is computed at run time"
    return None


def lower_pad(ctx: Context, node: Node) -> None:
    view = ctx.view
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    pads = const_ints(view, node, "pads", 1) or [0] * (2 * rank)
    perm = ctx.perm_of(src)
    paddings = np.array([[pads[p], pads[p + rank]] for p in perm], np.int32)
    x = ctx.get(src, perm)
    y = ctx.output(out, perm)
    pt = ctx.const_tensor(f"{node.name}/paddings", paddings)
    mode = node.attr("mode", "constant")
    value = 0.0
    if node.input(2):
        value = float(np.asarray(view.const(node.input(2))).reshape(-1)[0])
    elif "value" in node.attrs:
        value = float(node.attr("value"))
    if mode == "reflect":
        ctx.op("MIRROR_PAD", [x, pt], [y], ctx.options("MirrorPadOptions", mode=0), role=QuantRole.SAME)
    elif value == 0.0:
        ctx.op("PAD", [x, pt], [y], ctx.options("PadOptions"), role=QuantRole.SAME)
    else:
        dt = ctx.graph.tensors[x].dtype
        v = ctx.const_tensor(f"{node.name}/value", np.array(value).astype(dt))
        ctx.op("PADV2", [x, pt, v], [y], ctx.options("PadV2Options"), role=QuantRole.SAME)


# -- gather / cast -------------------------------------------------------------------
def check_gather(node: Node, view: GraphView) -> Optional[str]:
    if view.const(node.input(1)) is None and view.const(node.input(0)) is None:
        return "data and indices both computed at run time (only constant indices or a constant table lower)"
    return None


def lower_gather(ctx: Context, node: Node) -> None:
    view = ctx.view
    src, out = node.input(0), node.outputs[0]
    shape = ctx.shape(src)
    rank = len(shape)
    onnx_axis = int(node.attr("axis", 0)) % rank
    idx_const = view.const(node.input(1))
    if idx_const is not None:
        idx = np.asarray(idx_const, np.int64)
        idx = np.where(idx < 0, idx + shape[onnx_axis], idx).astype(np.int32)
        perm = ctx.perm_of(src) if idx.ndim <= 1 else identity(rank)
        x = ctx.get(src, perm)
        axis = inverse(perm)[onnx_axis]
        it = ctx.const_tensor(f"{node.name}/indices", idx)
        if idx.ndim == 0:
            kept = [p for p in perm if p != onnx_axis]
            out_perm = tuple(p - (p > onnx_axis) for p in kept)
        else:
            out_perm = perm
        y = ctx.output(out, out_perm if idx.ndim <= 1 else None)
        role = QuantRole.SAME
    else:
        x = ctx.get(src)
        it = ctx.get(node.input(1))
        if ctx.graph.tensors[it].dtype not in ("int32", "int64"):
            it = _cast(ctx, it, "int32", f"{node.input(1)}/int32")
        axis = onnx_axis
        y = ctx.output(out)
        role = QuantRole.SAME
    ctx.op("GATHER", [x, it], [y], ctx.options("GatherOptions", axis=axis), role=role)


def _cast(ctx: Context, src: int, dtype: str, name: str) -> int:
    t = ctx.graph.tensors[src]
    out = ctx.new_tensor(name, t.shape, dtype)
    ctx.op("CAST", [src], [out], role=QuantRole.FLOAT)
    return out


def lower_cast(ctx: Context, node: Node) -> None:
    from onnx import helper

    src, out = node.input(0), node.outputs[0]
    dtype = tfl_dtype(helper.tensor_dtype_to_np_dtype(int(node.attr("to"))))
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    if ctx.graph.tensors[x].dtype == dtype:
        ctx.define(out, x, perm)
        return
    y = ctx.output(out, perm, dtype=dtype)
    ctx.op("CAST", [x], [y], role=QuantRole.FLOAT)


# -- resize ------------------------------------------------------------------------------
def check_resize(node: Node, view: GraphView) -> Optional[str]:
    shape = view.shape(node.input(0))
    out = view.shape(node.outputs[0])
    if shape is None or len(shape) != 4 or out is None:
        return "only 4-D (NCHW) Resize lowers"
    if tuple(shape[:2]) != tuple(out[:2]):
        return "resizing the batch or channel axis has no TFLite lowering"
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if mode not in ("nearest", "linear"):
        return f"mode={mode!r}; TFLite resizes nearest and bilinear only"
    if mode == "nearest":
        nm = node.attr("nearest_mode", "round_prefer_floor")
        ok = {("asymmetric", "floor"), ("half_pixel", "round_prefer_ceil"), ("align_corners", "round_prefer_ceil"),
              ("tf_half_pixel_for_nn", "floor")}
        if (ctm, nm) not in ok:
            # integer upscales pick the same pixels under every rounding rule as under floor/asymmetric
            if not (ctm in ("asymmetric", "half_pixel", "pytorch_half_pixel") and all(
                    o % i == 0 for o, i in zip(out[2:], shape[2:])) and nm in ("floor", "round_prefer_floor")
                    and ctm == "asymmetric"):
                return f"nearest with coordinate_transformation_mode={ctm!r}, nearest_mode={nm!r} has no TFLite lowering"
    elif ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        return f"linear with coordinate_transformation_mode={ctm!r} has no TFLite lowering"
    if node.attr("antialias", 0):
        return "antialias has no TFLite lowering"
    return None


def lower_resize(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    oh, ow = ctx.shape(out)[2:]
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    align = ctm == "align_corners"
    half = ctm in ("half_pixel", "pytorch_half_pixel") or ctm == "tf_half_pixel_for_nn"
    if ctm == "pytorch_half_pixel" and (oh == 1 or ow == 1):
        half = False
    x = ctx.get(src, NHWC)
    y = ctx.output(out, NHWC)
    size = ctx.int32(f"{node.name}/size", [oh, ow])
    if mode == "nearest":
        ctx.op("RESIZE_NEAREST_NEIGHBOR", [x, size], [y],
               ctx.options("ResizeNearestNeighborOptions", alignCorners=align, halfPixelCenters=half),
               role=QuantRole.SAME)
    else:
        ctx.op("RESIZE_BILINEAR", [x, size], [y],
               ctx.options("ResizeBilinearOptions", alignCorners=align, halfPixelCenters=half), role=QuantRole.SAME)


# -- reductions ----------------------------------------------------------------------------
REDUCE = {"ReduceMean": "MEAN", "ReduceSum": "SUM", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN",
          "ReduceProd": "REDUCE_PROD"}


def _reduce_axes(view: GraphView, node: Node, rank: int) -> Optional[List[int]]:
    axes = const_ints(view, node, "axes", 1)
    if axes is None:
        if node.input(1):
            return None
        if node.attr("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(a % rank for a in axes)


def check_reduce(node: Node, view: GraphView) -> Optional[str]:
    shape = view.shape(node.input(0))
    if shape is None:
        return "needs a static input shape"
    if _reduce_axes(view, node, len(shape)) is None:
        return "axes computed at run time"
    return None


def _reduced_perm(perm: Perm, axes: List[int]) -> Perm:
    kept = [p for p in perm if p not in axes]
    return tuple(p - sum(a < p for a in axes) for p in kept)


def lower_reduce(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    axes = _reduce_axes(ctx.view, node, rank) or []
    if not axes:
        ctx.define(out, ctx.get(src, ctx.perm_of(src)), ctx.perm_of(src))
        return
    keep = bool(node.attr("keepdims", 1))
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    inv = inverse(perm)
    y = ctx.output(out, perm if keep else _reduced_perm(perm, axes))
    opcode = REDUCE[node.op_type]
    role = QuantRole.SAME if opcode in ("REDUCE_MAX", "REDUCE_MIN") else QuantRole.FREE
    ctx.op(opcode, [x, ctx.int32(f"{node.name}/axes", sorted(inv[a] for a in axes))], [y],
           ctx.options("ReducerOptions", keepDims=keep), role=role)


def check_argmax(node: Node, view: GraphView) -> Optional[str]:
    if node.attr("select_last_index", 0):
        return "select_last_index=1 has no TFLite lowering"
    return None


def lower_argmax(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    onnx_axis = int(node.attr("axis", 0)) % rank
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    axis_t = ctx.const_tensor(f"{node.name}/axis", np.array([inverse(perm)[onnx_axis]], np.int32))
    opcode = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    opts = ctx.options("ArgMaxOptions" if opcode == "ARG_MAX" else "ArgMinOptions", outputType=4)  # INT64
    rperm = _reduced_perm(perm, [onnx_axis])
    if not node.attr("keepdims", 1):
        y = ctx.output(out, rperm, dtype="int64")
        ctx.op(opcode, [x, axis_t], [y], opts, role=QuantRole.FREE)
        return
    reduced_shape = [d for i, d in enumerate(ctx.shape(src)) if i != onnx_axis]
    t = ctx.new_tensor(f"{out}/reduced", permuted(reduced_shape, rperm), "int64")
    ctx.op(opcode, [x, axis_t], [t], opts, role=QuantRole.FREE)
    name = f"{out}/reduced"
    ctx.view.shapes[name] = tuple(reduced_shape)
    ctx.define(name, t, rperm)
    y = ctx.output(out, dtype="int64")
    ctx.op("RESHAPE", [ctx.get(name), ctx.int32(f"{node.name}/shape", ctx.shape(out))], [y],
           ctx.options("ReshapeOptions", newShape=np.asarray(ctx.shape(out), np.int32)), role=QuantRole.INDEX)


# -- expand / tile / depth-space --------------------------------------------------------------
def check_const_input(node: Node, view: GraphView) -> Optional[str]:
    if node.input(1) and view.const(node.input(1)) is None:
        return f"{node.op_type}'s shape/repeats input is computed at run time"
    return None


def lower_expand(ctx: Context, node: Node) -> None:
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    perm = _perm_for(ctx, [node.input(0)], rank)
    x = ctx.get(node.input(0), perm, rank=rank)
    y = ctx.output(out, perm)
    ctx.op("BROADCAST_TO", [x, ctx.int32(f"{node.name}/shape", permuted(ctx.shape(out), perm))], [y],
           ctx.options("BroadcastToOptions"), role=QuantRole.SAME)


def lower_tile(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    perm = ctx.perm_of(src)
    reps = const_ints(ctx.view, node, "repeats", 1) or []
    x = ctx.get(src, perm)
    y = ctx.output(out, perm)
    ctx.op("TILE", [x, ctx.int32(f"{node.name}/multiples", permuted(reps, perm))], [y],
           ctx.options("TileOptions"), role=QuantRole.SAME)


def check_depth_space(node: Node, view: GraphView) -> Optional[str]:
    if node.op_type == "DepthToSpace" and node.attr("mode", "DCR") != "DCR":
        return "DepthToSpace mode=CRD has no TFLite lowering (TFLite's DEPTH_TO_SPACE is DCR)"
    return None


def lower_depth_space(ctx: Context, node: Node) -> None:
    x = ctx.get(node.input(0), NHWC)
    y = ctx.output(node.outputs[0], NHWC)
    bs = int(node.attr("blocksize"))
    if node.op_type == "DepthToSpace":
        ctx.op("DEPTH_TO_SPACE", [x], [y], ctx.options("DepthToSpaceOptions", blockSize=bs), role=QuantRole.SAME)
    else:
        ctx.op("SPACE_TO_DEPTH", [x], [y], ctx.options("SpaceToDepthOptions", blockSize=bs), role=QuantRole.SAME)
