"""int8 for the openvino target: NNCF post-training quantization of the IR.

The recipe maps onto NNCF: the preset (asymmetric activations → ``MIXED``,
symmetric → ``PERFORMANCE``; build option ``nncf_preset=performance`` forces
the latter, which the int8 stage tries once a build holds its gates), per-channel weights, the range estimator
(minmax / percentile), ``reduce_range`` → NNCF's overflow fix (build option ``int8_overflow_fix``, default ``cpu``:
off where the CPU has VNNI, :func:`overflow_fix`), and the
ignored scope (``exclude_nodes``, ``exclude_op_types``, per-op ``skip``, and a
detector's decode tail).  NNCF applies one setting to the whole model, so a
per-op or per-node setting other than ``skip`` is refused with one error,
as is a field NNCF has no equivalent for (entropy or MSE ranges, a
per-op range ``method``, 16-bit or uint8 weights).  With labelled ``--val``
data and ``--max-accuracy-drop`` on a classifier,
``nncf.quantize_with_accuracy_control`` reverts layers to float until the
top-1 drop is within the budget.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from edgekit.errors import CalibrationError, ConfigError

from ..graph import ALWAYS_FLOAT_OPS, detection_tail, detector_stem, domain_of, iter_nodes
from ..ort_tools import unmatched_warning
from ..toolchain import first_line, require
from .fusions import sink_fake_quantize

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe

    from ..base import BuildSpec

#: OpenVINO op types that carry weights: what "a layer" means in the quantization report
_WEIGHTED_OV_OPS = frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                              "GroupConvolutionBackpropData"})
#: recurrent ops, kept in float on every int8 build (see :func:`recurrent_ops`)
_RECURRENT_OV_OPS = frozenset({"LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell"})
#: ops a quantizer propagates through (NNCF puts the FakeQuantize above them)
_PASS_THROUGH = frozenset({"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "MaxPool", "Concat", "Split",
                           "VariadicSplit", "StridedSlice", "Slice", "Pad", "Gather", "DepthToSpace", "SpaceToDepth",
                           "Interpolate", "Subtract", "Multiply"})


def _fed_by_fake_quantize(node: Any, port: int) -> bool:
    """True when input ``port`` comes from a FakeQuantize (or an int8 weight constant), through reshapes/converts."""
    src = node.input_value(port).get_node()
    for _ in range(8):
        kind = src.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return src.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
        if kind not in _PASS_THROUGH:
            return False
        src = src.input_value(0).get_node()
    return False


def quantized_layers(ov_model: Any) -> Dict[str, bool]:
    """Weighted layer (friendly name) → whether both its activation and weight inputs are quantized."""
    out: Dict[str, bool] = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in _WEIGHTED_OV_OPS and op.get_input_size() >= 2:
            out[op.get_friendly_name()] = _fed_by_fake_quantize(op, 0) and _fed_by_fake_quantize(op, 1)
    return out


def refuse_unsupported_recipe(recipe: "Recipe") -> None:
    """One error naming every recipe field NNCF cannot honour."""
    from edgekit.quantize.recipe import CalibrationMethod, QuantDtype

    g = recipe.global_config
    problems: List[str] = []
    if g.activation_dtype not in (QuantDtype.UINT8, QuantDtype.INT8):
        problems.append(f"global_config.activation_dtype={g.activation_dtype.value!r} (NNCF quantizes to 8 bits)")
    if g.weight_dtype is not QuantDtype.INT8:
        problems.append(f"global_config.weight_dtype={g.weight_dtype.value!r} (NNCF weights are int8)")
    method, _ = _range_rule(recipe)
    if method in (CalibrationMethod.ENTROPY, CalibrationMethod.MSE):
        problems.append(f"method={method.value!r} (NNCF has no {'KL' if method is CalibrationMethod.ENTROPY else 'MSE'} "
                        "range estimator; use minmax or percentile)")
    for where, table in (("op_types", recipe.op_types), ("nodes", recipe.nodes)):
        for key, cfg in table.items():
            if cfg.skip:
                continue
            if (cfg.method, cfg.percentile) != (g.method, g.percentile):
                problems.append(f"{where}.{key}.method (NNCF has one range estimator per model; per-op range rules "
                                "work on the onnxruntime, qnn, tensorrt, tflite and coreml targets)")
            elif cfg != g:
                problems.append(f"{where}.{key} (NNCF applies one setting to the whole model; only skip works per op)")
    if problems:
        raise ConfigError("the openvino target cannot honour recipe field(s): " + "; ".join(problems)
                          + "; change the recipe, or build for the onnxruntime or qnn target")


def preset_name(recipe: "Recipe", options: Mapping[str, Any]) -> str:
    """NNCF's preset for this build: ``performance`` (symmetric activations) or ``mixed`` (asymmetric).

    The recipe's scheme (asymmetric unsigned activations by default: the most accurate), unless the build
    option ``nncf_preset`` is ``performance`` — what the int8 stage tries when the first build holds its
    gates (see ``OpenVinoTarget.faster_int8_options``)."""
    from edgekit.quantize.recipe import QuantDtype

    if options.get("nncf_preset") == "performance":  # a str enum compares equal to its value
        return "performance"
    g = recipe.global_config
    return "performance" if g.symmetric_activations or g.activation_dtype is QuantDtype.INT8 else "mixed"


def _range_rule(recipe: "Recipe") -> Tuple[Any, float]:
    """The whole model's (method, percentile): global_config's own, else the recipe's."""
    g = recipe.global_config
    return g.method or recipe.method, g.percentile if g.percentile is not None else recipe.percentile


