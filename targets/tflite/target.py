"""The tflite target: Raspberry Pi 4/5, other Arm Linux boards, Android — LiteRT with XNNPACK.

The artifact is ``model.tflite`` written by edgekit's own lowering (no
TensorFlow): fp32; fp16 weights expanded by DEQUANTIZE; or full int8 per the
TFLite quantization specification with float or integer model IO.  Model
inputs and outputs keep the ONNX names, shapes and layouts, so the package's
preprocessing is the one every target shares.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from edgekit.errors import ConfigError, ModelError
from edgekit.manifest import QuantParams, TensorSpec
from edgekit.options import Option, OptionSchema

from ..base import Artifact, BuildSpec, Precision, Target
from ..graph import graph_specs
from ..optable import OpTable
from .optable import COVERAGE

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

    from ..lowering import GraphView
    from .ir import Subgraph

ENTRY = "model.tflite"

def _prepare(model: Any) -> "GraphView":
    from ..lowering import prepare

    return prepare(model)[0]


def _op_table() -> OpTable:
    # ops without a row lower only when a fusion absorbs them (Erf in GELU) or they fold away
    return COVERAGE.op_table("tflite", "edgekit's ONNX → TFLite lowering (targets/tflite/optable.py)", _prepare,
                             "that a fusion absorbs (Erf in GELU …) or that folds to a constant")


class TfliteTarget(Target):
    """Arm CPUs through LiteRT (ai-edge-litert / tflite-runtime) with XNNPACK."""

    name = "tflite"
    runtime = "tflite"
    precisions = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})
    description = "Raspberry Pi 4/5, Arm Linux boards, Android: LiteRT with XNNPACK (fp32, fp16 weights, int8)"
    verify_runtime = "tflite"
    op_table = _op_table()
    #: a Focus stem's SpaceToDepth → Conv as one Conv (ddddocr YOLOX int8 on XNNPACK: 0.97× the CPU time)
    int8_rewrites = ("space_to_depth_into_conv",)
    build_options = OptionSchema("tflite target", [
        Option("io_dtype", str, "float32", "int8 builds: the model's input/output type (float32 = quantize "
               "inside the model; int8/uint8 = the preprocessing quantizes, the manifest has scale/zero point)",
               choices=("float32", "int8", "uint8")),
        Option("arch", str, None, "the device's CPU architecture (recorded; XNNPACK picks kernels at run time)"),
    ])

    def toolchain(self) -> Tuple[bool, str]:
        if importlib.util.find_spec("ai_edge_litert") is None:
            return False, "pip install 'edgekit[tflite]'"
        from importlib.metadata import version

        return True, f"ai-edge-litert {version('ai-edge-litert')}"

    def build(self, model: "onnx.ModelProto", spec: BuildSpec, calibration: Optional["CalibrationSet"],
              workdir: Path) -> Artifact:
        from .ir import serialize
        from .lower import lower

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        precision = Precision.parse(spec.precision)
        if precision not in self.precisions:
            raise ConfigError(f'"precision" must be one of {{fp32, fp16, int8}} for the tflite target, but got '
                              f"{precision.value}")
        opts = self.build_option_values(spec)
        lowered = lower(model)
        fp32 = serialize(lowered.graph)
        details: Dict[str, Any] = {"precision": precision.value, "fusions": lowered.counts,
                                   "tflite_ops": lowered.op_counts}
        quantization: Optional[Dict[str, Any]] = None
        graph = lowered.graph
        if precision is Precision.FP16:
            from .fp16 import to_fp16_weights

            graph = to_fp16_weights(graph)
            data = serialize(graph)
        elif precision is Precision.INT8:
            graph, quantization = self._int8(lowered, fp32, spec, calibration, opts["io_dtype"], details)
            data = serialize(graph)
        else:
            if opts["io_dtype"] != "float32":
                raise ConfigError(f'"io_dtype" {opts["io_dtype"]} needs an int8 build; fp32 and fp16 models take '
                                  "float32")
            data = fp32
        path = workdir / ENTRY
        tmp = workdir / (ENTRY + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        version = _load_check(path, precision.value)
        details["bytes"] = len(data)
        inputs, outputs = _specs(model, graph)
        runtime_options = self.runtime_option_values(spec)
        return Artifact(files=[ENTRY], entry=ENTRY, runtime_options=runtime_options,
                        runtime_versions={"ai-edge-litert": version}, inputs=inputs, outputs=outputs,
                        details=details, quantization=quantization)

    def _int8(self, lowered: Any, fp32: bytes, spec: BuildSpec, calibration: Optional["CalibrationSet"],
              io_dtype: str, details: Dict[str, Any]) -> Tuple["Subgraph", Dict[str, Any]]:
        from edgekit.quantize.calibration import CalibrationSet
        from edgekit.quantize.recipe import Recipe

        from .calibrate import collect_ranges
        from .quantize import quantize_int8

        recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
        used, given = CalibrationSet.required(calibration, recipe.num_samples)
        refuse_unsupported_recipe(recipe)
        nodes = lowered.view.nodes
        ranges = collect_ranges(fp32, lowered.graph, used.feeds, method=recipe.method.value,
                                percentile=recipe.percentile, rules=_tensor_rules(lowered.graph, nodes, recipe))
        from ..graph import ALWAYS_FLOAT_OPS, detection_tail

        # a YOLO-style decode tail (pixel boxes joined with 0..1 scores) stays float, as on every target
        tail = set(detection_tail(lowered.model))
        in_tail = {n.name for n in nodes if n.name in tail or any(f in tail for f in n.fused_from)}
        skip = {n.name for n in nodes if recipe.skips(n.name, n.op_type)}
        for n in nodes:  # a skipped fused node also skips when named by a source node
            if any(recipe.skips(f, n.op_type) for f in n.fused_from):
                skip.add(n.name)
        per_tensor = {n.name for n in nodes if not recipe.config_for(n.name, n.op_type).per_channel}
        symmetric = {n.name for n in nodes if recipe.config_for(n.name, n.op_type).symmetric_activations}
        # recurrent cells and the ops the twin does not quantize stay float on every target (graph.ALWAYS_FLOAT_OPS)
        always_float = {n.name for n in nodes if n.op_type in ALWAYS_FLOAT_OPS}
        graph, report = quantize_int8(lowered.graph, ranges, io_dtype=io_dtype, skip_nodes=skip,
                                      per_tensor_nodes=per_tensor, symmetric_nodes=symmetric, tail_nodes=in_tail,
                                      always_float_nodes=always_float)
        details["io_dtype"] = io_dtype
        details["int8_ops"] = report.int8_ops
        details["float_ops"] = report.float_ops
        return graph, {
            "format": "tflite-int8",
            "method": recipe.method.value,
            "tool": "edgekit.targets.tflite (TFLite quantization spec: int8 per-tensor activations, per-channel "
                    "symmetric weights, int32 bias)",
            "recipe": recipe.to_json(),
            "calibration": used.summary(),
            "calibration_samples_given": given,
            "float_fallback_ops": report.float_ops,
            "requantize_ops": report.requantized,
            "skipped_nodes": sorted(skip),
            "detection_tail": sorted(in_tail),
            "always_float_nodes": sorted(always_float),
            "per_tensor_weight_nodes": sorted(per_tensor),
            "symmetric_activation_nodes": sorted(symmetric),
        }


def _tensor_rules(graph: "Subgraph", nodes: Any, recipe: Any) -> Dict[int, Tuple[str, float]]:
    """Tensor index → (method, percentile) for the outputs of operators lowered from a node the recipe
    gives its own range rule (by its name, or — for a fused node — by a source node's name)."""
    base = (recipe.method, recipe.percentile)
    by_node: Dict[str, Tuple[Any, float]] = {}
    for n in nodes:
        for name in (n.name, *n.fused_from):
            rule = recipe.range_rule(name, n.op_type)
            if rule != base:
                by_node[n.name] = rule
                break
    return {o: (by_node[op.node][0].value, by_node[op.node][1]) for op in graph.operators if op.node in by_node
            for o in op.outputs}


def refuse_unsupported_recipe(recipe: Any) -> None:
    """One error naming every recipe setting the TFLite int8 kernels cannot run (the shared Recipe.require).

    8-bit activations are int8 per the TFLite spec whichever of uint8/int8 the recipe says (the
    same affine grid, zero point shifted by 128); weights are symmetric int8, per channel or per
    tensor; 16-bit activations, uint8 weights and 7-bit ``reduce_range`` weights have no kernels here.
    """
    from edgekit.quantize.recipe import QuantDtype

    recipe.require("tflite", activation_dtypes=(QuantDtype.UINT8, QuantDtype.INT8), weight_dtypes=(QuantDtype.INT8,),
                   reduce_range=False, why="its int8 kernels take 8-bit activations and symmetric int8 weights "
                                           "(no 7-bit reduce_range); skip those nodes")


def _load_check(path: Path, what: str) -> str:
    """Load the written model in LiteRT (the first thing a device does); returns the runtime version."""
    from edgekit.runners.tflite import import_interpreter

    mod, _, version = import_interpreter("ai-edge-litert")
    try:
        interp = mod.Interpreter(model_path=os.fspath(path), num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        path.unlink(missing_ok=True)
        raise ModelError(f"the {what} TFLite model does not load in LiteRT ({str(err).strip().splitlines()[0]}); "
                         "build at another precision, or report this with the model") from None
    return version


def _specs(model: Any, graph: "Subgraph") -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """ONNX IO specs with the artifact's dtypes and quantization."""
    inputs, outputs = graph_specs(model)

    def patch(specs: List[TensorSpec], indices: List[int]) -> List[TensorSpec]:
        by_name = {graph.tensors[i].name: graph.tensors[i] for i in indices}
        out = []
        for s in specs:
            t = by_name.get(s.name)
            if t is None:
                out.append(s)
                continue
            q = None
            if t.quant is not None and t.dtype in ("int8", "uint8"):
                q = QuantParams(float(t.quant.scale[0]), int(t.quant.zero_point[0]))
            out.append(TensorSpec(name=s.name, shape=s.shape, dtype=t.dtype, layout=s.layout, quantization=q))
        return out

    return patch(inputs, graph.inputs), patch(outputs, graph.outputs)
