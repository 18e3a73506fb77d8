"""The qnn target: Snapdragon phones, boards and laptops (Hexagon HTP NPU).

Build (every step through onnxruntime and onnxruntime-qnn, no Qualcomm SDK):

1. ``qnn_preprocess_model`` (Erf-GELU → Gelu, ReduceL2 → LpNormalization,
   ReduceMean chains → LayerNormalization) on the canonical fp32 graph; the
   result ships as ``model_fp32.onnx`` (the SNPE/QAIRT converters' input).
2. int8: static Q/DQ quantization with onnxruntime's QNN configuration
   (``get_qnn_qdq_config``: uint8 or uint16 activations, int8/uint8 weights,
   per channel where HTP supports it, the op-specific overrides HTP needs),
   calibrated on the shared feeds, following the recipe node by node
   (:mod:`edgekit.targets.ort_tools`) → ``model_qdq.onnx``.  A detector's
   decode tail gets 16-bit activations so boxes and scores keep their
   resolution on the NPU, and so does every layer kept out of int8 (a
   recipe's skip, the mixed-precision search's layers, the ops every target
   keeps float): 16-bit activations in and out over a range with headroom,
   16-bit weights (per channel where the int8 ones are) — a float node
   inside an int8 HTP graph is not float on the NPU; a kept convolution runs
   as two with 8-bit weights (high and low part) and an Add, since the HTP
   computes A16W8 as the CPU does and A16W16 ~20 dB short (:mod:`.split_weights`).  Before that, two
   rewrites exact in fp32 (int8 only): an STFT magnitude ``Sqrt(a² + b²)``
   becomes one ReduceL2 (:mod:`.magnitude`), and a plain LSTM is unrolled
   into per-step ops whose gates and states each get their own 16-bit range,
   tied across steps and from the state input to the state output
   (:mod:`.recurrence`; build option ``unroll_lstm``).  fp16: the fp32
   graph, computed in fp16 by the HTP.
3. Compile with the QNN execution provider, HTP backend, for the device's HTP
   architecture and SoC model → ``model_ctx.onnx`` (EPContext) plus the QNN
   context binary.  Nodes the HTP refuses stay in the EPContext model for the
   CPU; they are the placement report.
4. AIMET encodings and the exact SNPE / QNN converter commands (:mod:`.snpe`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from edgekit.errors import CalibrationError, ConfigError, UnsupportedModelError

from ..base import Artifact, BuildJob, BuildSpec, CheckFindings, Precision, Target
from ..graph import GraphInfo, detection_tail, graph_specs
from ..ort_tools import ort_method, plan_recipe, qdq_counts, quant_type, quiet_quantizer, range_overrides, \
    unmatched_warning, uses_own_ranges
from ..toolchain import first_line
from .compile import FP32_MODEL, QDQ_MODEL, compile_htp, htp_shaped_fp32
from .config import BUILD_OPTIONS, htp_config
from .magnitude import fuse_magnitudes
from .recurrence import unroll_lstms
from .split_weights import split_convs
from .ops import HTP_MIN_FP16_ARCH, OP_TABLE, dtype_findings
from .snpe import write_snpe_qairt

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

ENTRY = "model_ctx.onnx"


def _toolchain() -> Tuple[Any, Any]:
    from ..toolchain import require

    return require("onnxruntime", "the qnn target", "qnn"), require("onnxruntime_qnn", "the qnn target", "qnn")


class QnnTarget(Target):
    """Hexagon HTP through onnxruntime-qnn: a QNN context binary in an EPContext model."""

    name = "qnn"
    runtime = "qnn"
    precisions = frozenset({Precision.FP16, Precision.INT8})
    description = "Snapdragon phones, boards, laptops: Hexagon HTP NPU (QNN context binary; SNPE/QAIRT encodings)"
    verify_runtime = "qnn"
    requires = {"onnxruntime": "onnxruntime", "onnxruntime_qnn": "onnxruntime-qnn"}
    extra = "qnn"
    op_table = OP_TABLE
    build_options = BUILD_OPTIONS

    def falls_back_to(self, spec: BuildSpec) -> Optional[str]:
        # HTP-less ops are not fatal: they run on the CPU, reported loudly (and --require-npu refuses them)
        return None if self.build_option_values(spec)["require_npu"] else "the CPU (not the HTP)"

    def extra_checks(self, model: "onnx.ModelProto", spec: BuildSpec, graph: GraphInfo) -> CheckFindings:
        cfg = htp_config(spec)
        if Precision.parse(spec.precision) is Precision.FP16 and cfg.arch < HTP_MIN_FP16_ARCH:
            raise ConfigError(
                f"HTP v{cfg.arch} ({cfg.soc}) has no fp16 compute (fp16 needs v{HTP_MIN_FP16_ARCH}+); "
                "build --precision int8 for this device"
            )
        return CheckFindings(unsupported=dtype_findings(model, graph),
                             notes=(f"HTP v{cfg.arch} ({cfg.soc}, soc_model {cfg.soc_model}) from {cfg.source}",))

    def _build(self, job: BuildJob) -> Artifact:
        ort, qnn = _toolchain()
        model, spec, precision, workdir, calibration = job.model, job.spec, job.precision, job.workdir, job.calibration
        cfg = htp_config(spec)
        inputs, outputs = graph_specs(model)
        details: Dict[str, Any] = {"precision": precision.value, **cfg.to_json()}

        fp32_path = htp_shaped_fp32(model, workdir, details)
        files: List[str] = []  # the device package: the EPContext model and its context binaries only
        quantization: Optional[Dict[str, Any]] = None
        compile_src = fp32_path
        if precision is Precision.INT8:
            compile_src = workdir / QDQ_MODEL
            rewrites = _htp_int8_rewrites(fp32_path, details, unroll=job.options["unroll_lstm"], recipe=spec.recipe,
                                          split=job.options["split_16_bit_convs"])
            quantization = _quantize(fp32_path, compile_src, spec, calibration, rewrites)

        placement, binaries, sdk = compile_htp(ort, qnn, compile_src, workdir / ENTRY, cfg, precision)
        details.update(placement=placement, context_binary=f"model/{binaries[0]}",
                       context_binaries=[f"model/{b}" for b in binaries], qairt_sdk=sdk)
        files += [ENTRY, *binaries]
        _report_cpu_nodes(placement, job.options["require_npu"])
        sidecars = [FP32_MODEL] + ([QDQ_MODEL] if precision is Precision.INT8 else [])
        sidecars += write_snpe_qairt(
            workdir, cfg=cfg, precision=precision, inputs=inputs, fp32_model=FP32_MODEL,
            qdq_model=QDQ_MODEL if precision is Precision.INT8 else None, calibration=calibration,
            per_channel=spec.recipe.global_config.per_channel, details=details)
        _export_sidecars(workdir, sidecars, job.options.get("snpe_export_dir"), details)

        runtime_options = self.runtime_option_values(spec)
        runtime_options.update({"htp_arch": cfg.arch, "soc_model": cfg.soc_model})
        runtime_options.setdefault("htp_performance_mode", "burst")
        return Artifact(
            files=files,
            entry=ENTRY,
            runtime_options=runtime_options,
            runtime_versions={"onnxruntime": ort.__version__, "onnxruntime-qnn": qnn.__version__, "qairt": sdk},
            inputs=inputs,
            outputs=outputs,
            details=details,
            quantization=quantization,
        )


def _export_sidecars(workdir: Path, sidecars: List[str], export_dir: Optional[str], details: Dict[str, Any]) -> None:
    """SNPE/QAIRT files go to ``export_dir`` (``edgekit export snpe``), never into the package (issue 10)."""
    import shutil

    for key in ("snpe_qairt", "aimet_encodings"):  # their paths are relative to the export folder now
        if isinstance(details.get(key), dict):
            details[key] = {k: (v[len("model/"):] if isinstance(v, str) and v.startswith("model/") else v)
                            for k, v in details[key].items()}
    if isinstance(details.get("snpe_qairt"), dict):
        details["snpe_qairt"]["run_from"] = "the folder written by `edgekit export snpe PKG DIR`"
    enc = workdir / "model.encodings"
    if enc.is_file() and isinstance(details.get("aimet_encodings"), dict):
        import hashlib  # lets an export prove its encodings are this package's ranges

        details["aimet_encodings"]["sha256"] = hashlib.sha256(enc.read_bytes()).hexdigest()
    if not export_dir:
        return
    out = Path(export_dir)
    for rel in sidecars:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workdir / rel, dst)


def _report_cpu_nodes(placement: Dict[str, Any], require_npu: bool) -> None:
    if not placement["cpu_nodes"]:
        return
    listed = ", ".join(f"{n['node']} ({n['op_type']})" for n in placement["cpu_nodes"])
    if require_npu:
        raise UnsupportedModelError(
            f"--require-npu: {len(placement['cpu_nodes'])} node(s) would leave the HTP and run on the "
            f"CPU: {listed}; replace those ops, or build without --require-npu"
        )
    warnings.warn(
        f"NOT ALL ON THE NPU: {len(placement['cpu_nodes'])} of {placement['total_nodes']} node(s) fall "
        f"back to the CPU on the Snapdragon: {listed} (use --require-npu to make this an error)",
        UserWarning,
        stacklevel=4,
    )


@dataclass(frozen=True)
class HtpRewrites:
    """What the int8 rewrites of the fp32 graph added: nodes that stand for an op every target keeps float
    (so they are 16-bit here), each with the name of that op for the manifest, and the groups of tensors
    that share one range (an unrolled LSTM's steps)."""

    kept_nodes: Mapping[str, str] = field(default_factory=dict)
    tied: Tuple[Tuple[str, ...], ...] = ()
    #: weights of split convolutions (:mod:`.split_weights`) -> their per-channel axis (None: per tensor): 8 bits
    split_weights: Mapping[str, Optional[int]] = field(default_factory=dict)


def _htp_int8_rewrites(path: Path, details: Dict[str, Any], *, unroll: bool = True, recipe: Any = None,
                       split: bool = True) -> HtpRewrites:
    """int8 only, in ``model_fp32.onnx`` itself: STFT magnitudes as one ReduceL2 each (:mod:`.magnitude`),
    plain LSTMs unrolled into per-step ops (:mod:`.recurrence`), the convolutions the recipe keeps out of
    int8 as a high and a low 8-bit part (:mod:`.split_weights`).  All exact in fp32."""
    import onnx

    model = onnx.load(str(path))
    magnitudes = fuse_magnitudes(model)
    unrolled, left = unroll_lstms(model) if unroll else ([], {})
    kept = {nd.name for nd in model.graph.node
            if nd.name and recipe is not None and recipe.skips(nd.name, nd.op_type)} if split else set()
    splits = split_convs(model, kept, per_channel=recipe.global_config.per_channel) if kept else []
    if magnitudes or unrolled or splits:
        onnx.save(model, str(path))
    if magnitudes:
        details["magnitudes_fused"] = [m.to_json() for m in magnitudes]
    if unrolled or left:
        details["lstm_unrolled"] = {"unrolled": [u.to_json() for u in unrolled], "left_as_one_op": left}
    if splits:
        details["convs_split_into_8_bit_parts"] = len(splits)
    return HtpRewrites(kept_nodes={n: r.node for r in (*magnitudes, *unrolled, *splits) for n in r.added},
                       tied=tuple(group for u in unrolled for group in u.tied),
                       split_weights={w: sc.axis for sc in splits for w in (sc.high, sc.low)})


def _skips_as_16_bit(recipe: Any, model: Any,
                     rewrites: HtpRewrites = HtpRewrites()) -> Tuple[Any, List[str], Dict[str, List[Dict[str, Any]]]]:
    """The recipe without its float nodes (``exclude_nodes``, ``exclude_op_types``, ``skip``; the
    mixed-precision search adds its layers to ``exclude_nodes``), the names of those nodes, and the
    tensor overrides that give every activation they read or write 16 bits instead.

    A float node between Q/DQ pairs of an int8 HTP graph is not float on the HTP: it stays on the NPU
    (no CPU fallback) and computes there in low precision — the PP-OCR text-line classifier went from
    14.7 dB all-int8 to 2.7 dB with 49 of its 127 layers "float".  Sixteen-bit activations in and out
    (A16W8, the HTP's own higher-precision mode) are what keeping a layer out of int8 means here."""
    from dataclasses import replace

    import onnx
    from onnxruntime.quantization import QuantType

    from edgekit.quantize.sensitivity import QUANTIZABLE, WEIGHTED

    from ..graph import ALWAYS_FLOAT_OPS

    inits = {t.name for t in model.graph.initializer}
    float_inits = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    # what the other targets keep float, recurrent state and STFT magnitudes included (also once rewritten for
    # the HTP: a magnitude's stack, an unrolled LSTM's steps), gets 16 bits here
    kept = [nd for nd in model.graph.node if nd.op_type in ALWAYS_FLOAT_OPS or nd.name in rewrites.kept_nodes
            or (nd.name and recipe.skips(nd.name, nd.op_type))]
    if not kept:
        return recipe, [], {}
    wide_tensors = {t for nd in kept for t in list(nd.input) + list(nd.output) if t and t not in inits}
    # an op the search does not switch on its own (PReLU, Relu, Reshape, ...) follows its 16-bit producers,
    # as it follows float ones on the other targets: else a kept layer's output is rounded to 8 bits after all
    for nd in model.graph.node:
        acts = [t for t in nd.input if t and t not in inits]
        if nd.op_type not in QUANTIZABLE and acts and all(t in wide_tensors for t in acts):
            wide_tensors.update(o for o in nd.output if o)
    overrides = {t: [{"quant_type": QuantType.QUInt16}] for t in sorted(wide_tensors)}
    for nd in kept:
        if len(nd.input) > 1 and nd.input[1] in rewrites.split_weights:
            # a split convolution's two parts: 8-bit weights on the grid the split put them on (A16W8, which the
            # HTP computes as the CPU does; see split_weights)
            axis = rewrites.split_weights[nd.input[1]]
            overrides[nd.input[1]] = [{"quant_type": QuantType.QInt8, "symmetric": True,
                                       **({"axis": axis} if axis is not None else {})}]
        elif nd.op_type in WEIGHTED and len(nd.input) > 1 and nd.input[1] in inits:
            w16: Dict[str, Any] = {"quant_type": QuantType.QInt16, "symmetric": True}
            axis = _CHANNEL_AXIS.get(nd.op_type)
            # per channel as the int8 weights were: per-tensor int16 weights of Silero's encoder (channels
            # 140x apart) left its convolutions at 25-40 dB on the HTP, per channel at 42-57 dB
            if recipe.global_config.per_channel and axis is not None and _group(nd) == 1:
                w16["axis"] = axis
            overrides[nd.input[1]] = [w16]
        elif nd.name in rewrites.kept_nodes:
            # an unrolled gate's bias and other constants: 16 bits like the weights
            for t in nd.input:
                if t in float_inits and t not in overrides:
                    overrides[t] = [{"quant_type": QuantType.QInt16, "symmetric": True}]
        elif nd.op_type in _RECURRENT_PARAMETERS:
            # the quantizer gives a recurrent cell's W, R and B 8 bits per tensor like activations: 16 here
            # (Silero's LSTM on the HTP: hn 24.5 -> 28.7 dB)
            for i in _RECURRENT_PARAMETERS[nd.op_type]:
                if i < len(nd.input) and nd.input[i] in inits:
                    overrides[nd.input[i]] = [{"quant_type": QuantType.QInt16, "symmetric": True}]
    plain = replace(recipe, exclude_nodes=(), exclude_op_types=(),
                    global_config=replace(recipe.global_config, skip=False),
                    op_types={k: replace(c, skip=False) for k, c in recipe.op_types.items()},
                    nodes={k: replace(c, skip=False) for k, c in recipe.nodes.items()})
    # an unrolled LSTM's ~700 nodes are listed as the one LSTM they stand for
    return plain, sorted({rewrites.kept_nodes.get(nd.name, nd.name) for nd in kept}), overrides


#: the output-channel axis of a weight, for per-channel 16-bit weights (Conv [O, I, k...], ConvTranspose [I, O, k...])
_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


#: a recurrent cell's parameter inputs: W, R, B
_RECURRENT_PARAMETERS = {"LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}

#: a recurrent cell's state inputs and the outputs that carry the state on: initial_h -> Y_h, initial_c -> Y_c
_STATE_PAIRS = {"LSTM": ((5, 1), (6, 2)), "GRU": ((5, 1),), "RNN": ((5, 1),)}


#: a 16-bit tensor's range is its calibrated one widened by this share of its width on each side: a
#: layer kept out of int8 must not clip what calibration did not see (MTCNN's box output on held-out faces
#: stayed at 20 dB at 16 bits with the calibrated range); 16 bits leave ~85 dB after the widening
WIDE_HEADROOM = 1.0


def _wide_ranges(model: Any, overrides: Dict[str, List[Dict[str, Any]]], used: Any,
                 tied: Sequence[Sequence[str]] = ()) -> Dict[str, List[Dict[str, Any]]]:
    """The 16-bit tensor overrides with ``rmin``/``rmax``: calibrated min-max plus :data:`WIDE_HEADROOM`."""
    import numpy as np

    from edgekit.quantize.ranges import float_tensors, ranges

    floats = float_tensors(model)
    # bounded outputs keep the range the quantizer gives them (the HTP wants its fixed encodings there)
    bounded = {o for nd in model.graph.node if nd.op_type in _BOUNDED_OUTPUT_OPS for o in nd.output}
    found = ranges(model, [dict(f) for f in used.feeds],
                   names=sorted(t for t in overrides if t in floats and t not in bounded))
    # a state input is calibrated on the initial state (zeros: a range of 0), but a stream feeds the cell's
    # state outputs back into it: it takes the range of the state it is fed, or every carried state is clipped
    groups = [list(g) for g in tied] + [[nd.input[i], nd.output[o]] for nd in model.graph.node
                                        for i, o in _STATE_PAIRS.get(nd.op_type, ()) if i < len(nd.input) and o < len(nd.output)]
    for group in groups:
        have = [found[t] for t in group if t in found]
        if have:
            lo, hi = min(r[0] for r in have), max(r[1] for r in have)
            found.update({t: (lo, hi) for t in group if t in found})
    out = {k: [dict(v[0])] for k, v in overrides.items()}
    for tensor, (lo, hi) in found.items():
        pad = WIDE_HEADROOM * (hi - lo)
        # a tensor that never went negative (after a ReLU) keeps 0 as its floor
        out[tensor][0].update(rmin=np.float32(lo - pad if lo < 0 else 0.0), rmax=np.float32(hi + pad))
    # the HTP writes a 16-bit HardSigmoid's output on [0, 1] whatever encoding the graph asks for (as it does a
    # Sigmoid's): PP-OCRv4 rec's SE gate, calibrated [0, 0.73], read 11 dB when its codes were read with the
    # graph's scale. The value passed on is right; the graph, and the AIMET encodings exported from it, now say so
    for nd in model.graph.node:
        if nd.op_type == "HardSigmoid" and nd.output[0] in out:
            out[nd.output[0]][0].update(rmin=np.float32(0.0), rmax=np.float32(1.0))
    return out


_BOUNDED_OUTPUT_OPS = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "Tanh", "LogSoftmax", "Relu", "Clip",
                                 "HardSwish"})