def _ov_ops_by_tensor(ov_model: Any) -> Dict[str, List[str]]:
    """Tensor name → the friendly names of the OpenVINO ops that output it."""
    out: Dict[str, List[str]] = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Result", "Constant"):
            continue
        for port in op.outputs():
            for tensor in port.get_names():
                out.setdefault(tensor, []).append(op.get_friendly_name())
    return out


def onnx_to_ov_ops(ov_model: Any, onnx_model: Any, keep: Sequence[str]) -> Dict[str, List[str]]:
    """ONNX node name → the OpenVINO ops that carry it after conversion.

    Friendly names alone miss most of a real network: the frontend names an op after its output tensor
    when the node is unnamed or feeds a graph output, and conversion fuses patterns (x*HardSigmoid(x) →
    HSwish, Sigmoid*x → Swish) into one op with a generated name.  Output tensor names survive both, so
    a node is matched by name (or "name/..."), else by the op that outputs its tensor, else — for a node
    fused away — by the op that outputs the first downstream tensor still present.
    """
    ops = {op.get_friendly_name(): op for op in ov_model.get_ordered_ops()}
    by_tensor = _ov_ops_by_tensor(ov_model)
    nodes = dict(iter_nodes(onnx_model.graph))
    consumers: Dict[str, List[Any]] = {}
    producer: Dict[str, Any] = {}
    for node in nodes.values():
        for t in node.input:
            consumers.setdefault(t, []).append(node)
        for t in node.output:
            producer[t] = node
    onnx_named = set(nodes) | set(producer)

    def generated(op_name: str) -> bool:  # an op conversion made up (a fusion), not named after the ONNX graph
        return op_name not in onnx_named and op_name.split("/")[0] not in onnx_named

    out: Dict[str, List[str]] = {}
    for name in keep:
        found = {n for n in ops if n == name or n.startswith(name + "/")}
        node = nodes.get(name)
        if node is not None and not found:
            frontier = list(node.output)
            # a Conv whose BatchNormalization was folded into it: the BN's output names the fused pair
            while frontier and not any(t in by_tensor for t in frontier):
                nxt = [c for t in frontier for c in consumers.get(t, [])]
                if len(nxt) != 1 or nxt[0].op_type != "BatchNormalization":
                    frontier = []
                    break
                frontier = list(nxt[0].output)
            for hit in (h for t in frontier for h in by_tensor.get(t, [])):
                found.add(hit)
                src = ops[hit].input_value(0).get_node()
                if src.get_type_name() in _WEIGHTED_OV_OPS and generated(src.get_friendly_name()):
                    found.add(src.get_friendly_name())
            if not found:
                # fused away (Add/Clip/Div/Mul → HSwish): the generated op reading this node's surviving input
                for t in node.input:
                    for src in by_tensor.get(t, []):
                        for port in ops[src].outputs():
                            found.update(c.get_node().get_friendly_name() for c in port.get_target_inputs()
                                         if generated(c.get_node().get_friendly_name())
                                         and c.get_node().get_type_name() not in ("Result", "FakeQuantize"))
        if node is not None and node.op_type in ("LSTM", "GRU", "RNN"):
            # conversion makes the node one LSTMSequence (GRU/RNN) under a generated name ("LSTMSequence_N"),
            # whose outputs are transposed/reshaped into the ONNX outputs: the ops found above read it
            found.update(src.get_friendly_name() for src in (port.get_source_output().get_node()
                                                             for hit in list(found) for port in ops[hit].inputs())
                         if src.get_type_name() in _RECURRENT_OV_OPS)
        out[name] = sorted(found)
    return out


