"""The onnxruntime target: any CPU (Raspberry Pi, NUC, laptops).

The artifact is ``model.onnx``: the canonical fp32 graph, an fp16 graph
(``onnxruntime.transformers.float16``; fp32 IO kept unless the build option
``fp16_io``), or a static int8 QDQ graph
(``onnxruntime.quantization.quantize_static``) that follows the recipe node
by node (:mod:`edgekit.targets.ort_tools`).

``check`` needs no onnxruntime: :data:`OP_TABLE` is data.  The
default-domain op set is every ONNX schema ``onnx.defs`` knows, minus the
(op, schema version) pairs for which onnxruntime's CPU execution provider
registers no kernel (:data:`ORT_CPU_LACKS`).  The table was derived from
onnxruntime 1.32's kernel registry
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
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from edgekit.manifest import TensorSpec
from edgekit.options import Option, OptionSchema

from .base import FLOAT_AND_INT8, Artifact, BuildJob, BuildSpec, Precision, Target
from .graph import detection_tail, graph_specs
from .optable import NodeView, OpRule, OpTable, conditional, unsupported
from .ort_int8_graph import pools_after_float
from .ort_tools import artifact_files, load_check, ort, ort_method, plan_recipe, qdq_counts, quant_type, \
    quiet_quantizer, range_overrides, unmatched_warning, \
    uses_own_ranges

if TYPE_CHECKING:  # pragma: no cover

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



def _schema_rule(view: NodeView) -> Optional[str]:
    """Any default-domain op with an ONNX schema at the model's opset that is not deprecated."""
    from onnx import defs

    if view.op_type in ORT_CPU_EXTRA_DEFAULT_OPS:
        return None
    try:
        schema = defs.get_schema(view.op_type, view.opset, "")
    except defs.SchemaError:
        return (f"not an ONNX op at opset {view.opset} (a custom op needs its own domain, and onnxruntime "
                "has no kernel for it)")
    if schema.deprecated:
        return f"deprecated in ONNX opset {schema.since_version}; re-export with its replacement"
    return None


def _lacking(op: str, version: int) -> Tuple[OpRule, ...]:
    """The schema rule below ``version``; no CPU kernel from it on (every gap is at an op's newest schema)."""
    return (conditional(_schema_rule, until=version - 1),
            unsupported(f"onnxruntime {OP_TABLE_ORT_VERSION} has no CPU kernel for {op}-{version} (the version "
                        f"this opset selects); re-export with an opset below {version}", since=version))


OP_TABLE = OpTable.build(
    "onnxruntime",
    f"onnxruntime {OP_TABLE_ORT_VERSION} CPU execution provider",
    supported_ops={"": ORT_CPU_EXTRA_DEFAULT_OPS, "ai.onnx.ml": ORT_CPU_ML_OPS, "com.microsoft": ORT_CPU_CONTRIB_OPS},
    rules={("", op): _lacking(op, min(versions)) for op, versions in ORT_CPU_LACKS.items()},
    domain_defaults={"": conditional(_schema_rule, reason="with an ONNX schema at the model's opset")},
    unknown_domain=("custom domain {domain!r}: onnxruntime has no implementation (custom-op libraries cannot be "
                    "packaged); replace the op with standard ONNX ops"),
)

#: onnxruntime graph optimizers an int8 package turns off (runner option ``disabled_optimizers``).
#: QDQPropagationTransformer moves a QuantizeLinear above MaxPool/Reshape/Transpose/Squeeze/Unsqueeze/Slice and a
#: DequantizeLinear below them, so an op the build left float between a float producer and an int8 consumer runs
#: on uint8 instead — exact (those ops commute with the rounding), but a uint8 MaxPool in NCHW layout is
#: onnxruntime's generic pooling loop: MTCNN O-Net's first pool (its convolution kept float by mixed precision)
#: took 404 µs of the package's 937 µs of kernel time, against ~7 µs in float; with the transformer off the
#: package takes 0.51x the CPU time, outputs bit-identical.  0.96-1.0x on six other packages of the suite
#: (text-line cls, PP-LCNet, Silero, YOLOv8n, YOLOX, PP-OCRv4 det; one thread, CPU time, same package).
INT8_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)

#: CPU architectures whose int8 kernels widen products properly (no reduce_range needed)
_ARM_ARCHS = ("arm64", "aarch64", "armv7l", "armv8")


def _tensor_specs(model: Any, previous: Sequence[TensorSpec], io: str) -> List[TensorSpec]:
    """Refresh dtypes (fp16 IO) while keeping the canonical shapes and layouts."""
    import dataclasses

    import numpy as np
    from onnx import helper

    values = {v.name: v for v in (model.graph.input if io == "inputs" else model.graph.output)}

    def dtype(name: str) -> str:
        return np.dtype(helper.tensor_dtype_to_np_dtype(values[name].type.tensor_type.elem_type)).name

    return [dataclasses.replace(spec, dtype=dtype(spec.name)) if spec.name in values else spec for spec in previous]


