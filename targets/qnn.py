"""The qnn target: Snapdragon phones, boards and laptops (Hexagon HTP NPU).

Build (every step through onnxruntime and onnxruntime-qnn, no Qualcomm SDK):

1. ``qnn_preprocess_model`` (Erf-GELU → Gelu, ReduceL2 → LpNormalization,
   ReduceMean chains → LayerNormalization) on the canonical fp32 graph; the
   result ships as ``model_fp32.onnx`` (the SNPE/QAIRT converters' input).
2. int8: static Q/DQ quantization with onnxruntime's QNN configuration
   (``get_qnn_qdq_config``: uint8 or uint16 activations, int8/uint8 weights,
   per channel where HTP supports it, the op-specific overrides HTP needs),
   calibrated on the shared feeds → ``model_qdq.onnx``.  fp16: the fp32 graph,
   computed in fp16 by the HTP (``enable_htp_fp16_precision``).
3. Compile with the QNN execution provider, HTP backend, for the device's HTP
   architecture and SoC model → ``model_ctx.onnx`` (EPContext) plus
   ``model_ctx_qnn.bin`` (the QNN context binary).  Nodes the HTP refuses
   stay in the EPContext model for the CPU; they are the placement report.
4. AIMET encodings (``model.encodings``) and the exact SNPE / QNN converter
   commands (``qairt/commands.sh`` with a tiny ``input_list.txt``) from the
   same calibration.

``check`` runs :func:`edgekit.targets.qnn_ops.check_htp` (the op table as
data) and validates the device's HTP settings before any long step.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from edgekit.errors import CalibrationError, ConfigError, ModelError, UnsupportedModelError

from .base import Artifact, BuildSpec, Precision, SupportReport, Target, UnsupportedNode
from .graph import dynamic_dims, graph_specs
from .qnn_ops import HTP_MIN_FP16_ARCH, check_htp

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

ENTRY = "model_ctx.onnx"
FP32_MODEL = "model_fp32.onnx"
QDQ_MODEL = "model_qdq.onnx"
ENCODINGS = "model.encodings"
COMMANDS = "qairt/commands.sh"
INPUT_LIST = "qairt/input_list.txt"
#: calibration samples written as .raw for the SDK quantizers' required --input_list
RAW_SAMPLES = 4

#: HTP architectures onnxruntime-qnn compiles for, with a representative SoC (QNN soc_model, part number)
HTP_ARCHS: Mapping[int, Tuple[int, str]] = {
    68: (30, "SM8350"),
    69: (36, "SM8450"),
    73: (43, "SM8550"),
    75: (57, "SM8650"),
    79: (69, "SM8750"),
}

#: used when no device profile or htp_arch is given (Snapdragon 8 Gen 2 / X Elite generation)
DEFAULT_HTP_ARCH = 73

#: keys of spec.runtime_options that steer the build and are not runner options
_BUILD_ONLY = ("require_npu",)


@dataclass(frozen=True)
class HtpConfig:
    """The HTP a package is compiled for."""

    arch: int
    soc_model: int
    soc: str
    source: str  # where the settings came from, for the manifest

    def to_json(self) -> Dict[str, Any]:
        return {"htp_arch": self.arch, "soc_model": self.soc_model, "soc": self.soc, "from": self.source}


def _int_option(value: Any, name: str) -> int:
    text = str(value).strip().lower().lstrip("v")
    if not text.isdigit():
        raise ConfigError(f'"{name}" must be a number like 75 (or "v75"), but got {value!r}')
    return int(text)


def htp_config(spec: BuildSpec) -> HtpConfig:
    """HTP arch and SoC model from runtime_options, else the device profile, else the default."""
    ro = spec.runtime_options
    device = spec.device
    to: Mapping[str, Any] = (getattr(device, "target_options", None) or {}) if device is not None else {}
    arch_value = ro.get("htp_arch", to.get("htp_arch"))
    if arch_value is None and device is not None:
        raise ConfigError(
            f"device profile {device.name!r} has no HTP architecture: add htp_arch (e.g. 75) and soc_model "
            f"(e.g. 57) under [{device.name}.target_options] in devices.toml, or pass "
            "runtime_options={'htp_arch': 75, 'soc_model': 57}"
        )
    if arch_value is None:
        arch, source = DEFAULT_HTP_ARCH, f"default (no device profile: HTP v{DEFAULT_HTP_ARCH})"
    else:
        arch = _int_option(arch_value, "htp_arch")
        source = "runtime_options" if "htp_arch" in ro else f"device profile {device.name}"  # type: ignore[union-attr]
    if arch not in HTP_ARCHS:
        raise ConfigError(
            f'"htp_arch" must be one of {{{", ".join(str(a) for a in HTP_ARCHS)}}}, but got {arch_value!r}'
        )
    default_soc_model, default_soc = HTP_ARCHS[arch]
    soc_model_value = ro.get("soc_model", to.get("soc_model"))
    soc_model = _int_option(soc_model_value, "soc_model") if soc_model_value is not None else default_soc_model
    soc = str(ro.get("soc", to.get("soc", default_soc if soc_model == default_soc_model else "unknown")))
    return HtpConfig(arch=arch, soc_model=soc_model, soc=soc, source=source)


def _toolchain() -> Tuple[Any, Any]:
    try:
        import onnxruntime as ort
        import onnxruntime_qnn as qnn
    except ImportError:
        from edgekit.errors import RuntimeMissingError

        raise RuntimeMissingError("the qnn target needs onnxruntime-qnn: pip install 'edgekit[qnn]'") from None
    return ort, qnn


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _restore_metadata(path: Path, props: "list[tuple[str, str]]") -> None:
    """Put the source's metadata_props back on a model file (keeping keys the tool added)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    have = {p.key for p in m.metadata_props}
    for key, value in props:
        if key not in have:
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(m, str(path))