def ignored_scope(ov_model: Any, onnx_model: Any, recipe: "Recipe",
                  stem: bool = True) -> Tuple[List[str], List[str], List[str]]:
    """(OpenVINO op names the recipe and the detector tail keep in float, the tail's ONNX nodes,
    recipe names not in the model).  ``stem`` false: a detector's stem is left to int8 (build option
    ``int8_detector_stem``)."""
    tail = detection_tail(onnx_model, stem=stem)
    keep = [name for name, node in iter_nodes(onnx_model.graph) if recipe.skips(name, node.op_type)] + tail
    out: Set[str] = set()
    for ops in onnx_to_ov_ops(ov_model, onnx_model, keep).values():
        out.update(ops)
    known = {name for name, _ in iter_nodes(onnx_model.graph)}
    unmatched = sorted({w for w in list(recipe.nodes) + list(recipe.exclude_nodes) if w not in known})
    return sorted(out), tail, unmatched


def recurrent_ops(ov_model: Any) -> List[str]:
    """The model's recurrent ops (LSTM/GRU/RNN sequences and cells): every int8 build keeps them in float.

    Quantized, OpenVINO's CPU plugin runs an LSTMSequence in a reference u8 kernel that carries the hidden
    state between time steps, and returns it as ``hn``, in the FakeQuantize range of the *initial* state
    input ``h``; calibrated on the zero state a streaming model starts from, that range is about ±1e-3, so
    every step's hidden state is clipped to it (Silero VAD: ``hn`` −0.0 dB, ``speech_probs`` 9.3 dB).  A
    range widened to the state's natural [-1, 1] did no better (−9 dB), and the int8 kernel was not faster
    than f32, so the op and its weights stay float: NNCF then puts no FakeQuantize on its state inputs
    either.  onnxruntime's static int8 keeps LSTM in float too, and the twin models it as float.
    """
    return sorted(op.get_friendly_name() for op in ov_model.get_ordered_ops()
                  if op.get_type_name() in _RECURRENT_OV_OPS)


def always_float(ov_model: Any, onnx_model: Any) -> Tuple[List[str], List[str]]:
    """(OpenVINO op names, ONNX node names) of the ops every int8 build keeps float.

    ``targets.graph.ALWAYS_FLOAT_OPS`` (NNCF's CPU setup would quantize most of them where the mixed-precision
    search cannot name them) and :func:`recurrent_ops`."""
    nodes = [name for name, node in iter_nodes(onnx_model.graph)
             if not domain_of(node) and node.op_type in ALWAYS_FLOAT_OPS]
    ops: Set[str] = set(recurrent_ops(ov_model))
    for found in onnx_to_ov_ops(ov_model, onnx_model, nodes).values():
        ops.update(found)
    return sorted(ops), nodes


def quantized_in_scope(ov_model: Any, scope: Sequence[str]) -> List[str]:
    """Ops of the ignored scope that still read a FakeQuantize'd input (or int8 weights) after compression."""
    wanted = set(scope)
    leaks = []
    for op in ov_model.get_ordered_ops():
        if op.get_friendly_name() in wanted and op.get_type_name() not in ("FakeQuantize", "Constant"):
            if any(_fed_by_fake_quantize(op, i) for i in range(op.get_input_size())):
                leaks.append(op.get_friendly_name())
    return sorted(leaks)


