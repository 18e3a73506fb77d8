"""The tensorrt target: NVIDIA Jetson (Orin, Xavier; DLA).

TensorRT engines are tied to the GPU, the TensorRT version and the OS, so the
package does not carry an engine.  It carries ``model.onnx`` prepared for
TensorRT plus a build profile (``manifest.target.details.build_profile``:
precision flags, workspace, min/opt/max shapes, DLA core and GPU fallback,
builder optimization level, timing-cache use); the ``tensorrt`` runner builds
the engine on the device on first load and caches it.

* fp32 — the canonical graph;
* fp16 — the same graph, weights kept fp32, the engine built with the FP16
  flag (TensorRT picks fp16 kernels and converts the weights itself);
* int8 — explicit quantization (:mod:`.qdq`): symmetric
  int8 Q/DQ at the inputs of Conv, ConvTranspose, Gemm and MatMul, per-channel
  weights, calibrated on the shared feeds; a model that already carries Q/DQ
  (quantization-aware training) keeps its own.  A detector's decode tail
  stays float (TensorRT runs it in fp16), so boxes and scores keep their
  own ranges.

Every build runs the Q/DQ lint (:mod:`.lint`) for the
TensorRT version of the device profile and fails naming every violation.

Verification on the build host: TensorRT does not install there, so the
pipeline runs the packaged graph on onnxruntime, which executes the same
Q/DQ semantics (dequantize → float op → quantize).
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from edgekit.errors import ConfigError
from edgekit.options import Option, OptionSchema
from edgekit.runners.tensorrt.profile import BuildProfile, ShapeRange, TrtPrecision

from ..base import FLOAT_AND_INT8, Artifact, BuildJob, BuildSpec, CheckFindings, Precision, Target, UnsupportedNode
from ..graph import GraphInfo, detection_tail, graph_specs
from ..optable import OpTable
from ..ort_tools import artifact_files, load_check
from .lint import lint_qdq, raise_on_violations
from .ops import OP_TABLES, table_version

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

ENTRY = "model.onnx"
DEFAULT_TRT_VERSION = "10"

BUILD_OPTIONS = OptionSchema("tensorrt target", [
    Option("trt_version", str, DEFAULT_TRT_VERSION, "TensorRT version on the device (8.5 = JetPack 5.1, 8.6, 10)"),
    Option("workspace_mib", int, None, "builder workspace memory-pool limit (MiB)", min=16),
    Option("dla_core", int, None, "run on this DLA core (Jetson AGX Orin / Xavier); fp16 or int8 only", min=0, max=1),
    Option("gpu_fallback", bool, None, "with dla_core: layers the DLA lacks run on the GPU"),
    Option("builder_optimization_level", int, None, "TensorRT builder optimization level (8.6+)", min=0, max=5),
    Option("timing_cache", bool, None, "reuse and update the device's timing cache"),
])


def trt_version_for(spec: BuildSpec) -> str:
    version = str(TensorRTTarget().build_option_values(spec)["trt_version"])
    try:
        table_version(version)
    except ValueError:
        raise ConfigError(f'"trt_version" must be a TensorRT version such as "10.3" or "8.5", but got {version!r}') from None
    return version


def build_profile(spec: BuildSpec, inputs: Any) -> BuildProfile:
    """The profile the device builds with, validated now so a bad option fails the build, not the device."""
    opts = TensorRTTarget().build_option_values(spec)
    precision = Precision.parse(spec.precision)
    precisions = {Precision.FP32: (), Precision.FP16: (TrtPrecision.FP16,),
                  Precision.INT8: (TrtPrecision.INT8, TrtPrecision.FP16)}[precision]
    kwargs = {k: v for k, v in opts.items() if v is not None and k != "trt_version"}
    shapes = {t.name: ShapeRange.static(tuple(t.shape)) for t in inputs}
    return BuildProfile(precisions=precisions, shapes=shapes, trt_version=trt_version_for(spec), **kwargs)


def has_qdq(model: Any) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


class TensorRTTarget(Target):
    """NVIDIA Jetson through TensorRT: ONNX prepared for TensorRT + a build profile."""

    name = "tensorrt"
    runtime = "tensorrt"
    precisions = FLOAT_AND_INT8
    description = "NVIDIA Jetson (Orin, Xavier; DLA) through TensorRT: engine built and cached on the device"
    verify_runtime = "onnxruntime"
    requires = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
    op_table = OP_TABLES[DEFAULT_TRT_VERSION]
    build_options = BUILD_OPTIONS

    def toolchain(self) -> Tuple[bool, str]:
        ok, found = super().toolchain()
        here = "tensorrt importable here" if importlib.util.find_spec("tensorrt") else \
            "TensorRT runs on the device (JetPack); verified here through onnxruntime"
        return ok, f"{found}; {here}" if ok else found

    def op_table_for(self, spec: BuildSpec) -> OpTable:
        return OP_TABLES[table_version(trt_version_for(spec))]

    def extra_checks(self, model: "onnx.ModelProto", spec: BuildSpec, graph: GraphInfo) -> CheckFindings:
        version = trt_version_for(spec)
        notes = [f"checked against TensorRT {table_version(version)}'s ONNX parser"]
        found = []
        # the op rules are the table's; a pre-quantized (QAT) model's Q/DQ must already follow TensorRT's rules
        rules = ("unsupported-op",) if has_qdq(model) else ("unsupported-op", "opset")
        for v in lint_qdq(model, version):
            if v.rule not in rules:
                found.append(UnsupportedNode(node=v.node, op_type=v.rule, reason=v.message))
        if has_qdq(model):
            notes.append("the model already has Q/DQ nodes (quantization-aware training): they are kept")
        return CheckFindings(unsupported=tuple(found), notes=tuple(notes))

    def _build(self, job: BuildJob) -> Artifact:
        import onnx

        from ..canonicalize import save_onnx

        model, spec, precision, workdir, calibration = job.model, job.spec, job.precision, job.workdir, job.calibration
        version = trt_version_for(spec)
        inputs, outputs = graph_specs(model)
        profile = build_profile(spec, inputs)
        out_path = workdir / ENTRY
        details: Dict[str, Any] = {"precision": precision.value, "trt_version": version,
                                   # the engine's precision flags decide on the device; this host verifies the graph
                                   "execution_precision": {Precision.FP32: "f32", Precision.FP16: "f16 (FP16 flag)"}.get(
                                       precision, "int8 (explicit Q/DQ) + f16"),
                                   "verified_execution_precision": "f32 (onnxruntime; int8 Q/DQ as dequantize → "
                                                                   "float op → quantize)"}
        quantization: Optional[Dict[str, Any]] = None
        prequantized = has_qdq(model)
        if prequantized and precision is not Precision.INT8:
            raise ConfigError(
                "this model already has Q/DQ nodes (quantization-aware training), which TensorRT always runs in "
                f"int8; build it with --precision int8, not {precision.value}"
            )
        if precision is Precision.INT8 and not prequantized:
            result, quantization = _build_int8(model, spec, calibration, version)
            save_onnx(result, out_path)
            details["weights"] = quantization["weights_format"]
        else:
            save_onnx(model, out_path)
            details["weights"] = "fp32 (TensorRT converts them for fp16 kernels)" if precision is Precision.FP16 \
                else "fp32"
            if prequantized:
                quantization = {"format": "qdq", "tool": "the source model (quantization-aware training)",
                                "scheme": "as exported; lint-checked for TensorRT"}

        # the lint is the contract with the device's TensorRT: fail here, naming every violation
        raise_on_violations(lint_qdq(onnx.load(str(out_path), load_external_data=False), version), version)
        details["lint"] = f"clean for TensorRT {table_version(version)} (every Q/DQ and op rule)"
        details["build_profile"] = profile.to_json()
        details["engine"] = ("built on the device on first load and cached (key: TensorRT version, GPU, "
                             "artifact sha256, build profile); `edgekit prepare PKG` builds it ahead of time")
        load_check(out_path, f"tensorrt {precision.value}")
        verify_options, verify_note = _verify_options(precision, prequantized or precision is Precision.INT8)
        return Artifact(files=artifact_files(workdir, ENTRY), entry=ENTRY, inputs=inputs, outputs=outputs,
                        runtime_options=self.runtime_option_values(spec),
                        runtime_versions={"onnx": onnx.__version__, "tensorrt_graph_checked_for": table_version(version)},
                        details=details, quantization=quantization, verify_options=verify_options,
                        verify_note=verify_note)


def _build_int8(model: Any, spec: BuildSpec, calibration: Optional["CalibrationSet"],
                version: str) -> Tuple[Any, Dict[str, Any]]:
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe

    from ..ort_tools import unmatched_warning
    from .qdq import insert_qdq, refuse_unsupported_recipe

    recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
    refuse_unsupported_recipe(recipe)
    used, n = CalibrationSet.required(calibration, recipe.num_samples)
    known = {nd.name for nd in model.graph.node}
    unmatched_warning(sorted({w for w in list(recipe.nodes) + list(recipe.exclude_nodes) if w not in known}))
    tail = detection_tail(model)
    # TensorRT 10 reads int8 weights behind a DequantizeLinear; 8.x's parser wants fp32 → Q → DQ
    int8_weights = table_version(version) == "10"
    result, report = insert_qdq(model, recipe, used, int8_weights=int8_weights, keep_float=tail)
    return result, {
        "format": "qdq",
        "tool": "edgekit.targets.tensorrt.qdq (explicit quantization for TensorRT)",
        "scheme": "symmetric int8, zero point 0; activations per tensor at the inputs of Conv, ConvTranspose, "
                  "Gemm and MatMul; weights per output channel; biases float",
        "weights_format": "int8 initializers → DequantizeLinear" if int8_weights
        else "fp32 initializers → QuantizeLinear → DequantizeLinear (TensorRT 8.x)",
        "recipe": recipe.to_json(),
        "calibration": used.summary(),
        "calibration_samples_given": n,
        "calibration_method": recipe.method.value,
        "quantized_nodes": len(report.quantized_nodes),
        "activation_tensors": len(report.activations),
        "weights": len(report.weights),
        "excluded_nodes": report.skipped_nodes,
        "excluded_count": len(report.skipped_nodes),
        "detection_tail": tail,
    }


def _verify_options(precision: Precision, quantized: bool) -> Tuple[Dict[str, Any], str]:
    """How the build host verifies a graph meant for TensorRT (see the module docstring)."""
    if precision is Precision.FP16:
        return {}, ("verified on onnxruntime (CPU) in fp32: the graph keeps fp32 weights and TensorRT picks fp16 "
                    "kernels on the device, whose rounding this host cannot reproduce")
    if not quantized:
        return {}, "verified on onnxruntime (CPU): TensorRT is not installable on the build host"
    note = ("int8 Q/DQ graph verified on onnxruntime (CPU), which executes the same Q/DQ semantics as TensorRT; "
            "TensorRT is not installable on the build host")
    from edgekit.cpu import cpu_features

    cpu = cpu_features()
    if cpu.is_x86 and not cpu.vnni:
        # onnxruntime's fused x86 int8 kernels compute s8×s8 as u8×s8 and, without VNNI, saturate 16-bit pair
        # sums (the attention golden model: 22.4 dB fused vs 34.1 dB unfused); TensorRT's int8 kernels
        # accumulate in int32.  The basic level keeps Q/DQ as exact dequantize → float op → quantize:
        # TensorRT's arithmetic up to float summation order.
        return ({"graph_optimization_level": "basic"},
                note + "; run with Q/DQ reference semantics (onnxruntime basic level) because this x86 host's "
                       "fused s8×s8 kernels (no VNNI) saturate int16 pair sums, which TensorRT's int32 accumulation does not")
    return {}, note
