"""The openvino target: Intel NUC-class machines (CPU, integrated GPU, NPU).

The artifact is an OpenVINO IR, ``model.xml`` + ``model.bin``:

* fp32 — ``openvino.convert_model`` of the canonical ONNX, saved as is;
* fp16 — the same with weights stored in fp16 (``save_model(compress_to_fp16=True)``);
  the plugins decompress them (CPU) or compute in fp16 (GPU/NPU);
* int8 — NNCF post-training quantization of the IR on the shared calibration
  feeds: the recipe picks the preset (asymmetric activations → ``MIXED``,
  symmetric → ``PERFORMANCE``), per-channel weights, the range estimator
  (minmax / percentile) and the ignored scope (``exclude_nodes``,
  ``exclude_op_types`` and per-op ``skip``); fast bias correction is on.
  With labelled ``--val`` data and ``--max-accuracy-drop`` on a classifier,
  ``nncf.quantize_with_accuracy_control`` reverts layers to float until the
  top-1 drop is within the budget; the layers that fell back are listed in
  ``manifest.quantization.accuracy_control``.

Conversion uses the frontend's partial conversion first, so every ONNX node
OpenVINO cannot convert is named in one error.  Every artifact is compiled
once on this host's CPU with the plugin's defaults: on CPUs with AMX/bf16 the
default inference precision is bf16 and some Q/DQ graphs have no kernel there
("No suitable implementation"); then the build records
``inference_precision="f32"`` in the runtime options and says so.  The
default preset keeps activations unsigned/asymmetric, which avoids it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from edgekit.errors import CalibrationError, ConfigError, EdgekitError, ModelError, RuntimeMissingError, \
    UnsupportedModelError

from .base import Artifact, BuildSpec, Precision, SupportReport, Target, UnsupportedNode
from .graph import dynamic_dims, iter_nodes
from .openvino_ops import OV_ONNX_PATTERN_ONLY, ov_support

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

ENTRY = "model.xml"
WEIGHTS = "model.bin"

#: options read at build time only (from ``runtime_options`` or the profile's ``target_options``)
BUILD_OPTIONS = ("fast_bias_correction", "nncf_target_device", "model_type", "accuracy_control_max_iterations")
#: OpenVINO op types that carry weights: what "a layer" means in the quantization report
_WEIGHTED_OV_OPS = frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                              "GroupConvolutionBackpropData"})
#: ops a quantizer propagates through (NNCF puts the FakeQuantize above them)
_PASS_THROUGH = frozenset({"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "MaxPool", "Concat", "Split",
                           "VariadicSplit", "StridedSlice", "Slice", "Pad", "Gather", "DepthToSpace", "SpaceToDepth",
                           "Interpolate"})


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeMissingError(f"the openvino target needs OpenVINO ({exc}); pip install 'edgekit[openvino,build]'") from None
    return openvino


def _nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise RuntimeMissingError(f"int8 builds for openvino need NNCF ({exc}); pip install 'edgekit[build]'") from None
    return nncf


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
    return (lines[0] if lines else type(err).__name__)[:300]


def _option(spec: BuildSpec, key: str, default: Any) -> Any:
    """A build option: runtime_options (user) beats the profile's target_options."""
    if key in spec.runtime_options:
        return spec.runtime_options[key]
    if spec.device is not None and key in (spec.device.target_options or {}):
        return spec.device.target_options[key]
    return default


def _fed_by_fake_quantize(node: Any, port: int) -> bool:
    """True when input ``port`` comes from a FakeQuantize (or an int8 weight constant), through reshapes/converts."""
    src = node.input_value(port).get_node()
    for _ in range(8):
        kind = src.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return src.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
        if kind in _PASS_THROUGH or kind in ("Subtract", "Multiply"):
            src = src.input_value(0).get_node()
            continue
        return False
    return False