def overflow_fix(recipe: "Recipe", device: str, choice: str = "cpu") -> Tuple[str, str]:
    """(NNCF's overflow fix for this build — ``enable``, ``disable`` or ``first_layer_only`` — and why).

    The fix is ``reduce_range``: 7-bit weights, for x86 int8 kernels without VNNI, which sum u8×s8 products
    in pairs into int16 and saturate with full 8-bit weights; VNNI/AMX accumulate in int32 and Arm kernels
    widen.  NNCF's default (``first_layer_only``) halves the weights of the first quantized convolution on each
    path from an input — after mixed precision kept a backbone in float, that is every int8 convolution
    the float part feeds (PP-OCRv4 det: 4 of its 16 int8 convolutions, the 192-channel neck among them,
    at 7 bits; 25.4 → 27.1 dB held out at the same float layers without it), and the mixed-precision
    twin, which rounds weights to 8 bits, never sees it.  With ``choice`` ``cpu`` (build option
    ``int8_overflow_fix``, the default), where the CPU has no saturation to guard against no layer gets it: this
    build host's CPU decides (the package is for this kind of CPU, as the onnxruntime target's
    ``reduce_range``), and an x86 host without VNNI or a GPU/NPU build keeps NNCF's default (``nncf`` keeps it
    everywhere).  The recipe's ``reduce_range`` decides over both when set.

    Measured on PP-OCRv4 rec, the same 178 float layers: 27.7 dB with NNCF's default, 29.4 without; the
    search's descent then returned two heavy 1×1 convolutions to int8 where it had returned one (67 % of MACs
    int8 instead of 60 %, 25.9 dB held out), and the package ran 0.96× NNCF's default int8 of the model where
    the one built with NNCF's fix ran 0.99× (side by side, one process).  It was not the default while the
    search tried the faster variants after its descent: the descent then spent YOLOv8n's margin, and the
    symmetric variant missed (0.77 → 0.97× the anchor); the variants now come first (YOLOv8n: 0.96×, 27.0 dB,
    its symmetric variant no cheaper on an AVX512-BF16 host without AMX)."""
    from edgekit.cpu import cpu_features

    rr = recipe.global_config.reduce_range
    if rr is not None:
        return ("enable" if rr else "disable"), "set by the recipe (reduce_range)"
    if choice != "cpu":
        return "first_layer_only", "NNCF's default (build option int8_overflow_fix=nncf)"
    if device != "CPU":
        return "first_layer_only", f"NNCF's default for a {device} build"
    cpu = cpu_features()
    if cpu.is_x86 and not cpu.vnni:
        return "first_layer_only", f"NNCF's default: this build host's x86 CPU lacks VNNI (detected from {cpu.source})"
    why = "VNNI/AMX" if cpu.is_x86 else f"a {cpu.machine} CPU"
    return "disable", f"this build host's CPU has {why} (detected from {cpu.source}): int8 products do not saturate"


def _advanced(nncf: Any, recipe: "Recipe", fix: str = "first_layer_only") -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, \
        QuantizationParameters
    from nncf.quantization.range_estimator import AggregatorType, RangeEstimatorParameters, \
        StatisticsCollectorParameters, StatisticsType

    from edgekit.quantize.recipe import CalibrationMethod

    g = recipe.global_config
    kwargs: Dict[str, Any] = {}
    if not g.per_channel:
        kwargs["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if fix != OverflowFix.FIRST_LAYER.value:  # NNCF's own default for 8-bit schemes: left to NNCF (see overflow_fix())
        kwargs["overflow_fix"] = OverflowFix(fix)
    method, percentile = _range_rule(recipe)
    if method is CalibrationMethod.PERCENTILE:
        stat = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                             aggregator_type=AggregatorType.MEAN,
                                             quantile_outlier_prob=1.0 - percentile / 100.0)
        kwargs["activations_range_estimator_params"] = RangeEstimatorParameters(min=stat, max=stat)
    return AdvancedQuantizationParameters(**kwargs)