class QnnTarget(Target):
    """Hexagon HTP through onnxruntime-qnn: a QNN context binary in an EPContext model."""

    name = "qnn"
    runtime = "qnn"
    precisions = frozenset({Precision.FP16, Precision.INT8})
    description = "Snapdragon phones, boards, laptops: Hexagon HTP NPU (QNN context binary; SNPE/QAIRT encodings)"
    verify_runtime = "qnn"

    def toolchain(self) -> Tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime_qnn") is None or importlib.util.find_spec("onnxruntime") is None:
            return False, "pip install 'edgekit[qnn]'"
        import onnxruntime
        import onnxruntime_qnn

        return True, f"onnxruntime {onnxruntime.__version__}, onnxruntime-qnn {onnxruntime_qnn.__version__}"

    # -- check ------------------------------------------------------------
    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:

        cfg = htp_config(spec)
        precision = Precision.parse(spec.precision)
        if precision is Precision.FP16 and cfg.arch < HTP_MIN_FP16_ARCH:
            raise ConfigError(
                f"HTP v{cfg.arch} ({cfg.soc}) has no fp16 compute (fp16 needs v{HTP_MIN_FP16_ARCH}+); "
                "build --precision int8 for this device"
            )
        unsupported = tuple(UnsupportedNode(node=n, op_type=op, reason=r) for n, op, r in check_htp(model))
        notes = [f"HTP v{cfg.arch} ({cfg.soc}, soc_model {cfg.soc_model}) from {cfg.source}"]
        if unsupported and not spec.runtime_options.get("require_npu"):
            # HTP-less ops are not fatal: they run on the CPU, reported loudly (and --require-npu refuses them)
            notes.append("nodes HTP cannot run will be placed on the CPU: " + "; ".join(str(u) for u in unsupported))
            return SupportReport(target=self.name, unsupported=(), dynamic_dims=tuple(dynamic_dims(model)),
                                 notes=tuple(notes))
        return SupportReport(target=self.name, unsupported=unsupported, dynamic_dims=tuple(dynamic_dims(model)),
                             notes=tuple(notes))

    # -- build ------------------------------------------------------------
    def build(
        self,
        model: "onnx.ModelProto",
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        workdir: Path,
    ) -> Artifact:
        import onnx
        from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

        from .canonicalize import save_onnx
        from .qnn_snpe import aimet_encodings, conversion_commands, write_raw_inputs

        ort, qnn = _toolchain()
        cfg = htp_config(spec)
        precision = Precision.parse(spec.precision)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        inputs, outputs = graph_specs(model)
        details: Dict[str, Any] = {"precision": precision.value, **cfg.to_json()}

        # 1. HTP-shaped fp32 graph (fusions HTP has single ops for)
        canonical = workdir / "_canonical.onnx"
        fp32_path = workdir / FP32_MODEL
        # onnxruntime 1.32's qnn_preprocess_model crashes on any model with metadata_props
        # (dict.update of a protobuf list; every Ultralytics / PaddleOCR export): preprocess
        # without them and put them back on the result, so the package keeps them.
        props = [(p.key, p.value) for p in model.metadata_props]
        bare = model
        if props:
            import onnx

            bare = onnx.ModelProto()
            bare.CopyFrom(model)
            del bare.metadata_props[:]
        save_onnx(bare, canonical)
        with contextlib.redirect_stdout(io.StringIO()):
            changed = qnn_preprocess_model(str(canonical), str(fp32_path), fuse_layernorm=True)
        if not changed:
            canonical.replace(fp32_path)
        if props:
            _restore_metadata(fp32_path, props)
        canonical.unlink(missing_ok=True)
        details["qnn_preprocess"] = "fused" if changed else "no change"
        fused = _fuse_hardswish(fp32_path)
        if fused:
            details["hardswish_fused"] = fused
        files = [FP32_MODEL]

        # 2. quantize (int8) or keep float (fp16 on the HTP)
        quantization: Optional[Dict[str, Any]] = None
        if precision is Precision.INT8:
            qdq_path = workdir / QDQ_MODEL
            quantization = self._quantize(fp32_path, qdq_path, spec, calibration)
            files.append(QDQ_MODEL)
            compile_src = qdq_path
        else:
            compile_src = fp32_path

        # 3. compile to an EPContext model + QNN context binary, and learn the placement
        ctx_path = workdir / ENTRY
        placement, binaries, sdk = self._compile(ort, qnn, compile_src, ctx_path, cfg, precision)
        details["placement"] = placement
        details["context_binary"] = f"model/{binaries[0]}"
        details["context_binaries"] = [f"model/{b}" for b in binaries]
        details["qairt_sdk"] = sdk
        files += [ENTRY, *binaries]
        if placement["cpu_nodes"]:
            listed = ", ".join(f"{n['node']} ({n['op_type']})" for n in placement["cpu_nodes"])
            if spec.runtime_options.get("require_npu"):
                raise UnsupportedModelError(
                    f"--require-npu: {len(placement['cpu_nodes'])} node(s) would leave the HTP and run on the "
                    f"CPU: {listed}; replace those ops, or build without --require-npu"
                )
            warnings.warn(
                f"NOT ALL ON THE NPU: {len(placement['cpu_nodes'])} of {placement['total_nodes']} node(s) fall "
                f"back to the CPU on the Snapdragon: {listed} (use --require-npu to make this an error)",
                UserWarning,
                stacklevel=3,
            )

        # 4. the SNPE / QAIRT path: AIMET encodings + exact commands from the same calibration
        fp32_proto = onnx.load(str(fp32_path), load_external_data=False)
        if precision is Precision.INT8:
            qdq_proto = onnx.load(str(qdq_path), load_external_data=False)
            enc = aimet_encodings(qdq_proto, fp32_proto)
            (workdir / ENCODINGS).write_text(json.dumps(enc, indent=1), encoding="utf-8")
            files.append(ENCODINGS)
            assert calibration is not None  # checked by _quantize
            raw = write_raw_inputs(calibration.feeds[:RAW_SAMPLES], inputs, workdir / "qairt" / "calib",
                                   workdir / INPUT_LIST, prefix="qairt/calib")
            files += [INPUT_LIST] + [f"qairt/calib/{f}" for f in raw]
            g = spec.recipe.global_config
            commands = conversion_commands(
                inputs=inputs, soc=cfg.soc, quantized=True,
                activation_bitwidth=enc["quantizer_args"]["activation_bitwidth"],
                weight_bitwidth=enc["quantizer_args"]["param_bitwidth"], per_channel=g.per_channel,
                fp32_model=FP32_MODEL, encodings=ENCODINGS, input_list=INPUT_LIST,
            )
            details["aimet_encodings"] = {
                "file": f"model/{ENCODINGS}",
                "activations": len(enc["activation_encodings"]),
                "params": len(enc["param_encodings"]),
            }
        else:
            commands = conversion_commands(inputs=inputs, soc=cfg.soc, quantized=False, fp32_model=FP32_MODEL)
        (workdir / COMMANDS).parent.mkdir(parents=True, exist_ok=True)
        (workdir / COMMANDS).write_text(_commands_script(commands, cfg, precision), encoding="utf-8")
        files.append(COMMANDS)
        details["snpe_qairt"] = {"run_from": "model/", "script": f"model/{COMMANDS}", **commands}

        runtime_options = {k: v for k, v in spec.runtime_options.items() if k not in _BUILD_ONLY}
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

    # -- steps ------------------------------------------------------------
    @staticmethod
    def _quantize(src: Path, out: Path, spec: BuildSpec, calibration: Optional["CalibrationSet"]) -> Dict[str, Any]:
        import onnx
        from onnxruntime.quantization import CalibrationMethod as OrtMethod
        from onnxruntime.quantization import QuantType, quantize
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

        from edgekit.quantize.calibration import CalibrationReader
        from edgekit.quantize.recipe import CalibrationMethod, QuantDtype

        recipe = spec.recipe
        if calibration is None or len(calibration) == 0:
            raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
        n = len(calibration)
        used = calibration.for_recipe(recipe.num_samples)
        g = recipe.global_config
        act_types = {QuantDtype.UINT8: QuantType.QUInt8, QuantDtype.UINT16: QuantType.QUInt16}
        if g.activation_dtype not in act_types:
            raise ConfigError(
                f'recipe.global_config.activation_dtype: HTP takes "uint8" or "uint16" activations, '
                f"but got {g.activation_dtype.value!r}"
            )
        weight_type = {QuantDtype.INT8: QuantType.QInt8, QuantDtype.UINT8: QuantType.QUInt8}[g.weight_dtype]
        method = {
            CalibrationMethod.MINMAX: OrtMethod.MinMax,
            CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
            CalibrationMethod.ENTROPY: OrtMethod.Entropy,
        }[recipe.method]
        fp32 = onnx.load(str(src), load_external_data=False)
        excluded = sorted(nd.name for nd in fp32.graph.node if nd.name and recipe.config_for(nd.name, nd.op_type).skip)
        # per-op / per-node activation types → tensor overrides (QNN mixed precision, e.g. a 16-bit head)
        overrides: Dict[str, List[Dict[str, Any]]] = {}
        for nd in fp32.graph.node:
            c = recipe.config_for(nd.name, nd.op_type)
            if not c.skip and c.activation_dtype is not g.activation_dtype:
                if c.activation_dtype not in act_types:
                    raise ConfigError(f"recipe for {nd.name!r}: HTP takes uint8 or uint16 activations, "
                                      f"but got {c.activation_dtype.value!r}")
                for o in nd.output:
                    overrides[o] = [{"quant_type": act_types[c.activation_dtype]}]
        inits = {t.name for t in fp32.graph.initializer}
        for nd in fp32.graph.node:
            # HTP's quantized LayerNorm rejects a signed-symmetric gamma (backendValidateOpConfig error 3110,
            # the node falls back to the CPU); an asymmetric uint8 gamma keeps it on the NPU
            if nd.op_type == "LayerNormalization" and len(nd.input) > 1 and nd.input[1] in inits \
                    and weight_type is QuantType.QInt8 and nd.input[1] not in overrides:
                overrides[nd.input[1]] = [{"quant_type": QuantType.QUInt8, "symmetric": False}]
        try:
            qconfig = get_qnn_qdq_config(
                fp32,
                CalibrationReader(used),
                calibrate_method=method,
                activation_type=act_types[g.activation_dtype],
                weight_type=weight_type,
                per_channel=g.per_channel,
                activation_symmetric=g.symmetric_activations,
                init_overrides=overrides or None,
                nodes_to_exclude=excluded or None,
            )
            if recipe.method is CalibrationMethod.PERCENTILE:
                qconfig.extra_options["CalibPercentile"] = recipe.percentile
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import logging

                logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs advice at WARNING on root
                quantize(str(src), str(out), qconfig)
        except (ValueError, TypeError, KeyError) as err:
            raise CalibrationError(
                f"onnxruntime QNN quantization failed: {_first_line(err)}; "
                "check that the calibration data matches the model inputs"
            ) from None
        q = onnx.load(str(out), load_external_data=False)
        counts: Dict[str, int] = {}
        for nd in q.graph.node:
            counts[nd.op_type] = counts.get(nd.op_type, 0) + 1
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
            "excluded_nodes": excluded,
        }

    @staticmethod
    def _compile(ort: Any, qnn: Any, src: Path, ctx: Path, cfg: HtpConfig,
                 precision: Precision) -> Tuple[Dict[str, Any], List[str], str]:
        """QNN EP (HTP) → EPContext model + context binary; placement from what stays outside EPContext."""
        import onnx

        from edgekit.runners.qnn import EP_NAME, _qnn_devices, native_stdout_to_stderr

        so = ort.SessionOptions()
        so.log_severity_level = 3
        # node names must survive so the placement report names the source nodes
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "0")
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_embed_mode", "0")
        so.add_session_config_entry("ep.context_file_path", str(ctx))
        options = {
            "backend_type": "htp",
            "htp_arch": str(cfg.arch),
            "soc_model": str(cfg.soc_model),
            "offload_graph_io_quantization": "0",  # keep input Q / output DQ on the HTP too
            "enable_htp_fp16_precision": "1" if precision is Precision.FP16 else "0",
        }
        devices = _qnn_devices(ort, qnn)
        if not devices:
            raise ModelError("onnxruntime-qnn registered no QNN device; reinstall it: pip install 'edgekit[qnn]'")
        so.add_provider_for_devices(devices, options)
        try:
            with native_stdout_to_stderr():
                ort.InferenceSession(str(src), sess_options=so)
        except Exception as err:  # the HTP compiler's own errors
            raise ModelError(
                f"QNN HTP compilation for v{cfg.arch} ({cfg.soc}) failed: {_first_line(err)}; "
                "try another --precision, or report this with the model"
            ) from None
        if not ctx.is_file():
            raise ModelError("QNN EP wrote no EPContext model: no node of this graph runs on the HTP; "
                             "see `edgekit build --target qnn` support notes")
        source = onnx.load(str(src), load_external_data=False)
        ctx_model = onnx.load(str(ctx), load_external_data=False)
        binaries: List[str] = []
        sdk = ""
        cpu_nodes = []
        for nd in ctx_model.graph.node:
            if nd.op_type == "EPContext":
                for a in nd.attribute:
                    if a.name == "ep_cache_context" and a.s:
                        name = a.s.decode()
                        if name not in binaries:
                            binaries.append(name)
                    elif a.name == "ep_sdk_version" and a.s:
                        sdk = a.s.decode()
            else:
                cpu_nodes.append({"node": nd.name or nd.output[0], "op_type": nd.op_type})
        if not binaries:
            raise ModelError("the EPContext model names no context binary; rebuild (embed mode must be 0)")
        for b in binaries:
            if not (ctx.parent / b).is_file():
                raise ModelError(f"QNN EP did not write the context binary {b}")
        total = len(source.graph.node)
        placement = {
            "total_nodes": total,
            "htp_nodes": total - len(cpu_nodes),
            "cpu_nodes": cpu_nodes,
            "partitions": sum(1 for nd in ctx_model.graph.node if nd.op_type == "EPContext"),
            "all_on_npu": not cpu_nodes,
            "counted_on": QDQ_MODEL if precision is Precision.INT8 else FP32_MODEL,
            "execution_provider": EP_NAME,
        }
        return placement, binaries, sdk