def quantized_layers(ov_model: Any) -> Dict[str, bool]:
    """Weighted layer (friendly name) → whether both its activation and weight inputs are quantized."""
    out: Dict[str, bool] = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in _WEIGHTED_OV_OPS and op.get_input_size() >= 2:
            out[op.get_friendly_name()] = _fed_by_fake_quantize(op, 0) and _fed_by_fake_quantize(op, 1)
    return out


class OpenVinoTarget(Target):
    """Intel NUC (CPU, iGPU, NPU) through OpenVINO: fp32, fp16 or NNCF int8 IR."""

    name = "openvino"
    runtime = "openvino"
    precisions = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})
    description = "Intel NUC / Core CPUs, integrated GPUs and NPUs through OpenVINO (IR, NNCF int8)"
    verify_runtime = "openvino"

    def toolchain(self) -> Tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
            return False, "pip install 'edgekit[openvino,build]'"
        from importlib.metadata import version

        return True, f"openvino {version('openvino')}, nncf {version('nncf')}"

    # -- check ------------------------------------------------------------
    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:
        unsupported: List[UnsupportedNode] = []
        notes: List[str] = []
        for name, node in iter_nodes(model.graph):
            domain = node.domain or ""
            reason = ov_support(domain, node.op_type)
            op = node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"
            if reason is not None:
                unsupported.append(UnsupportedNode(node=name, op_type=op, reason=reason))
            elif node.op_type in OV_ONNX_PATTERN_ONLY and domain in ("", "ai.onnx"):
                notes.append(f"{name} ({op}): OpenVINO converts sequence ops only in recognised patterns")
        if "device" in spec.runtime_options:
            from edgekit.runners.openvino import OpenVinoConfig

            OpenVinoConfig.from_options(spec.runtime_options)  # a bad option fails before any long step
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
        ov = _ov()
        from edgekit.runners.openvino import OpenVinoConfig

        from .canonicalize import save_onnx

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        precision = Precision.parse(spec.precision)
        run_opts = {k: v for k, v in spec.runtime_options.items() if k in OpenVinoConfig.KNOWN}
        config = OpenVinoConfig.from_options(run_opts)  # validated here, before the long steps
        src = workdir / "_source.onnx"
        save_onnx(model, src)
        try:
            ov_model = self._convert(ov, src, model)
        finally:
            for p in workdir.glob("_source.onnx*"):
                p.unlink()
        details: Dict[str, Any] = {"precision": precision.value, "openvino": ov.get_version().split("-")[0]}
        quantization: Optional[Dict[str, Any]] = None
        xml = workdir / ENTRY
        if precision is Precision.INT8:
            ov_model, quantization = self._quantize(ov, ov_model, model, spec, calibration)
        # int8: FakeQuantize'd weights are stored as int8 either way; keep the float rest in fp32
        ov.save_model(ov_model, str(xml), compress_to_fp16=precision is Precision.FP16)
        details["weights"] = {"fp32": "fp32", "fp16": "fp16 (compressed)", "int8": "int8 (+ fp32 for float layers)"}[
            precision.value]

        runtime_options = {k: v for k, v in config.to_json().items() if v is not None}
        forced = self._compile_check(ov, xml, config, details)
        if forced:
            runtime_options["inference_precision"] = forced
        versions = {"openvino": ov.get_version()}
        if precision is Precision.INT8:
            from importlib.metadata import version

            versions["nncf"] = version("nncf")
        verify_options: Dict[str, Any] = {"device": "CPU", "cache_dir": ""}
        note = "verified on this build host's CPU with OpenVINO; the compiled-model cache is off while verifying"
        if config.device != "CPU":
            note += f" (the package runs on {config.device} on the device)"
        return Artifact(
            files=[ENTRY, WEIGHTS],
            entry=ENTRY,
            runtime_options=runtime_options,
            runtime_versions=versions,
            details=details,
            quantization=quantization,
            verify_options=verify_options,
            verify_note=note,
        )

    # -- conversion ----------------------------------------------------------
    @staticmethod
    def _convert(ov: Any, src: Path, model: Any) -> Any:
        """ONNX → ov.Model; every node the frontend cannot convert is named in one error."""
        from openvino.frontend import FrontEndManager

        fe = FrontEndManager().load_by_framework("onnx")
        try:
            partial = fe.convert_partially(fe.load(str(src)))
        except Exception as err:  # noqa: BLE001 - the frontend raises plain RuntimeErrors
            raise ModelError(f"OpenVINO cannot read the ONNX model: {_first_line(err)}") from None
        by_output = {out: (name, node) for name, node in iter_nodes(model.graph) for out in node.output}
        failed = []
        for op in partial.get_ordered_ops():
            if "FrameworkNode" in op.get_type_name():
                name, node = by_output.get(op.get_friendly_name(), (op.get_friendly_name(), None))
                op_type = "?" if node is None else (
                    node.op_type if (node.domain or "") in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
                failed.append(f"{name} ({op_type})")
        if failed:
            raise UnsupportedModelError(
                f"OpenVINO cannot convert {len(failed)} node(s): {'; '.join(sorted(set(failed)))} "
                "(fix: replace these ops in the model, or pick another target from `edgekit targets`)"
            )
        try:
            return ov.convert_model(str(src))
        except Exception as err:  # noqa: BLE001
            raise UnsupportedModelError(f"OpenVINO cannot convert the model: {_first_line(err)}") from None

    @staticmethod
    def _compile_check(ov: Any, xml: Path, config: Any, details: Dict[str, Any]) -> Optional[str]:
        """Compile on this CPU with the plugin defaults; fall back to an f32 hint if the default fails.

        Returns the inference precision the package must request (None: default works).
        """
        from edgekit.runners.openvino import precision_summary, runtime_layers

        core = ov.Core()
        base: Dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if config.inference_precision is not None:
            base["INFERENCE_PRECISION_HINT"] = config.inference_precision.value
        try:
            compiled = core.compile_model(str(xml), "CPU", base)
            forced = None
        except RuntimeError as err:
            if config.inference_precision is not None:
                raise EdgekitError(f"the built IR does not compile on this CPU with inference_precision="
                                   f"{config.inference_precision.value}: {_first_line(err)}") from None
            first = _first_line(err)
            try:
                compiled = core.compile_model(str(xml), "CPU", {**base, "INFERENCE_PRECISION_HINT": "f32"})
            except RuntimeError as err2:
                raise EdgekitError(f"the built IR does not compile on this CPU: {_first_line(err2)}") from None
            forced = "f32"
            details["compile_fallback"] = (f"the CPU plugin's default precision failed ({first}); "
                                           "the package requests inference_precision=f32")
        details["host_cpu"] = {
            "name": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            **precision_summary(runtime_layers(compiled)),
        }
        return forced

    # -- int8 -------------------------------------------------------------------
    def _quantize(
        self,
        ov: Any,
        ov_model: Any,
        onnx_model: Any,
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
    ) -> Tuple[Any, Dict[str, Any]]:
        nncf = _nncf()
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters, \
            AdvancedQuantizationParameters, QuantizationParameters
        from nncf.quantization.range_estimator import AggregatorType, RangeEstimatorParameters, \
            StatisticsCollectorParameters, StatisticsType

        from edgekit.quantize.recipe import CalibrationMethod, QuantDtype, Recipe

        recipe: Recipe = spec.recipe if spec.recipe is not None else Recipe()
        if calibration is None or len(calibration) == 0:
            raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
        n = len(calibration)
        used = calibration.for_recipe(recipe.num_samples)
        g = recipe.global_config
        if g.activation_dtype not in (QuantDtype.UINT8, QuantDtype.INT8):
            raise ConfigError(f'recipe.global_config.activation_dtype: the openvino target quantizes activations to '
                              f'8 bits ("uint8" or "int8"), but got {g.activation_dtype.value!r}')
        ignored_settings = sorted(
            key for key, cfg in list(recipe.op_types.items()) + list(recipe.nodes.items())
            if not cfg.skip and cfg != g)
        if ignored_settings:
            warnings.warn(f"the openvino target applies one global setting per model plus per-op `skip`; the other "
                          f"per-op settings for {ignored_settings} are ignored", UserWarning, stacklevel=3)
        # asymmetric (unsigned) activations are NNCF's MIXED preset and the safe choice on bf16/AMX CPUs
        symmetric = g.symmetric_activations or g.activation_dtype is QuantDtype.INT8
        preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED

        adv_kwargs: Dict[str, Any] = {}
        if not g.per_channel:
            adv_kwargs["weights_quantization_params"] = QuantizationParameters(per_channel=False)
        if recipe.method is CalibrationMethod.PERCENTILE:
            q = 1.0 - recipe.percentile / 100.0
            stat = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                                 aggregator_type=AggregatorType.MEAN, quantile_outlier_prob=q)
            adv_kwargs["activations_range_estimator_params"] = RangeEstimatorParameters(min=stat, max=stat)
        elif recipe.method is CalibrationMethod.ENTROPY:
            warnings.warn("NNCF has no entropy (KL) range estimator; the openvino target uses NNCF's default "
                          "activation ranges instead", UserWarning, stacklevel=3)
        advanced = AdvancedQuantizationParameters(**adv_kwargs)

        ignored_names, unmatched = self._ignored_scope(ov_model, onnx_model, recipe)
        if unmatched:
            warnings.warn(f"quantization recipe names node(s) {unmatched} that the model does not have; they have "
                          "no effect (edgekit inspect lists the node names)", UserWarning, stacklevel=3)
        target_device = str(_option(spec, "nncf_target_device", "ANY")).upper()
        try:
            nncf_device = nncf.TargetDevice(target_device)
        except ValueError:
            raise ConfigError(f'"nncf_target_device" must be one of '
                              f'{{{", ".join(repr(d.value) for d in nncf.TargetDevice)}}}, but got {target_device!r}') from None
        fast_bias = _option(spec, "fast_bias_correction", True)
        if not isinstance(fast_bias, bool):
            raise ConfigError(f'"fast_bias_correction" must be true or false, but got {fast_bias!r}')
        model_type_opt = _option(spec, "model_type", None)
        model_type = None
        if model_type_opt is not None:
            try:
                model_type = nncf.ModelType(str(model_type_opt).lower())
            except ValueError:
                raise ConfigError(f'"model_type" must be "transformer" or null, but got {model_type_opt!r}') from None
        dataset = nncf.Dataset([dict(f) for f in used.feeds])
        common = dict(preset=preset, target_device=nncf_device, subset_size=len(used),
                      fast_bias_correction=fast_bias, model_type=model_type,
                      ignored_scope=nncf.IgnoredScope(names=ignored_names, validate=False) if ignored_names else None)
        info: Dict[str, Any] = {
            "format": "openvino-fakequantize",
            "tool": "nncf.quantize",
            "recipe": recipe.to_json(),
            "preset": preset.value,
            "target_device": nncf_device.value,
            "fast_bias_correction": fast_bias,
            "model_type": model_type.value if model_type else None,
            "range_estimator": recipe.method.value if recipe.method is not CalibrationMethod.ENTROPY else "nncf-default",
            "calibration": used.summary(),
            "calibration_samples_given": n,
            "ignored_scope": ignored_names,
        }
        with _quiet(nncf):
            try:
                quantized = nncf.quantize(ov_model, dataset, advanced_parameters=advanced, **common)
            except (ValueError, TypeError, KeyError, RuntimeError) as err:
                raise CalibrationError(f"NNCF quantization failed: {_first_line(err)}; check that the calibration "
                                       "data matches the model inputs") from None
        layers = quantized_layers(quantized)
        max_drop = spec.gates.get("max_accuracy_drop")
        val = spec.validation
        if max_drop is not None and val is not None and val.labels is not None and len(val) > 0:
            if spec.task != "classify":
                info["accuracy_control"] = {"used": False, "reason": f"accuracy control needs a classify task "
                                            f"(top-1 metric), not {spec.task!r}"}
            else:
                iters = _option(spec, "accuracy_control_max_iterations", None)
                restorer = AdvancedAccuracyRestorerParameters(max_num_iterations=int(iters)) if iters else \
                    AdvancedAccuracyRestorerParameters()
                quantized, ac = self._accuracy_control(ov, nncf, ov_model, quantized, dataset, val, float(max_drop),
                                                       common, advanced, restorer)
                ac["fallback_layers"] = sorted(k for k, v in quantized_layers(quantized).items()
                                               if not v and layers.get(k))
                layers = quantized_layers(quantized)
                info["tool"] = "nncf.quantize_with_accuracy_control" if ac["used"] else info["tool"]
                info["accuracy_control"] = ac
        info["quantized_layers"] = sum(layers.values())
        info["float_layers"] = sorted(k for k, v in layers.items() if not v)
        return quantized, info

    @staticmethod
    def _ignored_scope(ov_model: Any, onnx_model: Any, recipe: Any) -> Tuple[List[str], List[str]]:
        """OpenVINO op names for the ONNX nodes the recipe keeps in float; and recipe names not in the model."""
        skipped = [name for name, node in iter_nodes(onnx_model.graph) if recipe.skips(name, node.op_type)]
        ov_names = [op.get_friendly_name() for op in ov_model.get_ordered_ops()]
        # the frontend names an op after its ONNX node ("conv_0") or a part of it ("conv_0/WithoutBiases")
        out: Set[str] = set()
        for name in skipped:
            out.update(n for n in ov_names if n == name or n.startswith(name + "/"))
        known = {name for name, _ in iter_nodes(onnx_model.graph)}
        wanted = list(recipe.nodes) + list(recipe.exclude_nodes)
        unmatched = sorted({w for w in wanted if w not in known})
        return sorted(out), unmatched

    def _accuracy_control(
        self,
        ov: Any,
        nncf: Any,
        ov_model: Any,
        quantized: Any,
        dataset: Any,
        val: "CalibrationSet",
        max_drop_points: float,
        common: Mapping[str, Any],
        advanced: Any,
        restorer: Any,
    ) -> Tuple[Any, Dict[str, Any]]:
        """Revert layers to float until the top-1 drop on ``val`` is within the budget."""
        assert val.labels is not None
        items = list(zip([dict(f) for f in val.feeds], val.labels))
        core = ov.Core()

        def top1(compiled: Any, data: Sequence[Tuple[Mapping[str, np.ndarray], int]]) -> Tuple[float, List[float]]:
            out = compiled.outputs[0]
            request = compiled.create_infer_request()
            hits = [float(int(np.argmax(request.infer(feed)[out])) == int(label)) for feed, label in data]
            return (float(np.mean(hits)) if hits else 0.0), hits

        fp32_acc, _ = top1(core.compile_model(ov_model, "CPU"), items)
        int8_acc, _ = top1(core.compile_model(quantized, "CPU"), items)
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
        with _quiet(nncf):
            try:
                restored = nncf.quantize_with_accuracy_control(
                    ov_model, dataset, validation, top1, max_drop=max_drop_points / 100.0,
                    drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
                    advanced_accuracy_restorer_parameters=restorer, **common)
            except (ValueError, TypeError, KeyError, RuntimeError) as err:
                raise CalibrationError(f"NNCF accuracy-controlled quantization failed: {_first_line(err)}") from None
        final_acc, _ = top1(core.compile_model(restored, "CPU"), items)
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
def _quiet(nncf: Any) -> Iterator[None]:
    """NNCF logs at INFO and draws progress bars on stdout; `edgekit ... --json` must print one document."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