def quantize(
    ov: Any,
    ov_model: Any,
    onnx_model: Any,
    spec: "BuildSpec",
    options: Mapping[str, Any],
    calibration: Optional["CalibrationSet"],
) -> Tuple[Any, Dict[str, Any]]:
    """The NNCF-quantized IR and the record for ``manifest.quantization``."""
    nncf = require("nncf", "int8 builds for openvino", "build")
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe

    recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
    refuse_unsupported_recipe(recipe)
    used, n = CalibrationSet.required(calibration, recipe.num_samples)
    preset = nncf.QuantizationPreset(preset_name(recipe, options))
    stem_choice = str(getattr(options.get("int8_detector_stem"), "value", options.get("int8_detector_stem")) or "auto")
    names, tail, unmatched = ignored_scope(ov_model, onnx_model, recipe, stem=stem_choice != "int8")
    stem = detector_stem(onnx_model) if tail else []  # a tail means a detector, whose stem the option decides
    unmatched_warning(unmatched)
    float_ops, float_nodes = always_float(ov_model, onnx_model)
    names = sorted(set(names) | set(float_ops))
    nncf_device = nncf.TargetDevice(options["nncf_target_device"])
    model_type = nncf.ModelType(options["model_type"]) if options["model_type"] else None
    dataset = nncf.Dataset([dict(f) for f in used.feeds])
    fix, fix_why = overflow_fix(recipe, str((spec.runtime_options or {}).get("device") or "CPU").strip().upper(),
                                getattr(options.get("int8_overflow_fix"), "value", options.get("int8_overflow_fix")))
    advanced = _advanced(nncf, recipe, fix)
    common = dict(preset=preset, target_device=nncf_device, subset_size=len(used),
                  fast_bias_correction=options["fast_bias_correction"], model_type=model_type,
                  ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None)
    info: Dict[str, Any] = {
        "format": "openvino-fakequantize",
        "tool": "nncf.quantize",
        "recipe": recipe.to_json(),
        "preset": preset.value,
        "preset_from": "build option nncf_preset=performance" if options.get("nncf_preset") == "performance"
        else "the recipe's activation scheme",
        "target_device": nncf_device.value,
        "fast_bias_correction": options["fast_bias_correction"],
        "model_type": model_type.value if model_type else None,
        "range_estimator": _range_rule(recipe)[0].value,
        "overflow_fix": {"value": fix, "why": fix_why},
        "calibration": used.summary(),
        "calibration_samples_given": n,
        "ignored_scope": names,
        "detection_tail": tail,
        # a detector's high-resolution stem: float with the tail unless int8_detector_stem says int8 (the int8
        # stage tries that as a faster variant once a build holds its gates; see the target's faster_int8_options)
        "detector_stem": {"nodes": stem, "precision": "int8" if stem_choice == "int8" else "float"} if stem else None,
        # ops NNCF would quantize that the twin and the other targets keep float (recurrent, Pow, Sub, ...)
        "always_float_nodes": float_nodes,
    }
    with _quiet():
        try:
            quantized = nncf.quantize(ov_model, dataset, advanced_parameters=advanced, **common)
        except (ValueError, TypeError, KeyError, RuntimeError) as err:
            raise CalibrationError(f"NNCF quantization failed: {first_line(err)}; check that the calibration "
                                   "data matches the model inputs") from None
    info["fake_quantize_sunk"] = sink_fake_quantize(quantized)
    leaks = quantized_in_scope(quantized, names)
    if leaks:
        # a FakeQuantize shared with an int8 consumer can still feed an op kept in float
        warnings.warn(f"{len(leaks)} op(s) the recipe keeps in float still read quantized inputs after NNCF: "
                      f"{', '.join(leaks[:8])}", UserWarning, stacklevel=2)
    info["ignored_scope_quantized_inputs"] = leaks
    layers = quantized_layers(quantized)
    control = _accuracy_control_request(spec, options)
    if isinstance(control, str):
        info["accuracy_control"] = {"used": False, "reason": control}
    elif control is not None:
        quantized, ac = _accuracy_control(ov, nncf, ov_model, quantized, dataset, control, common, advanced)
        ac["fallback_layers"] = sorted(k for k, v in quantized_layers(quantized).items() if not v and layers.get(k))
        layers = quantized_layers(quantized)
        info["tool"] = "nncf.quantize_with_accuracy_control" if ac["used"] else info["tool"]
        info["accuracy_control"] = ac
    info["quantized_layers"] = sum(layers.values())
    info["float_layers"] = sorted(k for k, v in layers.items() if not v)
    return quantized, info