class OnnxRuntimeTarget(Target):
    """Any CPU through onnxruntime: fp32, fp16 or static int8 QDQ ``model.onnx``."""

    name = "onnxruntime"
    runtime = "onnxruntime"
    precisions = FLOAT_AND_INT8
    description = "any CPU (Raspberry Pi, NUC, laptops) through onnxruntime"
    verify_runtime = "onnxruntime"
    requires = {"onnxruntime": "onnxruntime"}
    extra = "onnxruntime"
    op_table = OP_TABLE
    #: a Focus stem's SpaceToDepth → Conv as one Conv (ddddocr YOLOX int8: 0.92–0.98× the CPU time)
    int8_rewrites = ("space_to_depth_into_conv",)
    build_options = OptionSchema("onnxruntime target", [
        Option("fp16_io", bool, False, "fp16: float16 model inputs and outputs too (default: keep float32 IO)"),
        Option("arch", str, None, "the device's CPU architecture (x86_64, arm64): decides int8 reduce_range",
               choices=("x86_64", "arm64", "aarch64", "armv7l")),
        Option("vnni", bool, None, "x86 device: whether its CPU has VNNI (default: this build host's answer)"),
    ])

    def _build(self, job: BuildJob) -> Artifact:
        rt = ort()
        from .canonicalize import save_onnx

        model, spec, precision, options = job.model, job.spec, job.precision, job.options
        inputs, outputs = graph_specs(model)
        out_path = job.workdir / ENTRY
        details: Dict[str, Any] = {"precision": precision.value}
        quantization: Optional[Dict[str, Any]] = None

        # what the CPU execution provider computes in, on the device and while verifying here (it never downcasts)
        details["execution_precision"] = {Precision.FP32: "f32", Precision.INT8: "int8 Q/DQ (float between)"}.get(
            precision, "f16 where the CPU EP has float16 kernels, f32 (inserted casts) elsewhere")
        if precision is Precision.FP32:
            # every 1-D convolution as a 2-D one, which onnxruntime gives MLAS's blocked kernels (exact up to
            # summation order): Silero VAD fp32, one thread, 1.48 -> 0.59 ms CPU per inference
            convs = _conv1d_names(model)
            if convs:
                from .ort_int8_graph import conv1d_as_conv2d

                model = _copy(model)
                details["float_convs_as_2d"] = conv1d_as_conv2d(model, convs)[0]
            save_onnx(model, out_path)
        elif precision is Precision.FP16:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            with warnings.catch_warnings():
                # the converter warns about values clamped into fp16 range; we report parity instead
                warnings.simplefilter("ignore")
                half = convert_float_to_float16(model, keep_io_types=not options["fp16_io"])
            save_onnx(half, out_path)
            inputs = _tensor_specs(half, inputs, "inputs")
            outputs = _tensor_specs(half, outputs, "outputs")
            details["fp16_io"] = options["fp16_io"]
        else:
            quantization = self._build_int8(job, out_path, details)
        verify_options, verify_note = _verify_emulation(details)

        load_check(out_path, precision.value)
        runtime_options = self._runtime_options(spec)
        if precision is Precision.INT8:  # the Q/DQ placement built and verified is the one the device runs
            runtime_options.setdefault("disabled_optimizers", list(INT8_DISABLED_OPTIMIZERS))
        return Artifact(files=artifact_files(job.workdir, ENTRY), entry=ENTRY, inputs=inputs, outputs=outputs,
                        runtime_options=runtime_options, runtime_versions={"onnxruntime": rt.__version__},
                        details=details, quantization=quantization, verify_options=verify_options,
                        verify_note=verify_note)

    def _runtime_options(self, spec: BuildSpec) -> Dict[str, Any]:
        device_opts: Mapping[str, Any] = {}
        if spec.device is not None:
            device_opts = getattr(spec.device, "runtime_options", None) or {}
        options: Dict[str, Any] = {k: v for k, v in device_opts.items() if k not in self.build_options}
        options.update({k: v for k, v in spec.runtime_options.items() if k not in self.build_options})
        if "threads" not in options:
            threads = options.pop("intra_op_num_threads", None)
            if threads is None and spec.device is not None:
                threads = getattr(spec.device, "threads", None)
            # 0 = onnxruntime's own default (one thread per physical core)
            options["intra_op_num_threads"] = int(threads) if threads is not None else 0
        options.setdefault("execution_providers", ["CPUExecutionProvider"])
        return options

    def _build_int8(self, job: BuildJob, out_path: Path, details: Dict[str, Any]) -> Dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantFormat, quantize_static

        from edgekit.quantize.calibration import CalibrationReader, CalibrationSet
        from edgekit.quantize.recipe import ACTIVATION_DTYPES, WEIGHT_DTYPES, CalibrationMethod, QuantDtype, Recipe

        model, spec, workdir = job.model, job.spec, job.workdir
        recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
        used, n = CalibrationSet.required(job.calibration, recipe.num_samples)
        src = workdir / "_fp32.onnx"
        pre = workdir / "_preprocessed.onnx"
        try:
            to_quantize = _pre_process(model, src, pre, details)
            pre_model = onnx.load(str(to_quantize), load_external_data=False)
            g = recipe.global_config
            reduce_range, why = _reduce_range(g.reduce_range, job.options)
            details.update(reduce_range=reduce_range, reduce_range_reason=why)
            plan = plan_recipe(pre_model, recipe, target=self.name, activation_dtypes=ACTIVATION_DTYPES,
                               weight_dtypes=WEIGHT_DTYPES, reduce_range=reduce_range,
                               tail=detection_tail(pre_model))
            unmatched_warning(plan.unmatched)
            pools_float = pools_after_float(pre_model, plan.nodes_to_exclude)
            # float 1-D convolutions the recipe or the search keeps: as 2-D ones onnxruntime gives its blocked
            # kernels (the helper Unsqueeze/Pad/Squeeze stay float with them)
            convs_2d, helpers_2d = _float_convs_as_2d(to_quantize, plan.nodes_to_exclude)
            extra: Dict[str, Any] = {
                "ActivationSymmetric": g.symmetric_activations,
                "WeightSymmetric": g.weight_dtype is QuantDtype.INT8,
            }
            from edgekit.quantize.ranges import natural_range_overrides

            # bounded ops' outputs (Sigmoid, Softmax, HardSigmoid, Tanh) take their natural range, not the data's
            overrides = natural_range_overrides(pre_model, plan.overrides)
            if uses_own_ranges(recipe):
                # per-op range rules (and MSE) from edgekit's own ranges, on the graph the quantizer reads
                overrides = range_overrides(onnx.load(str(to_quantize)), recipe, [dict(f) for f in used.feeds],
                                            overrides)
            if overrides:
                extra["TensorQuantOverrides"] = overrides
            if recipe.method is CalibrationMethod.PERCENTILE:
                extra["CalibPercentile"] = recipe.percentile
            with quiet_quantizer():
                quantize_static(
                    str(to_quantize), str(out_path), CalibrationReader(used),
                    quant_format=QuantFormat.QDQ, per_channel=g.per_channel, reduce_range=reduce_range,
                    activation_type=quant_type(g.activation_dtype), weight_type=quant_type(g.weight_dtype),
                    nodes_to_exclude=plan.nodes_to_exclude + pools_float + helpers_2d,
                    calibrate_method=ort_method(recipe),
                    use_external_data_format=model.ByteSize() > (2**31 - (64 << 20)), extra_options=extra,
                )
        except (ValueError, TypeError, KeyError) as err:
            from edgekit.errors import CalibrationError

            # usually calibration feeds that do not fit the model; the loader checks shapes, so say so
            raise CalibrationError(
                f"onnxruntime quantization failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                "check that the calibration data matches the model inputs"
            ) from None
        finally:
            for tmp in (src, pre):
                for p in (tmp, tmp.with_name(tmp.name + ".data")):
                    p.unlink(missing_ok=True)

        requantized = _hardsigmoids_as_requantize(out_path, plan.nodes_to_exclude + pools_float)
        q = onnx.load(str(out_path), load_external_data=False)
        counts, quantized = qdq_counts(q)
        details["opset"] = next((int(i.version) for i in q.opset_import if i.domain in ("", "ai.onnx")), None)
        return {
            "format": "qdq",
            "tool": "onnxruntime.quantization.quantize_static",
            "recipe": recipe.to_json(),
            "calibration": used.summary(),
            "calibration_samples_given": n,
            "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
            "dequantize_linear_nodes": counts.get("DequantizeLinear", 0),
            "quantized_nodes": len(quantized),
            **plan.to_json(),
            "pools_kept_float": pools_float,
            "float_convs_as_2d": convs_2d,
            "hardsigmoids_requantized": len(requantized),
        }


