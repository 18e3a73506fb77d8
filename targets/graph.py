"""Graph walking helpers every target's ``check`` and ``build`` share."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from edgekit.manifest import TensorSpec

#: the names of ONNX's default domain
DEFAULT_DOMAINS = ("", "ai.onnx")


def domain_of(node: Any) -> str:
    """The node's domain, with ONNX's default domain spelled ``""``."""
    domain = node.domain or ""
    return "" if domain in DEFAULT_DOMAINS else domain


def qualified_op(node: Any) -> str:
    """``Conv`` for a default-domain op, ``domain::Op`` otherwise."""
    domain = domain_of(node)
    return node.op_type if not domain else f"{domain}::{node.op_type}"


def opset_versions(model: Any) -> Dict[str, int]:
    """Domain → opset version (the default domain as ``""``)."""
    out: Dict[str, int] = {}
    for imp in model.opset_import:
        out["" if (imp.domain or "") in DEFAULT_DOMAINS else imp.domain] = int(imp.version)
    return out


class GraphInfo:
    """Lookups over a model's main graph that checks and rewrites share.

    Built once per check: producers, consumers, element types of every
    named value, the opsets, and attribute access with ONNX's defaults.
    """

    def __init__(self, model: Any) -> None:
        graph = model.graph
        self.model = model
        self.opsets = opset_versions(model)
        self.producer: Dict[str, Any] = {o: n for n in graph.node for o in n.output if o}
        self.consumers: Dict[str, List[Any]] = {}
        for n in graph.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.elem_type: Dict[str, int] = {}
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self.elem_type[vi.name] = vi.type.tensor_type.elem_type
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = [o.name for o in graph.output]

    def opset_for(self, node: Any) -> int:
        domain = domain_of(node)
        return self.opsets.get(domain, 1)

    @staticmethod
    def attr(node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def output_shape(self, name: str) -> Optional[Tuple[int, ...]]:
        for vi in self.model.graph.output:
            if vi.name == name and vi.type.tensor_type.HasField("shape"):
                return tuple(int(d.dim_value) if d.HasField("dim_value") else -1
                             for d in vi.type.tensor_type.shape.dim)
        return None


def iter_nodes(graph: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Every node, including those inside If/Loop/Scan bodies (named 'outer/inner')."""
    for node in graph.node:
        name = prefix + (node.name or (node.output[0] if node.output else node.op_type))
        yield name, node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_nodes(attr.g, name + "/")
            for sub in attr.graphs:
                yield from iter_nodes(sub, name + "/")


def dynamic_dims(model: Any) -> List[str]:
    """Graph-input dims that are not fixed positive numbers, as 'name[i] ('param')'."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out.append(f"{vi.name}: unknown rank")
            continue
        for i, d in enumerate(tt.shape.dim):
            if not (d.HasField("dim_value") and d.dim_value > 0):
                out.append(f"{vi.name}[{i}]" + (f" ({d.dim_param!r})" if d.dim_param else ""))
    return out


def graph_specs(model: Any) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """Input and output specs straight from the graph (unknown dims as -1)."""
    import numpy as np
    from onnx import helper

    from .canonicalize import guess_layout

    inits = {t.name for t in model.graph.initializer}

    def spec(v: Any, is_input: bool) -> TensorSpec:
        tt = v.type.tensor_type
        shape = tuple(int(d.dim_value) if d.dim_value > 0 else -1 for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        return TensorSpec(v.name, shape, dtype, guess_layout(shape) if is_input else None)

    return ([spec(v, True) for v in model.graph.input if v.name not in inits],
            [spec(v, False) for v in model.graph.output])


#: learned-weight ops: the walk back from a detector output stops at them (they end the head's layers)
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

#: ONNX ops every int8 build keeps in float, whatever the target's int8 kernels could do: the recurrent
#: cells (the state they carry between calls has no calibrated range: its first value is zeros) and the
#: ops the mixed-precision twin (``edgekit.quantize.sensitivity.QUANTIZABLE``) and the onnxruntime target
#: leave float — quantized on another target they would be int8 where the search cannot name them, so
#: "every candidate layer float" would still leave them rounding (Silero VAD's STFT magnitude, Pow Pow Add
#: Sqrt, quantized alone takes its LSTM state output from 324 to 5.6 dB on openvino).
ALWAYS_FLOAT_OPS = frozenset({
    "LSTM", "GRU", "RNN",
    "Pow", "Sqrt", "Sub", "Div", "Max", "Min", "Mod", "Tile", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2",
    "LpNormalization", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
})


def _is_projection(node: Any, info: GraphInfo) -> bool:
    """A Conv with one output channel and a constant weight: YOLOv8's DFL expectation (sum of bin × prob)."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    w = info.initializers.get(node.input[1])
    return w is not None and len(w.dims) >= 1 and int(w.dims[0]) == 1