def _accuracy_control_request(spec: "BuildSpec", options: Mapping[str, Any]) -> Any:
    """(val, max drop, restorer parameters) when accuracy control applies; a reason string when it
    was asked for but cannot apply; None when not asked for."""
    max_drop = spec.gates.get("max_accuracy_drop")
    val = spec.validation
    if max_drop is None or val is None or val.labels is None or len(val) == 0:
        return None
    if spec.task != "classify":
        return f"accuracy control needs a classify task (top-1 metric), not {spec.task!r}"
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    iters = options["accuracy_control_max_iterations"]
    restorer = AdvancedAccuracyRestorerParameters(max_num_iterations=iters) if iters else \
        AdvancedAccuracyRestorerParameters()
    return val, float(max_drop), restorer


def _accuracy_control(ov: Any, nncf: Any, ov_model: Any, quantized: Any, dataset: Any, request: Tuple[Any, ...],
                      common: Mapping[str, Any], advanced: Any) -> Tuple[Any, Dict[str, Any]]:
    """Revert layers to float until the top-1 drop on the validation data is within the budget."""
    val, max_drop_points, restorer = request
    items = list(zip([dict(f) for f in val.feeds], val.labels))
    core = ov.Core()

    def top1(compiled: Any, data: Sequence[Tuple[Mapping[str, np.ndarray], int]]) -> Tuple[float, List[float]]:
        out = compiled.outputs[0]
        request = compiled.create_infer_request()
        hits = [float(int(np.argmax(request.infer(feed)[out])) == int(label)) for feed, label in data]
        return (float(np.mean(hits)) if hits else 0.0), hits

    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # measured in the precision the package pins
    fp32_acc, _ = top1(core.compile_model(ov_model, "CPU", f32), items)
    int8_acc, _ = top1(core.compile_model(quantized, "CPU", f32), items)
    report: Dict[str, Any] = {
        "used": False,
        "metric": "top-1 accuracy on the --val data (OpenVINO CPU)",
        "samples": len(items),
        "max_drop_points": max_drop_points,
        "fp32_accuracy": round(fp32_acc, 6),
        "int8_accuracy": round(int8_acc, 6),
        "int8_drop_points": round((fp32_acc - int8_acc) * 100, 4),
    }
    if (fp32_acc - int8_acc) * 100 <= max_drop_points:
        report.update(final_accuracy=round(int8_acc, 6), final_drop_points=report["int8_drop_points"],
                      reached=True, note="plain int8 is within the budget; no layer had to fall back")
        return quantized, report
    validation = nncf.Dataset(items, lambda item: item[0])
    with _quiet():
        try:
            restored = nncf.quantize_with_accuracy_control(
                ov_model, dataset, validation, top1, max_drop=max_drop_points / 100.0,
                drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
                advanced_accuracy_restorer_parameters=restorer, **common)
        except (ValueError, TypeError, KeyError, RuntimeError) as err:
            raise CalibrationError(f"NNCF accuracy-controlled quantization failed: {first_line(err)}") from None
    final_acc, _ = top1(core.compile_model(restored, "CPU", f32), items)
    drop = (fp32_acc - final_acc) * 100
    report.update(used=True, final_accuracy=round(final_acc, 6), final_drop_points=round(drop, 4),
                  reached=drop <= max_drop_points)
    if not report["reached"]:
        warnings.warn(
            f"accuracy control could not meet the budget: best top-1 drop reached {drop:.2f} points > allowed "
            f"{max_drop_points:.2f} (fp32 {fp32_acc * 100:.2f}%, plain int8 {int8_acc * 100:.2f}%, "
            f"after fallback {final_acc * 100:.2f}%); the verification gate decides whether a package is kept",
            UserWarning, stacklevel=3)
    return restored, report


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs at INFO and draws progress bars on stdout; `edgekit ... --json` must print one document."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
