"""onnxruntime helpers the targets share (onnxruntime, qnn, tensorrt).

The recipe's precedence (global → op type → node name) reaches onnxruntime's
quantizer as ``TensorQuantOverrides``: a node whose settings differ from the
global ones gets overrides on the tensors it owns — its outputs (activation
type, symmetry) and its weight initializer (weight type, symmetry,
per-channel axis, reduce_range) — and a skipped node goes to
``nodes_to_exclude``.  A setting the target's kernels cannot take is refused
with one :class:`ConfigError` naming every offending node; nothing is
ignored with a warning.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from edgekit.errors import ModelError

from .graph import DEFAULT_DOMAINS, weight_axis

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.quantize.recipe import OpConfig, QuantDtype, Recipe

_WEIGHT_INPUTS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quant_type(dtype: "QuantDtype") -> Any:
    from onnxruntime.quantization import QuantType

    from edgekit.quantize.recipe import QuantDtype

    return {QuantDtype.UINT8: QuantType.QUInt8, QuantDtype.INT8: QuantType.QInt8,
            QuantDtype.UINT16: QuantType.QUInt16, QuantDtype.INT16: QuantType.QInt16}[dtype]


def ort_method(recipe: "Recipe") -> Any:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod

    from edgekit.quantize.recipe import CalibrationMethod

    # MSE: onnxruntime collects min/max and edgekit's ranges override every tensor (see OWN_RANGES)
    return {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
            CalibrationMethod.ENTROPY: OrtMethod.Entropy, CalibrationMethod.MSE: OrtMethod.MinMax}[recipe.method]


#: recipe methods whose ranges come from edgekit.quantize.ranges for every tensor: onnxruntime has no MSE
#: calibrator.  (Its Entropy calibrator, with its default 128 bins, returned exactly the min-max ranges on
#: the PP-OCR text-line classifier; edgekit's KL rule there clipped far more and lost 10 dB, so entropy stays
#: onnxruntime's own until that rule is understood.)
OWN_RANGES = ("mse",)


def uses_own_ranges(recipe: "Recipe") -> bool:
    """Whether :func:`range_overrides` has anything to add for ``recipe``."""
    return recipe.per_op_methods or recipe.method.value in OWN_RANGES


def range_overrides(model: Any, recipe: "Recipe", feeds: Sequence[Mapping[str, Any]],
                    overrides: Mapping[str, List[Dict[str, Any]]]) -> Dict[str, List[Dict[str, Any]]]:
    """``overrides`` plus ``rmin``/``rmax`` for every activation whose range rule onnxruntime's calibrator
    does not compute: outputs of nodes the recipe gives their own ``method``/``percentile`` (and every
    activation when the recipe's method is in :data:`OWN_RANGES`), from :mod:`edgekit.quantize.ranges`.
    A tensor's other overrides (type, symmetry) are kept; ``model`` must be the graph handed to the quantizer.
    """
    from edgekit.quantize.ranges import float_tensors, ranges, recipe_rules

    rules = recipe_rules(model, recipe, everything=recipe.method.value in OWN_RANGES)
    out = {k: list(v) for k, v in overrides.items()}
    if not rules:
        return out
    import numpy as np

    floats = float_tensors(model)  # Shape/index outputs take no activation range
    found = ranges(model, feeds, method=recipe.method.value, percentile=recipe.percentile, per_tensor=rules,
                   names=sorted(t for t in rules if t in floats))
    for tensor, (lo, hi) in found.items():
        entry = dict(out[tensor][0]) if out.get(tensor) else {}
        entry.update(rmin=np.float32(lo), rmax=np.float32(hi))
        out[tensor] = [entry]
    return out


@dataclass
class QuantPlan:
    """The recipe turned into onnxruntime quantizer arguments."""

    nodes_to_exclude: List[str] = field(default_factory=list)
    overrides: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    #: node → what its own settings changed (for the manifest)
    per_node: Dict[str, str] = field(default_factory=dict)
    #: nodes of a detector's decode tail kept out of the shared 8-bit range
    float_tail: List[str] = field(default_factory=list)
    unmatched: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"excluded_nodes": self.nodes_to_exclude, "excluded_count": len(self.nodes_to_exclude),
                "per_node_settings": self.per_node, "detection_tail": self.float_tail}


def plan_recipe(
    model: Any,
    recipe: "Recipe",
    *,
    target: str,
    activation_dtypes: Sequence["QuantDtype"],
    weight_dtypes: Sequence["QuantDtype"],
    reduce_range: bool,
    tail: Sequence[str] = (),
    tail_dtype: Optional["QuantDtype"] = None,
) -> QuantPlan:
    """Overrides and exclusions that make onnxruntime's quantizer follow ``recipe`` node by node.

    ``tail``: a detector's decode nodes; kept in float (``tail_dtype`` None) or
    given activations of ``tail_dtype`` (16 bits keep them on an NPU).
    """
    from .graph import iter_nodes

    g = recipe.global_config
    recipe.require(target, activation_dtypes=tuple(activation_dtypes), weight_dtypes=tuple(weight_dtypes))
    plan = QuantPlan()
    names = {name for name, _ in iter_nodes(model.graph)}
    plan.unmatched = sorted({n for n in list(recipe.nodes) + list(recipe.exclude_nodes) if n not in names})
    inits = {t.name: t for t in model.graph.initializer}
    consumers: Dict[str, List[Any]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    tail_set = set(tail)
    for node in model.graph.node:
        if (node.domain or "") not in DEFAULT_DOMAINS:
            continue
        name = node.name
        cfg = recipe.config_for(name, node.op_type)
        if cfg.skip:
            if name:
                plan.nodes_to_exclude.append(name)
            continue
        if name in tail_set:
            if tail_dtype is None:
                plan.nodes_to_exclude.append(name)
            else:
                for o in node.output:
                    plan.overrides.setdefault(o, [{"quant_type": quant_type(tail_dtype)}])
            plan.float_tail.append(name)
            continue
        changed = _node_overrides(node, cfg, g, inits, reduce_range, plan.overrides, consumers)
        if changed:
            plan.per_node[name or node.output[0]] = changed
    plan.nodes_to_exclude.sort()
    return plan


def _node_overrides(node: Any, cfg: "OpConfig", g: "OpConfig", inits: Mapping[str, Any], reduce_range: bool,
                    overrides: Dict[str, List[Dict[str, Any]]], consumers: Mapping[str, List[Any]]) -> str:
    """Tensor overrides for one node whose config differs from the global one; what changed, in words."""
    from edgekit.quantize.recipe import QuantDtype

    changed: List[str] = []
    if (cfg.activation_dtype, cfg.symmetric_activations) != (g.activation_dtype, g.symmetric_activations):
        # onnxruntime folds a Relu/Clip that follows a quantized op into the op's output range, and the
        # folded tensor then takes the activation's quantization: give both the node's settings
        folded = [o for c in consumers.get(node.output[0], []) if c.op_type in ("Relu", "Clip") for o in c.output] \
            if node.output else []
        for o in list(node.output) + folded:
            overrides.setdefault(o, [{"quant_type": quant_type(cfg.activation_dtype),
                                      "symmetric": cfg.symmetric_activations}])
        changed.append(f"activations {cfg.activation_dtype.value}"
                       + (" symmetric" if cfg.symmetric_activations else ""))
    node_rr = cfg.reduce_range if cfg.reduce_range is not None else reduce_range
    weight_key = (cfg.weight_dtype, cfg.per_channel, node_rr)
    if node.op_type in _WEIGHT_INPUTS and len(node.input) > 1 and node.input[1] in inits and \
            weight_key != (g.weight_dtype, g.per_channel, reduce_range):
        w = inits[node.input[1]]
        entry: Dict[str, Any] = {"quant_type": quant_type(cfg.weight_dtype),
                                 "symmetric": cfg.weight_dtype is QuantDtype.INT8, "reduce_range": node_rr}
        axis = weight_axis(node, len(w.dims)) if cfg.per_channel else None
        if axis is not None:
            entry["axis"] = axis
        overrides.setdefault(node.input[1], [entry])
        changed.append(f"weights {cfg.weight_dtype.value} " + ("per-channel" if axis is not None else "per-tensor")
                       + (" reduce_range" if node_rr else ""))
    return ", ".join(changed)


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer prints progress on stdout and advice on the root logger at WARNING;
    `edgekit ... --json` must print one document, and the advice is about its internals."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="onnxruntime")
            yield
    finally:
        root.setLevel(level)


def qdq_counts(model: Any) -> Tuple[Dict[str, int], List[str]]:
    """(op type → count, names of nodes whose every input comes from a DequantizeLinear)."""
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    dq_outputs = {o for node in model.graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    quantized = sorted(
        node.name for node in model.graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and node.input and all(i in dq_outputs for i in node.input if i)
    )
    return counts, quantized


def unmatched_warning(unmatched: Sequence[str]) -> None:
    if unmatched:
        warnings.warn(f"quantization recipe names node(s) {list(unmatched)} that the model does not have; they have "
                      "no effect (edgekit inspect lists the node names)", UserWarning, stacklevel=4)


def ort() -> Any:
    from .toolchain import require

    return require("onnxruntime", "this target", "onnxruntime")


def load_check(path: Any, what: str) -> None:
    """Load the built model in an onnxruntime CPU session: a model that does not load is never packaged."""
    rt = ort()
    so = rt.SessionOptions()
    so.log_severity_level = 3
    # only whether it loads: packed GEMM weights would be one more copy of the weights (verify runs it for real)
    so.add_session_config_entry("session.disable_prepacking", "1")
    try:
        rt.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as err:  # an edgekit bug or an ORT limitation: say which step made it
        raise ModelError(
            f"the {what} model does not load in onnxruntime: {str(err).strip().splitlines()[0]}; "
            "build at another precision, or report this with the model"
        ) from None


def artifact_files(workdir: Any, entry: str) -> List[str]:
    """The entry file and its external-data companions (``model.onnx.data``)."""
    return sorted(p.name for p in workdir.iterdir()
                  if p.is_file() and (p.name == entry or p.name.startswith(entry + ".")))