def _is_pointwise(node: Any, info: GraphInfo) -> bool:
    """A Conv with a constant 1×1 kernel: a YOLO head's last layer (boxes or class scores per cell)."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    w = info.initializers.get(node.input[1])
    return w is not None and len(w.dims) == 4 and tuple(w.dims[2:]) == (1, 1)


def _decode_tail(model: Any, info: GraphInfo) -> List[str]:
    """The decode tail of every YOLO-style detector output (see :func:`detection_tail`), unordered."""
    tail: List[str] = []
    for out in info.outputs:
        shape = info.output_shape(out)
        producer = info.producer.get(out)
        if producer is None or shape is None or len(shape) != 3:
            continue
        # the output may be a Transpose/Reshape of the Concat (YOLOv5/YOLOX [1, N, 5+C])
        concat = producer
        while concat.op_type in ("Transpose", "Reshape") and concat.input and concat.input[0] in info.producer:
            concat = info.producer[concat.input[0]]
        if concat.op_type != "Concat" or len([i for i in concat.input if i]) < 2:
            continue
        seen: Dict[str, Any] = {}
        stack = [producer]
        while stack:
            node = stack.pop()
            key = node.name or node.output[0]
            if key in seen:
                continue
            if node.op_type in _WEIGHTED_OPS and not _is_projection(node, info):
                if _is_pointwise(node, info):
                    # the head's last 1×1 conv (scores, box bins): cheap, and on a real export its 8-bit
                    # input range alone cost the class scores 3.5 dB (OpenVINO, YOLOv8n)
                    seen[key] = node
                continue
            seen[key] = node
            stack.extend(info.producer[i] for i in node.input if i in info.producer)
        # a walk that reached a graph input found no head layers: not a detector head, leave it
        graph_inputs = {v.name for v in model.graph.input} - set(info.initializers)
        if any(i in graph_inputs for n in seen.values() for i in n.input):
            continue
        tail.extend(k for k in seen if k not in tail)
    return tail


#: a detector's stem: the layers whose outputs are at most this many times smaller than the image
STEM_STRIDE = 4
#: initializers above this many elements are left out of the light copy shape inference runs on
_LIGHT_INIT_ELEMENTS = 4096


def _spatial_sizes(model: Any) -> Tuple[Tuple[int, int], Dict[str, Tuple[int, int]]]:
    """The image input's (H, W) and that of every rank-4 float tensor whose shape inference finds fixed dims (NCHW or NHWC as the
    image input is laid out).  Runs on a copy without the large weights: shape inference needs their dims,
    not their values, and a copy of a large model's weights is what the build's memory budget cannot pay."""
    import onnx
    from onnx import helper

    from .canonicalize import guess_layout

    g = model.graph
    light = helper.make_graph(list(g.node), g.name or "light", list(g.input), list(g.output),
                              value_info=list(g.value_info))
    have = {v.name for v in g.input}
    for t in g.initializer:
        if int(np.prod(t.dims)) <= _LIGHT_INIT_ELEMENTS:
            light.initializer.append(t)
        elif t.name not in have:
            light.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    lm = helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(lm, strict_mode=False)
    inits = {t.name for t in g.initializer}
    images = [v for v in g.input if v.name not in inits and len(v.type.tensor_type.shape.dim) == 4]
    if not images:
        return (0, 0), {}
    dims = [d.dim_value for d in images[0].type.tensor_type.shape.dim]
    hw = (1, 2) if guess_layout(dims) == "nhwc" else (2, 3)
    out: Dict[str, Tuple[int, int]] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT or len(tt.shape.dim) != 4:
            continue
        d = tt.shape.dim
        if d[hw[0]].HasField("dim_value") and d[hw[1]].HasField("dim_value"):
            out[vi.name] = (int(d[hw[0]].dim_value), int(d[hw[1]].dim_value))
    return out.get(images[0].name, (0, 0)), out


def detector_stem(model: Any, info: Optional[GraphInfo] = None) -> List[str]:
    """A detector's high-resolution stem: the nodes from the image to the first learned layer whose output
    is more than :data:`STEM_STRIDE` times smaller than the image, that one excluded.

    Measured on Ultralytics' YOLOv8n (NudeNet's 320² export, 64 held-out
    scenes): its stem (the stride-2 and stride-4 convolutions and the first
    C2f block, 8.5 % of the MACs) carries the widest activation ranges of the
    network (±180 at stride 4), and 8-bit steps there reach every scale the
    head sees — with only the head in float the class scores stay at 14 dB
    and recall vs fp32 at 0.92; with the stem in float too, boxes go from 22
    to 40 dB and recall to 0.98.  Empty when the sizes are unknown.
    """
    info = info or GraphInfo(model)
    (in_h, in_w), sizes = _spatial_sizes(model)
    if not in_h or not in_w:
        return []
    stem: List[str] = []
    for node in model.graph.node:
        outs = [sizes[o] for o in node.output if o in sizes]
        if not outs:
            continue
        small = any(h * STEM_STRIDE < in_h or w * STEM_STRIDE < in_w for h, w in outs)
        if small:
            if node.op_type in _WEIGHTED_OPS:
                break  # the stem ends where learned layers start working below its resolution
            continue
        stem.append(node.name or node.output[0])
    return stem


def detection_tail(model: Any, stem: bool = True) -> List[str]:
    """Names of a detector's nodes kept out of the shared 8-bit ranges: its decode tail and its stem.

    A detector output (rank 3, e.g. YOLOv8's [1, 4+C, N] or YOLOv5's
    [1, N, 5+C]) is a Concat of a box branch (pixels, 0–640) and a score
    branch (0–1).  Quantized with one scale per tensor, the scores drown in
    the box range and the int8 package detects nothing while its tensor-wide
    SQNR looks fine.  The tail is every node from the head's last learned
    layers (Conv/Gemm/MatMul with weights, the DFL projection excepted) to
    the output, and the head's last 1×1 convolutions that feed it; it is
    cheap, so it runs in float (or at 16 bits) on every target.  The tail is not enough on a real export: the class scores are
    the part of a detector most sensitive to noise anywhere before the head,
    and most of it comes from the high-resolution stem (:func:`detector_stem`),
    which joins the tail unless ``stem`` is false (a target that tries the stem in int8 once the build holds
    its gates).  Empty when no output is such a Concat of separate branches (not a detector: nothing is kept).
    """
    info = GraphInfo(model)
    tail = _decode_tail(model, info)
    if not tail:
        return []
    keep = set(tail) | (set(detector_stem(model, info)) if stem else set())
    order = {(n.name or n.output[0]): i for i, n in enumerate(model.graph.node)}
    return sorted(keep, key=lambda k: order.get(k, 0))


def weight_axis(node: Any, rank: int) -> Optional[int]:
    """The output-channel axis of a node's weight (input 1), or None for per-tensor only."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        # with groups, axis 1 holds O/group channels, not the layer's outputs: per-tensor then
        return 1 if (attrs["group"].i if "group" in attrs else 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if (attrs["transB"].i if "transB" in attrs else 0) else 1
    if node.op_type == "MatMul":
        return rank - 1 if rank >= 2 else None
    return None