def _pre_process(model: Any, src: Path, pre: Path, details: Dict[str, Any]) -> Path:
    """onnxruntime's quantization pre-processing (shape inference, fusions); an optimisation only."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .canonicalize import save_onnx

    save_onnx(model, src)
    skip_symbolic = importlib.util.find_spec("sympy") is None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # keep `--json` stdout clean
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic)
    except Exception as err:  # quantize the canonical model instead
        details["quant_pre_process"] = f"skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        return src
    details["quant_pre_process"] = "done" + (" (symbolic shape inference skipped: no sympy)" if skip_symbolic else "")
    return pre


def _load_to_rewrite(path: Path, applies: Callable[[Any], bool]) -> Any:
    """The graph at ``path`` with its weights, to rewrite in place and save back; None when ``applies`` (asked of
    the graph without its weights) says there is nothing to rewrite, or for a >2 GB graph, whose data file the
    quantizer named: that one is left as written."""
    import onnx

    light = onnx.load(str(path), load_external_data=False)
    if not applies(light) or any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.graph.initializer):
        return None
    return onnx.load(str(path))


def _hardsigmoids_as_requantize(path: Path, excluded: Sequence[str]) -> List[str]:
    """:func:`~edgekit.targets.ort_int8_graph.hardsigmoid_as_requantize` on the int8 graph at ``path``, in place."""
    from .canonicalize import save_onnx
    from .ort_int8_graph import hardsigmoid_as_requantize

    model = _load_to_rewrite(path, lambda g: any(n.op_type == "HardSigmoid" for n in g.graph.node))
    if model is None:
        return []
    done = hardsigmoid_as_requantize(model, excluded)
    if done:
        save_onnx(model, path)
    return done


def _conv1d_names(model: Any) -> List[str]:
    """Names of the default-domain convolutions with a constant 1-D weight ([out, in/group, k])."""
    one_d = {t.name for t in model.graph.initializer if len(t.dims) == 3}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and (n.domain or "") in ("", "ai.onnx")
            and n.name and len(n.input) > 1 and n.input[1] in one_d]


def _copy(model: Any) -> Any:
    """A copy of ``model`` to rewrite: the canonical model is the pipeline's, read again after the build."""
    out = type(model)()
    out.CopyFrom(model)
    return out


