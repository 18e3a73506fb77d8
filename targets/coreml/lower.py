"""Lower a canonical ONNX graph to a MIL program (coremltools' MIL builder).

coremltools has had no ONNX frontend since version 6, so this walks the
canonical graph node by node with the emitters of :mod:`.ops`, through the
graph view the TFLite lowering walks too (:func:`..lowering.folded`: parsed
attributes, ``Constant`` nodes and static shape arithmetic as constants).  No
pattern fusions of ours: ``ct.convert`` runs coremltools' own MIL passes.  The result is a fresh ``Program`` every call:
``ct.convert`` mutates the program it is given, so a second conversion (fp32
then fp16, or a retry) must lower again.

W8A8: when activation ranges are given, every activation that feeds a
conv/linear/matmul is wrapped in ``quantize`` → ``dequantize`` (int8, one
scale per tensor), the pattern Core ML's Neural Engine compiler turns into
int8 compute (iOS 17+).  Weights are compressed afterwards on the converted
model (:mod:`.compress`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from edgekit.errors import UnsupportedModelError

from ..lowering import folded
from .context import Lowering, LoweringError, Node, mil_name, node_error
from .ops import COVERAGE, EMITTERS

#: ONNX ops whose activation inputs are quantized in W8A8 (where int8 compute pays)
W8A8_CONSUMERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass
class LoweredProgram:
    program: Any
    #: ONNX input/output name → MIL (Core ML feature) name
    input_names: Dict[str, str]
    output_names: Dict[str, str]
    #: MIL op name → ONNX node name
    origins: Dict[str, str] = field(default_factory=dict)
    #: ONNX tensor → (scale, zero_point) of the activations quantized for W8A8
    activation_quant: Dict[str, Tuple[float, int]] = field(default_factory=dict)


def int8_params(lo: float, hi: float) -> Tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0 (so ReLU zeros stay exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zp


def lower(
    model: Any,
    opset: Any,
    *,
    act_ranges: Optional[Mapping[str, Tuple[float, float]]] = None,
    flexible: Optional[Tuple[int, int]] = None,
    float_nodes: Optional[Set[str]] = None,
) -> LoweredProgram:
    """The MIL program for ``model`` (canonical ONNX), targeting MIL ``opset`` (a ``ct.target``).

    ``flexible``: axes of the (single) input lowered as symbolic sizes, for
    enumerated shapes (:mod:`.enumerated`); a node that needs them concrete
    is refused with its name.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    graph = model.graph
    view = folded(model)
    inits = view.constants
    low = Lowering(values=dict(inits), act_ranges=dict(act_ranges or {}))
    onnx_opset = view.default_opset or 13

    input_names, placeholders = _placeholders(graph, inits, low, flexible)

    activation_quant: Dict[str, Tuple[float, int]] = {}
    quantized: Dict[str, Any] = {}

    def fake_quant(tensor: str, value: Any) -> Any:
        if tensor in quantized:
            return quantized[tensor]
        scale, zp = int8_params(*low.act_ranges[tensor])
        base = mil_name(tensor)
        q = mb.quantize(input=value, scale=np.float32(scale), zero_point=np.int8(zp), output_dtype="int8",
                        name=low.unique(base + "_q"))
        dq = mb.dequantize(input=q, scale=np.float32(scale), zero_point=np.int8(zp), name=low.unique(base + "_dq"))
        activation_quant[tensor] = (scale, zp)
        quantized[tensor] = dq
        return dq

    with Function(placeholders, opset_version=opset) as func:
        for onnx_name, name in input_names.items():
            low.values[onnx_name] = func.inputs[name]
        for node in view.nodes:
            spec = COVERAGE.rules.get(node.op_type) if node.is_default_domain else None
            if spec is None:
                reason = COVERAGE.not_lowered.get(node.op_type, "no Core ML lowering for this op")
                raise node_error(node, reason + " (see `edgekit targets` for the coreml op table)")
            saved = {}
            # W8A8: the activations a weighted op reads are rounded to int8 — not for a node kept in float
            if node.op_type in W8A8_CONSUMERS and low.act_ranges and node.name not in (float_nodes or ()):
                for inp in node.inputs[:1] if node.op_type != "MatMul" else node.inputs[:2]:
                    v = low.values.get(inp)
                    if inp and not isinstance(v, np.ndarray) and inp in low.act_ranges:
                        saved[inp] = v
                        low.values[inp] = fake_quant(inp, v)
            try:
                outs = _emit(spec, node, low, onnx_opset)
            except LoweringError as err:
                if flexible:
                    from .enumerated import explain

                    raise explain(err) from None
                raise
            low.values.update(saved)  # other consumers see the float value
            for out_name, value in zip(node.outputs, outs):
                if out_name:
                    low.values[out_name] = value
                    if not isinstance(value, np.ndarray):
                        low.origins[value.op.name] = node.name
        outputs = []
        output_names: Dict[str, str] = {}
        for vi in graph.output:
            v = low.values[vi.name]
            want = low.unique(vi.name) if vi.name not in input_names else low.unique(vi.name + "_out")
            if isinstance(v, np.ndarray) or v.name != mil_name(vi.name) or v.name in func.inputs:
                v = mb.identity(x=v.astype(np.float32) if isinstance(v, np.ndarray) else v, name=want)
            output_names[vi.name] = v.name
            outputs.append(v)
        func.set_outputs(outputs)
    program = Program()
    program.add_function("main", func)
    return LoweredProgram(program, input_names, output_names, dict(low.origins), activation_quant)


def _placeholders(graph: Any, inits: Mapping[str, Any], low: Lowering,
                  flexible: Optional[Tuple[int, int]]) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """The MIL placeholders of the graph's (float, static) inputs, ``flexible`` axes as symbols; also
    each ONNX input name's MIL name.  A dynamic or non-float input is refused with the fix."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol
    from onnx import helper

    input_names: Dict[str, str] = {}
    placeholders: Dict[str, Any] = {}
    for vi in graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [int(d.dim_value) for d in tt.shape.dim]
        if any(d <= 0 for d in shape):
            raise UnsupportedModelError(
                f"input {vi.name!r} has a dynamic dimension {shape}; the Neural Engine needs static shapes "
                "(fix: --size HxW, or input_shapes={...} in edgekit.build)")
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if dtype.kind != "f":
            raise UnsupportedModelError(
                f"input {vi.name!r} is {dtype.name}; the Core ML lowering takes float inputs only "
                "(fold the embedding/indices into the export, or use the onnxruntime target)")
        name = low.unique(vi.name)
        input_names[vi.name] = name
        dims: List[Any] = list(shape)
        for axis in flexible or ():
            dims[axis] = get_new_symbol()
        placeholders[name] = mb.placeholder(shape=dims)
    return input_names, placeholders


def _emit(spec: Any, node: Node, low: Lowering, opset: int) -> List[Any]:
    if not spec.covers_opset(opset):
        raise node_error(node, f"lowered from ONNX opset {spec.since}; the model is opset {opset}")
    try:
        return EMITTERS[node.op_type](node, low, opset)
    except UnsupportedModelError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as err:
        # MIL type inference rejects what the emitter produced: name the node so the user can act
        raise node_error(node, f"cannot be lowered to MIL ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