def _fuse_hardswish(path: Path) -> int:
    """x * HardSigmoid(x, 1/6, 0.5) → HardSwish(x), in place; returns how many were fused.

    Canonicalization inlines HardSwish (an ONNX function) into that pair.  HTP
    has a native HardSwish, and the fp16 HTP mis-computes the inlined pair
    (measured on onnxruntime-qnn 2.7's HTP: −5 dB SQNR for the pair against
    69 dB for HardSwish), so the qnn target puts the op back.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0) < 14:
        return 0  # HardSwish is an ONNX op from opset 14
    consumers: Dict[str, List[Any]] = {}
    for nd in graph.node:
        for i in nd.input:
            consumers.setdefault(i, []).append(nd)
    outputs = {o.name for o in graph.output}
    fused = 0
    drop = set()
    for hs in list(graph.node):
        if hs.op_type != "HardSigmoid" or (hs.domain or "") not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in hs.attribute}
        if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
            continue
        users = consumers.get(hs.output[0], [])
        if len(users) != 1 or hs.output[0] in outputs:
            continue
        mul = users[0]
        if mul.op_type != "Mul" or sorted(mul.input) != sorted([hs.input[0], hs.output[0]]):
            continue
        idx = list(graph.node).index(mul)
        graph.node.insert(idx, helper.make_node("HardSwish", [hs.input[0]], [mul.output[0]], name=mul.name or hs.name))
        drop.update({id(hs), id(mul)})
        fused += 1
    if fused:
        keep = [nd for nd in graph.node if id(nd) not in drop]
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path))
    return fused


def _commands_script(commands: Mapping[str, List[str]], cfg: HtpConfig, precision: Precision) -> str:
    lines = [
        "#!/bin/sh",
        "# Make a DLC (SNPE) or a QNN model/context binary (QAIRT) with the ranges this package was calibrated with.",
        "# Run from the package's model/ folder with the Qualcomm AI Runtime SDK set up (source bin/envsetup.sh).",
        f"# Target: HTP v{cfg.arch} ({cfg.soc}, soc_model {cfg.soc_model}); precision {precision.value}.",
    ]
    if precision is Precision.INT8:
        lines.append("# model.encodings holds AIMET encodings for every activation and weight; input_list.txt points")
        lines.append("# at a few calibration samples the tools require (channel-last .raw); they change no range.")
    lines += ["set -e", "", "# --- SNPE (DLC) ---", *commands["snpe"], "", "# --- QNN (QAIRT) ---", *commands["qnn"], ""]
    return "\n".join(lines)