def _float_convs_as_2d(path: Path, excluded: Sequence[str]) -> Tuple[List[str], List[str]]:
    """:func:`~edgekit.targets.ort_int8_graph.conv1d_as_conv2d` on the float-kept convolutions of the graph at
    ``path``, in place: the convolutions rewritten and the helper nodes written (to keep float with them)."""
    from .canonicalize import save_onnx
    from .ort_int8_graph import conv1d_as_conv2d

    keep = set(excluded)
    model = _load_to_rewrite(path, lambda g: bool(keep.intersection(_conv1d_names(g))))
    if model is None:
        return [], []
    convs, helpers = conv1d_as_conv2d(model, keep)
    if convs:
        save_onnx(model, path)
    return convs, helpers


def _reduce_range(recipe_value: Optional[bool], options: Mapping[str, Any]) -> Tuple[bool, str]:
    """7-bit weights only where the device's int8 kernels would saturate: x86 without VNNI.

    x86 u8×s8 kernels without VNNI (vpmaddubsw) sum products in pairs into
    int16 and saturate with full 8-bit weights (the bundled model lost 18 dB of
    SQNR to it on an AVX2 host); VNNI accumulates in int32 and Arm kernels
    widen properly.  The device's features come from its profile
    (``arch``/``vnni``); otherwise the package is for this kind of CPU, so
    this host's detected features decide.
    """
    from edgekit.cpu import cpu_features

    if recipe_value is not None:
        return recipe_value, "set by the recipe"
    arch = options.get("arch")
    if arch in _ARM_ARCHS:
        return False, f"{arch} device: its int8 kernels widen products (no saturation)"
    if options.get("vnni") is not None:
        has = bool(options["vnni"])
        return not has, f"device profile: vnni={str(has).lower()}"
    cpu = cpu_features()
    if arch is None and not cpu.is_x86:
        return False, f"built for this {cpu.machine} host's kind of CPU: no saturation"
    return (not cpu.vnni, f"x86 device, VNNI unknown: this host's CPU {'has' if cpu.vnni else 'lacks'} VNNI "
                          f"(detected from {cpu.source})")


def _verify_emulation(details: Mapping[str, Any]) -> "tuple[Dict[str, Any], str]":
    """Runner options for verifying full-range int8 weights on a host whose kernels would saturate them.

    Full 8-bit weights are exact on Arm and with VNNI but saturate in x86's
    fused int8 kernels without VNNI, so on such a host the pipeline verifies
    with onnxruntime's basic optimization level: Q/DQ then execute as exact
    dequantize → float op → quantize, the arithmetic the device's kernels
    implement.
    """
    from edgekit.cpu import cpu_features

    cpu = cpu_features()
    if details.get("reduce_range") is False and cpu.is_x86 and not cpu.vnni:
        return ({"graph_optimization_level": "basic"},
                "int8 verified with Q/DQ reference semantics (onnxruntime basic level): this x86 host's "
                "int8 kernels (no VNNI) saturate full-range weights, which the device's kernels do not")
    return {}, ""
