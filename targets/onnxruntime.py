"""The onnxruntime target: any CPU (Raspberry Pi, NUC, laptops).

The artifact is ``model.onnx``: the canonical fp32 graph, an fp16 graph
(``onnxruntime.transformers.float16``; fp32 IO kept unless
``runtime_options["fp16_io"]``), or a static int8 QDQ graph
(``onnxruntime.quantization.quantize_static``).

``check`` needs no onnxruntime: it uses :data:`ORT_CPU_LACKS` and friends,
an op table kept as data.  The default-domain op set is every ONNX schema
``onnx.defs`` knows, minus the (op, schema version) pairs for which
onnxruntime's CPU execution provider registers no kernel.  The table was
derived from onnxruntime 1.32's kernel registry
(``onnxruntime.capi.onnxruntime_pybind11_state.get_all_opkernel_def()``,
applying ORT's rule that an open-ended kernel matches only its exact start
version) and confirmed by creating one-node sessions;
``tests/test_build_side.py`` re-derives it from the installed onnxruntime so
the table cannot silently go stale.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from edgekit.errors import CalibrationError, ModelError
from edgekit.manifest import TensorSpec

from .base import Artifact, BuildSpec, Precision, SupportReport, Target, UnsupportedNode
from .graph import dynamic_dims, graph_specs, iter_nodes

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe

ENTRY = "model.onnx"

#: onnxruntime version the op table below was derived from.
OP_TABLE_ORT_VERSION = "1.32"

#: Default-domain ops whose listed *schema versions* (``since_version``) have no
#: CPU kernel in onnxruntime 1.32.  An op is affected when the model's opset
#: resolves to one of these versions (``onnx.defs.get_schema(op, opset)``).
ORT_CPU_LACKS: Mapping[str, Tuple[int, ...]] = {
    "DequantizeLinear": (28,),
    "GlobalLpPool": (22,),
    "ImageDecoder": (20,),
    "MaxRoiPool": (22,),
    "Multinomial": (22,),
    "Optional": (28,),
    "OptionalGetElement": (28,),
    "OptionalHasElement": (28,),
    "QuantizeLinear": (28,),
    "RandomNormal": (22,),
    "RandomNormalLike": (22,),
    "RandomUniform": (22,),
    "RandomUniformLike": (22,),
    "RoiAlign": (22,),
    "Scatter": (11,),
    "Upsample": (10,),
}

#: Default-domain ops onnxruntime implements that are not (or no longer) ONNX ops.
ORT_CPU_EXTRA_DEFAULT_OPS: FrozenSet[str] = frozenset({
    "Affine", "Crop", "DynamicSlice", "ImageScaler", "ParametricSoftplus", "Scale", "ScaledTanh",
    "SimplifiedLayerNormalization", "MemcpyFromHost", "MemcpyToHost",
})

#: ``ai.onnx.ml`` ops with a CPU kernel.
ORT_CPU_ML_OPS: FrozenSet[str] = frozenset({
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
    "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
    "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsemble", "TreeEnsembleClassifier", "TreeEnsembleRegressor",
    "ZipMap",
})

#: ``com.microsoft`` contrib ops with a CPU kernel (the others are GPU-only).
ORT_CPU_CONTRIB_OPS: FrozenSet[str] = frozenset({
    "Attention", "AttnLSTM", "BeamSearch", "BiasGelu", "BifurcationDetector", "BranchwiseRMSNorm", "CDist",
    "CausalConvWithState", "ConvTransposeWithDynamicPads", "CropAndResize", "DecoderMaskedMultiHeadAttention",
    "DequantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "DynamicTimeWarping",
    "EmbedLayerNormalization", "EngramGate", "ExpandDims", "FastGelu", "FusedConv", "FusedGemm", "FusedMatMul",
    "GatedAdd", "GatedDeltaNet", "GatedRMSNorm", "GatherBlockQuantized", "GatherND", "GatherPacked", "Gelu",
    "GreedySearch", "GridSample", "GroupQueryAttention", "HyperConnectionPostMix", "HyperConnectionPreMix",
    "Inverse", "LinearAttention", "LinearAttentionGate", "MRotaryEmbedding", "MatMulBnb4", "MatMulFpQ4",
    "MatMulInteger16", "MatMulIntegerToFloat", "MatMulNBits", "MaxpoolWithMask", "MoE", "MoEGroupRouter",
    "MultiHeadAttention", "MurmurHash3", "NGramHashMapping", "NGramRepeatBlock", "NhwcMaxPool", "Pad",
    "QAttention", "QEmbedLayerNormalization", "QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearConcat",
    "QLinearConv", "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearMul", "QLinearSigmoid",
    "QLinearSoftmax", "QLinearWhere", "QMoE", "QuantizeLinear", "QuickGelu", "Range", "RotaryEmbedding",
    "SampleOp", "Sampling", "ScaledSiLU", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
    "SparseAttention", "SparseToDenseMatMul", "Tokenizer", "TransposeMatMul", "Trilu", "UnfoldTensor", "Unique",
    "VarlenCausalConvWithState", "VarlenNGramHashMapping", "WhisperBeamSearch", "WordConvEmbedding",
})

_DEFAULT_DOMAINS = ("", "ai.onnx")

#: runtime_options keys that steer the build and are not passed to the runtime
_BUILD_ONLY_OPTIONS = ("fp16_io",)


def _opset_versions(model: Any) -> Dict[str, int]:
    return {imp.domain or "": int(imp.version) for imp in model.opset_import}


def cpu_support(domain: str, op_type: str, opset: int) -> Optional[str]:
    """None when onnxruntime's CPU EP runs (domain, op_type) at ``opset``; else the reason."""
    from onnx import defs

    if domain in _DEFAULT_DOMAINS:
        if op_type in ORT_CPU_EXTRA_DEFAULT_OPS:
            return None
        try:
            schema = defs.get_schema(op_type, opset, "")
        except defs.SchemaError:
            return (f"not an ONNX op at opset {opset} (a custom op needs its own domain, and onnxruntime "
                    "has no kernel for it)")
        if schema.deprecated:
            return f"deprecated in ONNX opset {schema.since_version}; re-export with its replacement"
        if schema.since_version in ORT_CPU_LACKS.get(op_type, ()):
            return (f"onnxruntime {OP_TABLE_ORT_VERSION} has no CPU kernel for {op_type}-{schema.since_version} "
                    f"(the version opset {opset} selects); re-export with an opset below {schema.since_version}")
        return None
    if domain == "ai.onnx.ml":
        return None if op_type in ORT_CPU_ML_OPS else f"ai.onnx.ml op without an onnxruntime CPU kernel"
    if domain == "com.microsoft":
        return None if op_type in ORT_CPU_CONTRIB_OPS else "com.microsoft contrib op with no CPU kernel (GPU-only)"
    return (f"custom domain {domain!r}: onnxruntime has no implementation (custom-op libraries cannot be "
            "packaged); replace the op with standard ONNX ops")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        from edgekit.errors import RuntimeMissingError

        raise RuntimeMissingError(
            "the onnxruntime target needs onnxruntime: pip install 'edgekit[onnxruntime]'"
        ) from None
    return onnxruntime


