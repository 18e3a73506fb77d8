"""numpy kernels for the MIL operations the Core ML lowering emits (and the ones
coremltools' default passes fuse them into: ``silu``, ``gelu``, ``linear`` …).

Each kernel takes the op's resolved inputs (argument name → ndarray, or a list
for variadic arguments such as ``concat.values``) and returns the outputs.
Kernels compute in float32 (float64 where a reduction needs it); the
interpreter rounds every output to the type the program declares (fp16 →
``astype(float16)``), which is how fp16 storage between ops is emulated.
Semantics follow coremltools 9's ``converters/mil/mil/ops/defs`` docs.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

Inputs = Mapping[str, Any]
Kernel = Callable[[Inputs], Any]


def _f(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a


def _scalar(a: Any, default: Any = None) -> Any:
    if a is None:
        return default
    a = np.asarray(a)
    if not a.size:
        return default
    v = a.reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


def _ints(a: Any, default: Sequence[int] = ()) -> List[int]:
    return list(default) if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def space_to_depth(x: np.ndarray, bs: int) -> np.ndarray:
    """MIL ``space_to_depth`` on NCHW: output channel (by·bs + bx)·C + c (TensorFlow's and ONNX's order)."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


def depth_to_space(x: np.ndarray, bs: int) -> np.ndarray:
    """MIL ``depth_to_space`` on NCHW, the inverse of :func:`space_to_depth` (ONNX DepthToSpace mode DCR)."""
    n, c, h, w = x.shape
    y = x.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (bs * bs), h * bs, w * bs)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 in float64: |error| < 1.5e-7, about float32's resolution
    x64 = x.astype(np.float64)
    s = np.sign(x64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (s * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


# -- padding shared by conv and pooling ------------------------------------------

def _pads(i: Inputs, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> List[Tuple[int, int]]:
    pad_type = str(_scalar(i.get("pad_type"), "valid"))
    n = len(in_sizes)
    if pad_type == "custom":
        p = _ints(i.get("pad"), [0] * 2 * n)
        return [(p[2 * d], p[2 * d + 1]) for d in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    out = []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        eff = (k - 1) * d + 1
        total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
        small = total // 2
        out.append((total - small, small) if pad_type == "same_lower" else (small, total - small))
    return out


def _windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """[N, C, *out, *kernel] strided view over the (already padded) spatial dims."""
    n = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + \
        tuple(slice(None, None, d) for d in dilations)
    return view[index]


def conv(i: Inputs) -> np.ndarray:
    x, w = _f(i["x"]), _f(i["weight"])
    n = w.ndim - 2
    strides = _ints(i.get("strides"), [1] * n)
    dil = _ints(i.get("dilations"), [1] * n)
    groups = int(_scalar(i.get("groups"), 1))
    pads = _pads(i, x.shape[2:], w.shape[2:], strides, dil)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    win = _windows(xp, w.shape[2:], strides, dil)  # N, C, *out, *k
    N, C = x.shape[:2]
    O = w.shape[0]
    out_sp = win.shape[2:2 + n]
    letters = "hwd"[:n]
    kl = "ijk"[:n]
    win = win.reshape((N, groups, C // groups) + out_sp + w.shape[2:])
    wg = w.reshape((groups, O // groups, C // groups) + w.shape[2:])
    y = np.einsum(f"ngc{letters}{kl},goc{kl}->ngo{letters}", win, wg, optimize=True)
    y = y.reshape((N, O) + out_sp)
    if i.get("bias") is not None:
        y = y + _f(i["bias"]).reshape((1, O) + (1,) * n)
    return y.astype(np.float32)


def conv_transpose(i: Inputs) -> np.ndarray:
    x, w = _f(i["x"]), _f(i["weight"])  # w: [Cin, Cout/groups, *k]
    n = w.ndim - 2
    strides = _ints(i.get("strides"), [1] * n)
    dil = _ints(i.get("dilations"), [1] * n)
    groups = int(_scalar(i.get("groups"), 1))
    p = _ints(i.get("pad"), [0] * 2 * n)
    N, Cin = x.shape[:2]
    cout_g = w.shape[1]
    full = [(s - 1) * st + (k - 1) * d + 1 for s, st, k, d in zip(x.shape[2:], strides, w.shape[2:], dil)]
    y = np.zeros((N, cout_g * groups) + tuple(full), np.float32)
    cin_g = Cin // groups
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cin_g:(g + 1) * cin_g]
        for kidx in np.ndindex(*w.shape[2:]):
            contrib = np.einsum("nc...,co->no...", xg, wg[(slice(None), slice(None)) + kidx])
            sl = tuple(slice(k * d, k * d + (s - 1) * st + 1, st)
                       for k, d, s, st in zip(kidx, dil, x.shape[2:], strides))
            y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + sl] += contrib
    crop = tuple(slice(p[2 * d], full[d] - p[2 * d + 1]) for d in range(n))
    y = y[(slice(None), slice(None)) + crop]
    if i.get("bias") is not None:
        y = y + _f(i["bias"]).reshape((1, -1) + (1,) * n)
    return y


def _pool(i: Inputs, reduce: str) -> np.ndarray:
    x = _f(i["x"])
    kernel = _ints(i["kernel_sizes"])
    n = len(kernel)
    strides = _ints(i.get("strides"), [1] * n)
    pads = _pads(i, x.shape[2:], kernel, strides, [1] * n)
    ceil = bool(_scalar(i.get("ceil_mode"), False))
    extra = []
    for size, k, s, (b, e) in zip(x.shape[2:], kernel, strides, pads):
        span = size + b + e - k
        out = (math.ceil(span / s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= size + b:  # the last window must start inside the input or left pad
            out -= 1
        extra.append(max((out - 1) * s + k - (size + b + e), 0))
    full = [(b, e + ex) for (b, e), ex in zip(pads, extra)]
    fill = -np.inf if reduce == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + full, constant_values=fill)
    axes = tuple(range(-n, 0))
    win = _windows(xp, kernel, strides, [1] * n)
    if reduce == "max":
        return win.max(axis=axes)
    total = win.sum(axis=axes, dtype=np.float64)
    exclude = bool(_scalar(i.get("exclude_padding_from_average"), False))
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    # explicit padding counts unless excluded; the ceil-mode overhang never counts
    mask = np.pad(ones, [(0, 0), (0, 0)] + ([(0, 0)] * n if exclude else list(pads)), constant_values=0.0 if exclude else 1.0)
    mask = np.pad(mask, [(0, 0), (0, 0)] + ([(b, e + ex) for (b, e), ex in zip(pads, extra)] if exclude
                                            else [(0, ex) for ex in extra]))
    count = _windows(mask, kernel, strides, [1] * n).sum(axis=axes)
    return (total / np.maximum(count, 1)).astype(np.float32)


def _axes_of(i: Inputs, rank: int) -> Tuple[int, ...]:
    axes = i.get("axes")
    return tuple(range(rank)) if axes is None else tuple(a % rank for a in _ints(axes))


def _reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def kernel(i: Inputs) -> np.ndarray:
        x = _f(i["x"])
        keep = bool(_scalar(i.get("keep_dims"), False))
        return np.asarray(fn(x, axis=_axes_of(i, x.ndim), keepdims=keep)).astype(np.float32)

    return kernel


def _argreduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def kernel(i: Inputs) -> np.ndarray:
        x = _f(i["x"])
        axis = int(_scalar(i.get("axis"), -1))
        out = fn(x, axis=axis)
        if bool(_scalar(i.get("keep_dims"), False)):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)

    return kernel


def softmax(i: Inputs) -> np.ndarray:
    x = _f(i["x"])
    axis = int(_scalar(i.get("axis"), -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(i: Inputs) -> np.ndarray:
    x = _f(i["x"])
    axes = _axes_of(i, x.ndim)
    eps = float(_scalar(i.get("epsilon"), 1e-5))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps)
    if i.get("gamma") is not None:
        y = y * _f(i["gamma"])
    if i.get("beta") is not None:
        y = y + _f(i["beta"])
    return y.astype(np.float32)


def batch_norm(i: Inputs) -> np.ndarray:
    x = _f(i["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = float(_scalar(i.get("epsilon"), 1e-5))
    y = (x - _f(i["mean"]).reshape(shape)) / np.sqrt(_f(i["variance"]).reshape(shape) + eps)
    if i.get("gamma") is not None:
        y = y * _f(i["gamma"]).reshape(shape)
    if i.get("beta") is not None:
        y = y + _f(i["beta"]).reshape(shape)
    return y


def linear(i: Inputs) -> np.ndarray:
    y = np.matmul(_f(i["x"]), _f(i["weight"]).T)
    if i.get("bias") is not None:
        y = y + _f(i["bias"])
    return y


def matmul(i: Inputs) -> np.ndarray:
    x, y = _f(i["x"]), _f(i["y"])
    if bool(_scalar(i.get("transpose_x"), False)):
        x = np.swapaxes(x, -1, -2)
    if bool(_scalar(i.get("transpose_y"), False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def slice_by_index(i: Inputs) -> np.ndarray:
    x = i["x"]
    rank = x.ndim
    begin, end = _ints(i.get("begin")), _ints(i.get("end"))
    stride = _ints(i.get("stride"), [1] * rank)
    bm = [bool(v) for v in np.asarray(i.get("begin_mask", [False] * rank)).reshape(-1)]
    em = [bool(v) for v in np.asarray(i.get("end_mask", [False] * rank)).reshape(-1)]
    sq = [bool(v) for v in np.asarray(i.get("squeeze_mask", [False] * rank)).reshape(-1)]
    index = []
    for d in range(rank):
        index.append(slice(None if bm[d] else begin[d], None if em[d] else end[d], stride[d]))
    y = x[tuple(index)]
    squeeze = tuple(d for d in range(rank) if sq[d])
    return y.squeeze(axis=squeeze) if squeeze else y


def _nearest(i: Inputs) -> np.ndarray:
    x = i["x"]
    sh, sw = float(_scalar(i.get("scale_factor_height"), 1)), float(_scalar(i.get("scale_factor_width"), 1))
    H, W = x.shape[-2:]
    oh, ow = int(math.floor(H * sh)), int(math.floor(W * sw))
    rows = np.minimum(np.floor(np.arange(oh) / sh).astype(np.int64), H - 1)
    cols = np.minimum(np.floor(np.arange(ow) / sw).astype(np.int64), W - 1)
    return x[..., rows[:, None], cols[None, :]]


def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Source coordinates of the output grid along one axis (MIL resize_bilinear sampling modes)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "UNALIGN_CORNERS":
        sp = n_in / n_out
        src = i * sp + 0.5 * sp - 0.5
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        src = 0.5 * delta + i * delta
    elif mode == "ASYMMETRIC":
        src = i * (n_in / n_out)
    else:  # DEFAULT
        src = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    return np.clip(src, 0, n_in - 1)


def _bilinear(x: np.ndarray, oh: int, ow: int, mode: str) -> np.ndarray:
    x = _f(x)
    H, W = x.shape[-2:]
    ys, xs = _grid(H, oh, mode), _grid(W, ow, mode)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
    wy = (ys - y0).astype(np.float32)[:, None]
    wx = (xs - x0).astype(np.float32)[None, :]
    top = x[..., y0[:, None], x0[None, :]] * (1 - wx) + x[..., y0[:, None], x1[None, :]] * wx
    bot = x[..., y1[:, None], x0[None, :]] * (1 - wx) + x[..., y1[:, None], x1[None, :]] * wx
    return top * (1 - wy) + bot * wy


def resize_bilinear(i: Inputs) -> np.ndarray:
    mode = str(_scalar(i.get("sampling_mode"), "DEFAULT"))
    return _bilinear(i["x"], int(_scalar(i["target_size_height"])), int(_scalar(i["target_size_width"])), mode)


def upsample_bilinear(i: Inputs) -> np.ndarray:
    x = i["x"]
    sh, sw = float(_scalar(i.get("scale_factor_height"), 1)), float(_scalar(i.get("scale_factor_width"), 1))
    oh, ow = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    if bool(_scalar(i.get("align_corners"), True)):
        mode = "STRICT_ALIGN_CORNERS"
    elif bool(_scalar(i.get("half_pixel_centers"), False)):
        mode = "UNALIGN_CORNERS"
    else:
        mode = "ASYMMETRIC"
    return _bilinear(x, oh, ow, mode)


def pad(i: Inputs) -> np.ndarray:
    x = i["x"]
    p = _ints(i["pad"])
    k = len(p) // 2
    pairs = [(0, 0)] * (x.ndim - k) + [(p[2 * d], p[2 * d + 1]) for d in range(k)]
    mode = str(_scalar(i.get("mode"), "constant"))
    if mode == "constant":
        return np.pad(x, pairs, constant_values=float(_scalar(i.get("constant_val"), 0.0)))
    return np.pad(x, pairs, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def clip(i: Inputs) -> np.ndarray:
    return np.clip(_f(i["x"]), float(_scalar(i["alpha"])), float(_scalar(i["beta"])))


def cast(i: Inputs) -> np.ndarray:
    to = str(_scalar(i["dtype"]))
    dtype = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "int8": np.int8,
             "uint8": np.uint8, "bool": np.bool_, "fp64": np.float64}[to]
    x = np.asarray(i["x"])
    if dtype is np.float16:
        return x.astype(np.float16)
    return x.astype(dtype)


# -- quantization ops -----------------------------------------------------------

def _axis_shape(values: np.ndarray, param: np.ndarray, axis: Any) -> np.ndarray:
    param = np.asarray(param, np.float32)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    ax = int(_scalar(axis, 0)) % values.ndim
    shape = [1] * values.ndim
    shape[ax] = param.size
    return param.reshape(shape)


def quantize(i: Inputs) -> np.ndarray:
    x = _f(i["input"])
    scale = _axis_shape(x, i["scale"], i.get("axis"))
    zp_raw = i.get("zero_point")
    out = str(_scalar(i.get("output_dtype"), "int8"))
    info = np.iinfo(np.int8 if out == "int8" else np.uint8)
    zp = _axis_shape(x, zp_raw, i.get("axis")) if zp_raw is not None else np.float32(0)
    q = np.round(x / scale) + zp  # numpy rounds half to even, as Core ML does
    return np.clip(q, info.min, info.max).astype(np.int8 if out == "int8" else np.uint8)


def dequantize(i: Inputs) -> np.ndarray:
    q = np.asarray(i["input"])
    scale = _axis_shape(q, i["scale"], i.get("axis"))
    zp = _axis_shape(q, i["zero_point"], i.get("axis")) if i.get("zero_point") is not None else np.float32(0)
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


def constexpr_affine_dequantize(i: Inputs) -> np.ndarray:
    q = np.asarray(i["quantized_data"])
    axis = i.get("axis")
    scale = _axis_shape(q, i["scale"], axis)
    zp = _axis_shape(q, i["zero_point"], axis)
    return (q.astype(np.float32) - zp) * scale


def _block_broadcast(param: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """iOS 18 blockwise params: each dim of ``param`` divides the data's dim; repeat to full size."""
    out = np.asarray(param)
    for d, (n, m) in enumerate(zip(shape, out.shape)):
        if n != m:
            out = np.repeat(out, n // m, axis=d)
    return out


def constexpr_blockwise_shift_scale(i: Inputs) -> np.ndarray:
    data = np.asarray(i["data"]).astype(np.float32)
    scale = _block_broadcast(np.asarray(i["scale"], np.float32), data.shape)
    if i.get("offset") is not None:
        data = data - _block_broadcast(np.asarray(i["offset"], np.float32), data.shape)
    return data * scale


def constexpr_lut_to_dense(i: Inputs) -> np.ndarray:
    if "shape" not in i:  # iOS 18: indices [shape], lut [*blocks, 2**nbits, vector_size]
        idx = np.asarray(i["indices"]).astype(np.int64)
        lut = np.asarray(i["lut"])
        if lut.shape[-1] != 1:
            raise NotImplementedError("vector palettization (vector_size > 1) is not interpreted")
        table = lut[..., 0]  # [*blocks, K]
        blocks = table.shape[:-1]
        out = np.empty(idx.shape, dtype=lut.dtype)
        steps = [n // b for n, b in zip(idx.shape, blocks)]
        for bidx in np.ndindex(*blocks):
            sl = tuple(slice(b * s, (b + 1) * s) for b, s in zip(bidx, steps))
            out[sl] = table[bidx][idx[sl]]
        return out
    # iOS 16: lut [K], indices bit-packed (log2 K bits each, LSB first) into uint8, shape [rank]
    shape = tuple(_ints(i["shape"]))
    lut = np.asarray(i["lut"])
    count = int(np.prod(shape))
    nbits = int(round(math.log2(lut.size)))
    raw = np.asarray(i["indices"]).astype(np.uint8).reshape(-1)
    if nbits == 8:
        idx = raw[:count]
    else:
        bits = np.unpackbits(raw, bitorder="little")[: count * nbits].reshape(count, nbits).astype(np.int64)
        idx = bits @ (1 << np.arange(nbits, dtype=np.int64))
    return lut[idx.astype(np.int64)].reshape(shape)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    return lambda i: fn(_f(i["x"]), _f(i["y"]))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    return lambda i: fn(_f(i["x"]))


def _gelu(i: Inputs) -> np.ndarray:
    x = _f(i["x"])
    mode = str(_scalar(i.get("mode"), "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _erf(x / np.float32(math.sqrt(2.0))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _split(i: Inputs) -> List[np.ndarray]:
    x = i["x"]
    axis = int(_scalar(i["axis"]))
    if i.get("split_sizes") is not None:
        return np.split(x, np.cumsum(_ints(i["split_sizes"]))[:-1], axis=axis)
    return np.split(x, int(_scalar(i["num_splits"])), axis=axis)


def _expand_dims(i: Inputs) -> np.ndarray:
    x = i["x"]
    out_rank = x.ndim + len(_ints(i["axes"]))
    return np.expand_dims(x, tuple(a % out_rank for a in _ints(i["axes"])))


def _squeeze(i: Inputs) -> np.ndarray:
    x = i["x"]
    if i.get("axes") is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in _ints(i["axes"])))


_ACTIVATIONS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x,
}


def lstm(i: Inputs) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MIL ``lstm`` (forward / reverse): gates in ``ifoz`` order, one summed bias, states ``[B, H]``.

    Steps run in float64 (the state carries across the whole sequence); the
    interpreter rounds the outputs to the program's declared types.
    """
    direction = str(_scalar(i.get("direction"), "forward"))
    if direction not in ("forward", "reverse"):
        raise ValueError(f"lstm direction {direction!r} is not interpreted (forward and reverse are)")
    if i.get("clip") is not None or i.get("peephole") is not None:
        raise ValueError("lstm clip / peephole are not interpreted")
    try:
        acts = [_ACTIVATIONS[str(_scalar(i.get(k), d))] for k, d in
                (("recurrent_activation", "sigmoid"), ("cell_activation", "tanh"), ("activation", "tanh"))]
    except KeyError as err:
        raise ValueError(f"lstm activation {err} is not interpreted (known: {sorted(_ACTIVATIONS)})") from None
    gate, cell, out_act = acts
    x = np.asarray(i["x"], np.float64)
    w_ih, w_hh = np.asarray(i["weight_ih"], np.float64), np.asarray(i["weight_hh"], np.float64)
    bias = np.asarray(i["bias"], np.float64) if i.get("bias") is not None else 0.0
    h = np.asarray(i["initial_h"], np.float64)
    c = np.asarray(i["initial_c"], np.float64)
    hidden = w_hh.shape[1]
    xw = x @ w_ih.T + bias  # every step's input projection at once: [S, B, 4H]
    ys = np.zeros(x.shape[:2] + (hidden,), np.float64)
    order = range(x.shape[0] - 1, -1, -1) if direction == "reverse" else range(x.shape[0])
    for t in order:
        g = xw[t] + h @ w_hh.T
        gi, gf, go, gz = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = gate(gf) * c + gate(gi) * cell(gz)
        h = gate(go) * out_act(c)
        ys[t] = h
    if not bool(_scalar(i.get("output_sequence"), False)):
        ys = h[None]
    return ys.astype(np.float32), h.astype(np.float32), c.astype(np.float32)


KERNELS: Dict[str, Kernel] = {
    "lstm": lstm,
    "conv": conv,
    "conv_transpose": conv_transpose,
    "max_pool": lambda i: _pool(i, "max"),
    "avg_pool": lambda i: _pool(i, "avg"),
    "linear": linear,
    "matmul": matmul,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "softmax": softmax,
    "add": _binary(np.add), "sub": _binary(np.subtract), "mul": _binary(np.multiply),
    "real_div": _binary(np.divide), "pow": _binary(np.power), "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum), "floor_div": _binary(np.floor_divide),
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "sigmoid": _unary(_sigmoid),
    "silu": _unary(lambda x: x * _sigmoid(x)),
    "tanh": _unary(np.tanh), "erf": _unary(_erf), "exp": _unary(np.exp), "abs": _unary(np.abs),
    "sqrt": _unary(np.sqrt), "rsqrt": lambda i: 1.0 / np.sqrt(_f(i["x"]) + float(_scalar(i.get("epsilon"), 1e-12))),
    "floor": _unary(np.floor), "ceil": _unary(np.ceil), "sin": _unary(np.sin), "cos": _unary(np.cos),
    "sign": _unary(np.sign), "square": _unary(np.square),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "softplus": _unary(lambda x: np.logaddexp(0, x).astype(np.float32)),
    "log": lambda i: np.log(_f(i["x"]) + float(_scalar(i.get("epsilon"), 1e-45))),
    "inverse": lambda i: 1.0 / (_f(i["x"]) + float(_scalar(i.get("epsilon"), 1e-4))),
    "gelu": _gelu,
    "leaky_relu": lambda i: np.where(_f(i["x"]) >= 0, _f(i["x"]), _f(i["x"]) * float(_scalar(i.get("alpha"), 0.01))),
    "elu": lambda i: np.where(_f(i["x"]) > 0, _f(i["x"]), float(_scalar(i.get("alpha"), 1.0)) * (np.exp(_f(i["x"])) - 1)),
    "prelu": lambda i: np.where(_f(i["x"]) >= 0, _f(i["x"]),
                                _f(i["x"]) * _f(i["alpha"]).reshape((1, -1) + (1,) * (np.ndim(i["x"]) - 2))),
    "sigmoid_hard": lambda i: np.clip(float(_scalar(i.get("alpha"), 0.2)) * _f(i["x"])
                                      + float(_scalar(i.get("beta"), 0.5)), 0, 1),
    "clip": clip,
    "cast": cast,
    "identity": lambda i: i["x"],
    "reshape": lambda i: np.reshape(i["x"], _ints(i["shape"])),
    "transpose": lambda i: np.transpose(i["x"], _ints(i["perm"])),
    "space_to_depth": lambda i: space_to_depth(i["x"], int(_scalar(i["block_size"]))),
    "depth_to_space": lambda i: depth_to_space(i["x"], int(_scalar(i["block_size"]))),
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "concat": lambda i: np.concatenate(list(i["values"]), axis=int(_scalar(i["axis"]))),
    "split": _split,
    "slice_by_index": slice_by_index,
    "gather": lambda i: np.take(i["x"], np.asarray(i["indices"]).astype(np.int64), axis=int(_scalar(i.get("axis"), 0))),
    "tile": lambda i: np.tile(i["x"], _ints(i["reps"])),
    "pad": pad,
    "reduce_mean": _reduce(lambda x, axis, keepdims: x.astype(np.float64).mean(axis=axis, keepdims=keepdims)),
    "reduce_sum": _reduce(lambda x, axis, keepdims: x.astype(np.float64).sum(axis=axis, keepdims=keepdims)),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "reduce_sum_square": _reduce(lambda x, axis, keepdims: np.square(x.astype(np.float64)).sum(axis=axis, keepdims=keepdims)),
    "reduce_l2_norm": _reduce(lambda x, axis, keepdims: np.sqrt(np.square(x.astype(np.float64)).sum(axis=axis, keepdims=keepdims))),
    "reduce_argmax": _argreduce(np.argmax),
    "reduce_argmin": _argreduce(np.argmin),
    "upsample_nearest_neighbor": _nearest,
    "resize_bilinear": resize_bilinear,
    "upsample_bilinear": upsample_bilinear,
    "quantize": quantize,
    "dequantize": dequantize,
    "constexpr_affine_dequantize": constexpr_affine_dequantize,
    "constexpr_blockwise_shift_scale": constexpr_blockwise_shift_scale,
    "constexpr_lut_to_dense": constexpr_lut_to_dense,
}
