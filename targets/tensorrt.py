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
* int8 — explicit quantization (:mod:`edgekit.targets.trt_qdq`): symmetric
  int8 Q/DQ at the inputs of Conv, ConvTranspose, Gemm and MatMul, per-channel
  weights, calibrated on the shared feeds; a model that already carries Q/DQ
  (quantization-aware training) keeps its own.

Every build runs the Q/DQ lint (:mod:`edgekit.targets.trt_lint`) for the
TensorRT version of the device profile and fails naming every violation.

Verification on the build host: TensorRT does not install there, so the
pipeline runs the packaged graph on onnxruntime, which executes the same
Q/DQ semantics (dequantize → float op → quantize).
"""
from __future__ import annotations

import importlib.util
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from edgekit.errors import CalibrationError, ConfigError
from edgekit.runners.trt_profile import BuildProfile, ShapeRange, TrtPrecision

from .base import Artifact, BuildSpec, Precision, SupportReport, Target, UnsupportedNode
from .graph import dynamic_dims, graph_specs, iter_nodes
from .trt_lint import lint_qdq, raise_on_violations
from .trt_ops import op_support, table_version

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

ENTRY = "model.onnx"
DEFAULT_TRT_VERSION = "10"

#: build-profile fields read from the device profile's target_options and the build's runtime_options
PROFILE_OPTIONS = ("trt_version", "workspace_mib", "dla_core", "gpu_fallback", "builder_optimization_level",
                   "timing_cache")


def _options(spec: BuildSpec) -> Dict[str, Any]:
    opts: Dict[str, Any] = {}
    if spec.device is not None:
        opts.update(getattr(spec.device, "target_options", None) or {})
    opts.update(spec.runtime_options or {})
    return opts


def trt_version_for(spec: BuildSpec) -> str:
    version = str(_options(spec).get("trt_version", DEFAULT_TRT_VERSION))
    try:
        table_version(version)
    except ValueError:
        raise ConfigError(f'"trt_version" must be a TensorRT version such as "10.3" or "8.5", but got {version!r}') from None
    return version


def build_profile(spec: BuildSpec, inputs: Any) -> BuildProfile:
    """The profile the device builds with, validated now so a bad option fails the build, not the device."""
    opts = _options(spec)
    precision = Precision.parse(spec.precision)
    precisions = {Precision.FP32: (), Precision.FP16: (TrtPrecision.FP16,),
                  Precision.INT8: (TrtPrecision.INT8, TrtPrecision.FP16)}[precision]
    kwargs = {k: opts[k] for k in PROFILE_OPTIONS if k in opts and k != "trt_version"}
    shapes = {t.name: ShapeRange.static(tuple(t.shape)) for t in inputs}
    return BuildProfile(precisions=precisions, shapes=shapes, trt_version=trt_version_for(spec), **kwargs)


def has_qdq(model: Any) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


class TensorRTTarget(Target):
    """NVIDIA Jetson through TensorRT: ONNX prepared for TensorRT + a build profile."""

    name = "tensorrt"
    runtime = "tensorrt"
    precisions = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})
    description = "NVIDIA Jetson (Orin, Xavier; DLA) through TensorRT: engine built and cached on the device"
    verify_runtime = "onnxruntime"

    def toolchain(self) -> Tuple[bool, str]:
        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            return False, "pip install 'edgekit[build]'"
        import onnx
        import onnxruntime

        here = "tensorrt importable here" if importlib.util.find_spec("tensorrt") else \
            "TensorRT runs on the device (JetPack); verified here through onnxruntime"
        return True, f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}; {here}"

    # -- check ------------------------------------------------------------
    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:

        version = trt_version_for(spec)
        unsupported: List[UnsupportedNode] = []
        for name, node in iter_nodes(model.graph):
            reason = op_support(node.domain or "", node.op_type, version)
            if reason is not None:
                op = node.op_type if (node.domain or "") in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
                unsupported.append(UnsupportedNode(node=name, op_type=op, reason=reason))
        notes = [f"checked against TensorRT {table_version(version)}'s ONNX parser"]
        if has_qdq(model):
            # a pre-quantized (QAT) model: its Q/DQ must already follow TensorRT's rules
            for v in lint_qdq(model, version):
                if v.rule != "unsupported-op":  # already listed above
                    unsupported.append(UnsupportedNode(node=v.node, op_type=v.rule, reason=v.message))
            notes.append("the model already has Q/DQ nodes (quantization-aware training): they are kept")
        else:
            for v in lint_qdq(model, version):
                if v.rule == "opset":
                    unsupported.append(UnsupportedNode(node=v.node, op_type=v.rule, reason=v.message))
        return SupportReport(target=self.name, unsupported=tuple(unsupported),
                             dynamic_dims=tuple(dynamic_dims(model)), notes=tuple(notes))

    # -- build ------------------------------------------------------------
    def build(
        self,
        model: "onnx.ModelProto",
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        workdir: Path,
    ) -> Artifact:
        import onnx

        from .canonicalize import save_onnx
        from .onnxruntime import _session_check

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        precision = Precision.parse(spec.precision)
        version = trt_version_for(spec)
        inputs, outputs = graph_specs(model)
        profile = build_profile(spec, inputs)
        out_path = workdir / ENTRY
        details: Dict[str, Any] = {"precision": precision.value, "trt_version": version}
        quantization: Optional[Dict[str, Any]] = None
        prequantized = has_qdq(model)
        if prequantized and precision is not Precision.INT8:
            raise ConfigError(
                "this model already has Q/DQ nodes (quantization-aware training), which TensorRT always runs in "
                f"int8; build it with --precision int8, not {precision.value}"
            )

        if precision is Precision.INT8 and not prequantized:
            result, quantization = self._build_int8(model, spec, calibration, version)
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
        violations = lint_qdq(onnx.load(str(out_path), load_external_data=False), version)
        raise_on_violations(violations, version)
        details["lint"] = f"clean for TensorRT {table_version(version)} (every Q/DQ and op rule)"
        details["build_profile"] = profile.to_json()
        details["engine"] = ("built on the device on first load and cached (key: TensorRT version, GPU, "
                             "artifact sha256, build profile); `edgekit prepare PKG` builds it ahead of time")
        _session_check(out_path, f"tensorrt {precision.value}")

        verify_options, verify_note = _verify_options(precision, prequantized or precision is Precision.INT8)
        files = sorted(p.relative_to(workdir).as_posix() for p in workdir.iterdir()
                       if p.is_file() and (p.name == ENTRY or p.name.startswith(ENTRY + ".")))
        return Artifact(
            files=files,
            entry=ENTRY,
            runtime_versions={"onnx": onnx.__version__, "tensorrt_graph_checked_for": table_version(version)},
            inputs=inputs,
            outputs=outputs,
            details=details,
            quantization=quantization,
            verify_options=verify_options,
            verify_note=verify_note,
        )

    def _build_int8(
        self,
        model: Any,
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        version: str,
    ) -> Tuple[Any, Dict[str, Any]]:
        from edgekit.quantize.recipe import QuantDtype, Recipe

        from .trt_qdq import insert_qdq

        recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
        if calibration is None or len(calibration) == 0:
            raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
        n = len(calibration)
        used = calibration.for_recipe(recipe.num_samples)
        configs = [recipe.global_config, *recipe.op_types.values(), *recipe.nodes.values()]
        if any(c.activation_dtype in (QuantDtype.UINT16, QuantDtype.INT16) or c.weight_dtype is QuantDtype.UINT8
               for c in configs if not c.skip):
            warnings.warn(
                "the tensorrt target quantizes to symmetric int8 only (TensorRT's integer Q/DQ format); the "
                "recipe's 16-bit / uint8 dtypes are ignored (its method, sample count, per_channel and skips apply)",
                UserWarning,
                stacklevel=3,
            )
        # TensorRT 10 reads int8 weights behind a DequantizeLinear; 8.x's parser wants fp32 → Q → DQ
        int8_weights = table_version(version) == "10"
        result, report = insert_qdq(model, recipe, used, int8_weights=int8_weights)
        return result, {
            "format": "qdq",
            "tool": "edgekit.targets.trt_qdq (explicit quantization for TensorRT)",
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
    if platform.machine().lower() in ("x86_64", "amd64"):
        # onnxruntime's fused x86 int8 kernels compute s8×s8 as u8×s8 and, without VNNI, saturate 16-bit pair
        # sums (the attention golden model: 22.4 dB fused vs 34.1 dB unfused); TensorRT's int8 kernels
        # accumulate in int32.  The basic level keeps Q/DQ as exact dequantize → float op → quantize:
        # TensorRT's arithmetic up to float summation order.
        return ({"graph_optimization_level": "basic"},
                note + "; run with Q/DQ reference semantics (onnxruntime basic level) because this x86 host's "
                       "fused s8×s8 kernels saturate int16 pair sums, which TensorRT's int32 accumulation does not")
    return {}, note