def _quantize(src: Path, out: Path, spec: BuildSpec, calibration: Optional["CalibrationSet"],
              rewrites: HtpRewrites = HtpRewrites()) -> Dict[str, Any]:
    """HTP Q/DQ (onnxruntime's QNN configuration) that follows the recipe node by node."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    from edgekit.quantize.calibration import CalibrationReader, CalibrationSet
    from edgekit.quantize.recipe import CalibrationMethod, QuantDtype

    fp32 = onnx.load(str(src), load_external_data=False)
    recipe, widened, wide_tensors = _skips_as_16_bit(spec.recipe, fp32, rewrites)
    used, n = CalibrationSet.required(calibration, recipe.num_samples)
    g = recipe.global_config
    # HTP takes unsigned activations; the detector tail gets 16 bits so boxes and scores both resolve
    plan = plan_recipe(fp32, recipe, target="qnn", activation_dtypes=(QuantDtype.UINT8, QuantDtype.UINT16),
                       weight_dtypes=(QuantDtype.INT8, QuantDtype.UINT8), reduce_range=False,
                       tail=detection_tail(fp32), tail_dtype=QuantDtype.UINT16)
    unmatched_warning(plan.unmatched)
    overrides: Dict[str, List[Dict[str, Any]]] = dict(plan.overrides)
    if wide_tensors:  # the layers kept out of int8: 16-bit in and out, over a range with headroom
        overrides.update(_wide_ranges(onnx.load(str(src)), wide_tensors, used, rewrites.tied))
    inits = {t.name for t in fp32.graph.initializer}
    for nd in fp32.graph.node:
        # HTP's quantized LayerNorm rejects a signed-symmetric gamma (backendValidateOpConfig error 3110,
        # the node falls back to the CPU); an asymmetric uint8 gamma keeps it on the NPU
        if nd.op_type == "LayerNormalization" and len(nd.input) > 1 and nd.input[1] in inits \
                and g.weight_dtype is QuantDtype.INT8 and nd.input[1] not in overrides:
            overrides[nd.input[1]] = [{"quant_type": QuantType.QUInt8, "symmetric": False}]
    if uses_own_ranges(recipe):
        # per-op range rules (and MSE) from edgekit's own ranges; onnxruntime calibrates the rest
        overrides = range_overrides(onnx.load(str(src)), recipe, [dict(f) for f in used.feeds], overrides)
    try:
        qconfig = get_qnn_qdq_config(
            fp32, CalibrationReader(used), calibrate_method=ort_method(recipe),
            activation_type=quant_type(g.activation_dtype), weight_type=quant_type(g.weight_dtype),
            per_channel=g.per_channel, activation_symmetric=g.symmetric_activations,
            init_overrides=overrides or None, nodes_to_exclude=plan.nodes_to_exclude or None,
        )
        if recipe.method is CalibrationMethod.PERCENTILE:
            qconfig.extra_options["CalibPercentile"] = recipe.percentile
        with quiet_quantizer():
            quantize(str(src), str(out), qconfig)
    except (ValueError, TypeError, KeyError) as err:
        raise CalibrationError(f"onnxruntime QNN quantization failed: {first_line(err)}; "
                               "check that the calibration data matches the model inputs") from None
    counts, _ = qdq_counts(onnx.load(str(out), load_external_data=False))
    return {
        "format": "qdq",
        "tool": "onnxruntime.quantization (get_qnn_qdq_config + quantize)",
        "activations": g.activation_dtype.value,
        "weights": g.weight_dtype.value,
        "per_channel": g.per_channel,
        "recipe": recipe.to_json(),
        "calibration": used.summary(),
        "calibration_samples_given": n,
        "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
        "dequantize_linear_nodes": counts.get("DequantizeLinear", 0),
        "mixed_precision_tensors": sorted(overrides),
        "kept_out_of_int8_as_16_bit": widened,
        **plan.to_json(),
    }