def _session_check(path: Path, what: str) -> None:
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as err:  # an edgekit bug or an ORT limitation: say which step made it
        raise ModelError(
            f"the {what} model does not load in onnxruntime: {str(err).strip().splitlines()[0]}; "
            "build at another precision, or report this with the model"
        ) from None


def _tensor_specs(model: Any, previous: Sequence[TensorSpec], io: str) -> List[TensorSpec]:
    """Refresh dtypes (fp16 IO) while keeping the canonical shapes and layouts."""
    import numpy as np
    from onnx import helper

    values = model.graph.input if io == "inputs" else model.graph.output
    by_name = {v.name: v for v in values}
    out = []
    for spec in previous:
        v = by_name.get(spec.name)
        if v is None:
            out.append(spec)
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
        out.append(TensorSpec(name=spec.name, shape=spec.shape, dtype=dtype, layout=spec.layout,
                              quantization=spec.quantization))
    return out


class OnnxRuntimeTarget(Target):
    """Any CPU through onnxruntime: fp32, fp16 or static int8 QDQ ``model.onnx``."""

    name = "onnxruntime"
    runtime = "onnxruntime"
    precisions = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})
    description = "any CPU (Raspberry Pi, NUC, laptops) through onnxruntime"
    verify_runtime = "onnxruntime"

    def toolchain(self) -> Tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "pip install 'edgekit[onnxruntime]'"
        import onnxruntime

        return True, f"onnxruntime {onnxruntime.__version__}"

    # -- check ------------------------------------------------------------
    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:
        opsets = _opset_versions(model)
        default_opset = opsets.get("", opsets.get("ai.onnx", 0))
        unsupported: List[UnsupportedNode] = []
        seen = set()
        for name, node in iter_nodes(model.graph):
            domain = node.domain or ""
            opset = default_opset if domain in _DEFAULT_DOMAINS else opsets.get(domain, 1)
            reason = cpu_support(domain, node.op_type, opset)
            if reason is not None and name not in seen:
                seen.add(name)
                unsupported.append(UnsupportedNode(node=name, op_type=f"{domain}::{node.op_type}"
                                                   if domain not in _DEFAULT_DOMAINS else node.op_type,
                                                   reason=reason))
        notes: List[str] = []
        precision = Precision.parse(spec.precision)
        if precision not in self.precisions:  # pragma: no cover - all three are supported
            notes.append(f"precision {precision.value} is not built by this target")
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
        ort = _ort()
        from .canonicalize import save_onnx

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        precision = Precision.parse(spec.precision)
        inputs, outputs = graph_specs(model)
        out_path = workdir / ENTRY
        details: Dict[str, Any] = {"precision": precision.value}
        quantization: Optional[Dict[str, Any]] = None

        if precision is Precision.FP32:
            save_onnx(model, out_path)
        elif precision is Precision.FP16:
            fp16_io = bool(spec.runtime_options.get("fp16_io", False))
            from onnxruntime.transformers.float16 import convert_float_to_float16

            with warnings.catch_warnings():
                # the converter warns about values clamped into fp16 range; we report parity instead
                warnings.simplefilter("ignore")
                half = convert_float_to_float16(model, keep_io_types=not fp16_io)
            save_onnx(half, out_path)
            inputs = _tensor_specs(half, inputs, "inputs")
            outputs = _tensor_specs(half, outputs, "outputs")
            details["fp16_io"] = fp16_io
        else:
            quantization = self._build_int8(model, spec, calibration, workdir, out_path, details)
        verify_options, verify_note = _verify_emulation(details)

        _session_check(out_path, precision.value)
        files = sorted(p.relative_to(workdir).as_posix() for p in workdir.iterdir()
                       if p.is_file() and (p.name == ENTRY or p.name.startswith(ENTRY + ".")))
        return Artifact(
            files=files,
            entry=ENTRY,
            runtime_options=self._runtime_options(spec),
            runtime_versions={"onnxruntime": ort.__version__},
            inputs=inputs,
            outputs=outputs,
            details=details,
            quantization=quantization,
            verify_options=verify_options,
            verify_note=verify_note,
        )

    @staticmethod
    def _runtime_options(spec: BuildSpec) -> Dict[str, Any]:
        device_opts: Mapping[str, Any] = {}
        if spec.device is not None:
            device_opts = getattr(spec.device, "runtime_options", None) or {}
        threads = spec.runtime_options.get("intra_op_num_threads", device_opts.get("intra_op_num_threads"))
        if threads is None and spec.device is not None:
            threads = getattr(spec.device, "threads", None)
        options: Dict[str, Any] = {k: v for k, v in device_opts.items() if k not in _BUILD_ONLY_OPTIONS}
        options.update({k: v for k, v in spec.runtime_options.items() if k not in _BUILD_ONLY_OPTIONS})
        # 0 = onnxruntime's own default (one thread per physical core)
        options["intra_op_num_threads"] = int(threads) if threads is not None else 0
        options.setdefault("execution_providers", ["CPUExecutionProvider"])
        return options

    def _build_int8(
        self,
        model: Any,
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        workdir: Path,
        out_path: Path,
        details: Dict[str, Any],
    ) -> Dict[str, Any]:
        import onnx
        from onnxruntime.quantization import CalibrationMethod as OrtMethod
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from edgekit.quantize.calibration import CalibrationReader
        from edgekit.quantize.recipe import CalibrationMethod, QuantDtype, Recipe

        from .canonicalize import save_onnx

        recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
        if calibration is None or len(calibration) == 0:
            raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
        n = len(calibration)
        used = calibration.for_recipe(recipe.num_samples)

        src = workdir / "_fp32.onnx"
        pre = workdir / "_preprocessed.onnx"
        save_onnx(model, src)
        skip_symbolic = importlib.util.find_spec("sympy") is None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # keep `--json` stdout clean
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic)
            to_quantize = pre
            details["quant_pre_process"] = "done" + (" (symbolic shape inference skipped: no sympy)"
                                                      if skip_symbolic else "")
        except Exception as err:  # pre-processing is an optimisation; quantize the canonical model instead
            to_quantize = src
            details["quant_pre_process"] = f"skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        pre_model = onnx.load(str(to_quantize), load_external_data=False)

        known = {(node.name, node.op_type) for node in pre_model.graph.node}
        node_names = {name for name, _ in known}
        unknown = [name for name in list(recipe.nodes) + list(recipe.exclude_nodes) if name not in node_names]
        if unknown:
            warnings.warn(
                f"quantization recipe names node(s) {sorted(set(unknown))} that the model does not have; "
                "they have no effect (edgekit inspect lists the node names)",
                UserWarning,
                stacklevel=3,
            )
        excluded = sorted(name for name, op in known if name and recipe.config_for(name, op).skip)
        g = recipe.global_config
        arch = _device_arch(spec)
        # x86 int8 kernels without VNNI sum u8×s8 products in pairs into int16 and
        # saturate with full 8-bit weights (the bundled model lost 18 dB of SQNR to
        # it on an AVX2 host); Arm kernels widen properly and keep all 8 bits.
        reduce_range = g.reduce_range if g.reduce_range is not None else arch == "x86_64"
        details["device_arch"] = arch
        details["reduce_range"] = reduce_range
        ignored = sorted(
            key for key, cfg in list(recipe.op_types.items()) + list(recipe.nodes.items())
            if not cfg.skip and (cfg.activation_dtype, cfg.weight_dtype, cfg.per_channel,
                                 cfg.symmetric_activations) != (g.activation_dtype, g.weight_dtype,
                                                                g.per_channel, g.symmetric_activations)
        )
        if ignored:
            warnings.warn(
                f"the onnxruntime target applies one global setting per model plus per-op `skip`; "
                f"the other per-op settings for {ignored} are ignored",
                UserWarning,
                stacklevel=3,
            )

        qtype = {
            QuantDtype.UINT8: QuantType.QUInt8,
            QuantDtype.INT8: QuantType.QInt8,
            QuantDtype.UINT16: QuantType.QUInt16,
            QuantDtype.INT16: QuantType.QInt16,
        }
        method = {
            CalibrationMethod.MINMAX: OrtMethod.MinMax,
            CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
            CalibrationMethod.ENTROPY: OrtMethod.Entropy,
        }[recipe.method]
        extra: Dict[str, Any] = {
            "ActivationSymmetric": g.symmetric_activations,
            "WeightSymmetric": g.weight_dtype is QuantDtype.INT8,
        }
        if recipe.method is CalibrationMethod.PERCENTILE:
            extra["CalibPercentile"] = recipe.percentile
        try:
            # ORT prints calibration progress to stdout; `edgekit ... --json` must print one document only
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(to_quantize),
                    str(out_path),
                    CalibrationReader(used),
                    quant_format=QuantFormat.QDQ,
                    per_channel=g.per_channel,
                    reduce_range=reduce_range,
                    activation_type=qtype[g.activation_dtype],
                    weight_type=qtype[g.weight_dtype],
                    nodes_to_exclude=excluded,
                    calibrate_method=method,
                    use_external_data_format=model.ByteSize() > (2**31 - (64 << 20)),
                    extra_options=extra,
                )
        except (ValueError, TypeError, KeyError) as err:
            # usually calibration feeds that do not fit the model; the loader checks shapes, so say so
            raise CalibrationError(
                f"onnxruntime quantization failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                "check that the calibration data matches the model inputs"
            ) from None
        finally:
            for tmp in (src, pre):
                for p in (tmp, tmp.with_name(tmp.name + ".data")):
                    if p.exists():
                        p.unlink()

        q = onnx.load(str(out_path), load_external_data=False)
        counts: Dict[str, int] = {}
        for node in q.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        dq_outputs = {o for node in q.graph.node if node.op_type == "DequantizeLinear" for o in node.output}
        quantized = sorted(
            node.name for node in q.graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and node.input and all(i in dq_outputs for i in node.input if i)
        )
        details["opset"] = next((int(i.version) for i in q.opset_import if i.domain in _DEFAULT_DOMAINS), None)
        return {
            "format": "qdq",
            "tool": "onnxruntime.quantization.quantize_static",
            "recipe": recipe.to_json(),
            "calibration": used.summary(),
            "calibration_samples_given": n,
            "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
            "dequantize_linear_nodes": counts.get("DequantizeLinear", 0),
            "quantized_nodes": len(quantized),
            "excluded_nodes": excluded,
            "excluded_count": len(excluded),
        }


def _device_arch(spec: BuildSpec) -> str:
    """CPU architecture of the device the package is for: from the profile, else x86_64."""
    arch = None
    if spec.device is not None:
        arch = (getattr(spec.device, "target_options", None) or {}).get("arch")
    return str(arch or "x86_64")


def _verify_emulation(details: Mapping[str, Any]) -> "tuple[Dict[str, Any], str]":
    """Runner options for verifying an Arm int8 package on an x86 host.

    Full 8-bit weights are exact on Arm but saturate in x86's fused int8
    kernels, so on such a host the pipeline verifies with onnxruntime's basic
    optimization level: Q/DQ then execute as exact dequantize → float op →
    quantize, the arithmetic the device's kernels implement.
    """
    import platform

    if details.get("reduce_range") is False and details.get("device_arch") != "x86_64" and \
            platform.machine().lower() in ("x86_64", "amd64"):
        return ({"graph_optimization_level": "basic"},
                "int8 verified with Q/DQ reference semantics (onnxruntime basic level): this x86 host's "
                "fused int8 kernels saturate full-range weights, which the Arm device's kernels do not")
    return {}, ""
