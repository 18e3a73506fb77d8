"""The Core ML target: iPhone / iPad / Mac, an ML Program for the Neural Engine.

Build: canonical ONNX → MIL program (our lowering, :mod:`.lower`) →
``ct.convert`` (fp16 or fp32 compute; an image input when the preprocessing
is a plain scale/bias, :mod:`.image_input`) → weight compression
(:mod:`.compress`) → ``model.mlpackage``.  Verification on the build host runs the saved
package through the ``coreml-reference`` numpy executor; on a Mac the
``coreml`` runner runs it with Core ML itself.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from typing import Any, Dict, List, Optional, Set, Tuple

from edgekit.errors import CalibrationError, ModelError
from edgekit.options import Option, OptionSchema

from ..base import Artifact, BuildJob, BuildSpec, Precision, Target
from .optable import OP_TABLE
from .schemes import Compression, DeploymentTarget, Plan, resolve_plan

PACKAGE = "model.mlpackage"
#: the package's entry: a file (manifests list files); the runner opens the folder around it
ENTRY = f"{PACKAGE}/Manifest.json"


def _coremltools() -> Any:
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            # coremltools prints "Failed to load _MLModelProxy" lines on Linux: keep `--json` output clean
            import coremltools
    except ImportError:
        from edgekit.errors import RuntimeMissingError

        raise RuntimeMissingError("the coreml target needs coremltools: pip install 'edgekit[coreml]'") from None
    return coremltools


class CoreMLTarget(Target):
    """ML Program ``.mlpackage`` for Core ML (fp16 default, fp32, int8 weights, palettized, W8A8)."""

    name = "coreml"
    runtime = "coreml"
    precisions = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})
    description = "iPhone / iPad / Mac (Apple Neural Engine) through Core ML"
    verify_runtime = "coreml-reference"
    op_table = OP_TABLE
    build_options = OptionSchema("coreml target", [
        Option("compression", Compression, None,
               "fp32, fp16, w8 (int8 per-channel weights), palettize8/6/4, w8a8; "
               "null = from the precision (int8 → w8) or the device profile"),
        Option("deployment_target", DeploymentTarget, None,
               "minimum OS (ios16 … ios18, macos13 … macos15); null = ios16 or the device profile's, "
               "raised automatically when the compression needs a newer one"),
        Option("enumerated_sizes", list, [],
               'extra input sizes "HxW" the model accepts besides its own (Core ML enumerated shapes, specialized '
               "statically on the device); empty = static shapes only"),
        Option("image_input", bool, True,
               "take a Core ML image input (a pixel buffer, scale and bias folded in) when the preprocessing is a "
               "plain scale/bias normalization into NCHW float32; false: always a tensor input"),
    ])

    def toolchain(self) -> Tuple[bool, str]:
        if importlib.util.find_spec("coremltools") is None:
            return False, "pip install 'edgekit[coreml]'"
        return True, f"coremltools {_coremltools().__version__}"

    # -- plan -----------------------------------------------------------------
    def plan(self, spec: BuildSpec) -> Plan:
        values = self.build_option_values(spec)
        given = {**dict(getattr(spec, "build_options", None) or {}),
                 **{k: v for k, v in (spec.runtime_options or {}).items() if k in self.build_options}}
        return resolve_plan(
            Precision.parse(spec.precision),
            values["compression"], given.get("compression") is not None,
            values["deployment_target"], given.get("deployment_target") is not None,
        )

    def int8_rounds_activations(self, spec: BuildSpec) -> bool:
        """Only W8A8 rounds activations; the default ``w8`` keeps int8 weights and computes in fp16."""
        return self.plan(spec).compression is Compression.W8A8

    # -- build ----------------------------------------------------------------
    def _build(self, job: BuildJob) -> Artifact:
        model, spec, calibration, workdir = job.model, job.spec, job.calibration, job.workdir
        ct = _coremltools()
        from edgekit.runners.coreml.program import load_program

        from .ane import neural_engine_report
        from .enumerated import flexible_input, input_shapes, parse_sizes, verify_sizes
        from .image_input import plan_image_input
        from .lower import lower

        plan = self.plan(spec)
        scheme, target = plan.compression, plan.deployment

        ranges, calib_info = _calibrate(model, spec, calibration) if scheme.needs_calibration else (None, None)

        sizes = parse_sizes(job.options["enumerated_sizes"] or [])
        shapes: List[List[int]] = []
        flexible = None
        if sizes:
            flex_name, default_shape, flexible = flexible_input(model, spec.preprocess)
            shapes = input_shapes(default_shape, flexible, sizes)
        # layers kept out of int8 (a recipe's skip, the mixed-precision search's layers): float activations
        # in and weights left uncompressed
        recipe = spec.recipe
        kept = {n.name for n in model.graph.node if n.name and recipe is not None and recipe.skips(n.name, n.op_type)} \
            if scheme.precision is Precision.INT8 else set()
        lowered = lower(model, target.ct_target(), act_ranges=ranges, flexible=flexible, float_nodes=kept)
        # (ct.convert's fp16 pass renames an op X to X_cast_fp16; the weight compression sees the new name)
        skip_ops = {name for mil, onnx_node in lowered.origins.items() if onnx_node in kept
                    for name in (mil, mil + "_cast_fp16")}
        image, why_tensor = None, "image_input is off (build option)"
        if job.options["image_input"]:
            graph_inputs = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim])
                            for i in model.graph.input if i.name in lowered.input_names]
            image, why_tensor = plan_image_input(spec.preprocess, graph_inputs)
        enumerated = ct.EnumeratedShapes(shapes=shapes, default=shapes[0]) if len(shapes) > 1 else None
        if image is not None:
            inputs = [image.image_type(lowered.input_names[image.input], enumerated)]
        elif enumerated is not None:
            inputs = [ct.TensorType(name=lowered.input_names[flex_name], shape=enumerated)]
        else:
            inputs = None
        precision = ct.precision.FLOAT32 if scheme is Compression.FP32 else ct.precision.FLOAT16
        mlmodel = _convert(ct, lowered.program, inputs, target, precision, scheme, skip_ops)
        mlmodel.short_description = "built by edgekit"
        mlmodel.user_defined_metadata["edgekit.compression"] = scheme.value
        mlmodel.user_defined_metadata["edgekit.deployment_target"] = target.value
        out = workdir / PACKAGE
        mlmodel.save(str(out))

        program = load_program(out)
        report = neural_engine_report(program, lowered.origins, enumerated=enumerated is not None)
        size_checks: List[Dict[str, Any]] = []
        if enumerated is not None:  # the pipeline verifies the default size; the others are checked here
            from ..stages import DEFAULT_MIN_SQNR_DB

            floor = float(spec.gates.get("min_sqnr_db", DEFAULT_MIN_SQNR_DB[job.precision]))
            size_checks = verify_sizes(model, program, (lowered.input_names, lowered.output_names), flex_name,
                                       shapes, image, floor, fp16=scheme is not Compression.FP32)
        files = sorted(p.relative_to(workdir).as_posix() for p in out.rglob("*") if p.is_file())
        details: Dict[str, Any] = {
            "precision": Precision.parse(spec.precision).value,
            "compression": scheme.value,
            "deployment_target": target.value,
            "ml_program_opset": f"iOS{target.level}",
            "compute_precision": "fp32" if scheme is Compression.FP32 else "fp16",
            "io_names": {"inputs": lowered.input_names, "outputs": lowered.output_names},
            "input_type": "image" if image is not None else "tensor",
            "neural_engine": report,
        }
        if size_checks:
            details["enumerated_shapes"] = [{"shape": list(shapes[0]), "default": True}] + size_checks
        if image is not None:
            details["image_input"] = image.to_details(lowered.input_names[image.input])
        else:
            details["tensor_input_reason"] = why_tensor
        if plan.note:
            details["note"] = plan.note
        quantization = (_quantization_section(ct, scheme, len(lowered.activation_quant), calib_info)
                        if scheme.precision is Precision.INT8 else None)
        runtime_options = {k: v for k, v in self.runtime_option_values(spec).items()}
        return Artifact(
            files=files,
            entry=ENTRY,
            runtime_options=runtime_options,
            runtime_versions={"coremltools": ct.__version__},
            details=details,
            quantization=quantization,
            verify_note="the ML Program interpreted by edgekit's numpy reference executor (coreml-reference), "
                        "fp16 rounding where the program computes in fp16",
        )


def _calibrate(model: Any, spec: BuildSpec, calibration: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """W8A8's activation ranges from the calibration data, and the manifest's note on how they were taken."""
    from .compress import activation_ranges, activation_tensors
    from .lower import W8A8_CONSUMERS

    if calibration is None or len(calibration) == 0:
        raise CalibrationError("coreml w8a8 needs calibration data for its activation ranges: "
                               "pass --calib DIR|FILE.npz (or build w8 / palettize, which need none)")
    used = calibration.for_recipe(spec.recipe.num_samples)
    tensors = activation_tensors(model, W8A8_CONSUMERS)
    ranges = activation_ranges(model, tensors, used.feeds, spec.recipe)
    calib_info = {"samples": len(used), "source": used.source, "method": spec.recipe.method.value,
                  "percentile": spec.recipe.percentile, "activations": len(ranges)}
    return ranges, calib_info


def _convert(ct: Any, program: Any, inputs: Optional[List[Any]], target: DeploymentTarget, precision: Any,
             scheme: Compression, skip_ops: Set[str]) -> Any:
    """``ct.convert`` of the lowered program then the weight compression, coremltools' chatter silenced
    and its failures turned into one ModelError."""
    from .compress import compress_weights

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # progress bars and deprecation notes; the pipeline reports progress
        try:
            mlmodel = ct.convert(program, convert_to="mlprogram", inputs=inputs,
                                 minimum_deployment_target=target.ct_target(), compute_precision=precision)
            return compress_weights(mlmodel, scheme, skip_ops)
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as err:
            raise ModelError(f"coremltools could not convert the lowered program ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}); report this with the model") from None


def _quantization_section(ct: Any, scheme: Compression, activations: int,
                          calib_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The manifest's quantization section of an int8 scheme (weights; W8A8 adds its activations)."""
    from .compress import WEIGHT_THRESHOLD

    quantization: Dict[str, Any] = {
        "format": f"coreml-{scheme.value}",
        "tool": f"coremltools {ct.__version__} (optimize.coreml)",
        "weights": ({"dtype": "int8", "mode": "linear_symmetric", "granularity": "per_channel"}
                    if scheme.palette_bits is None else
                    {"palettization": f"{scheme.palette_bits}-bit k-means lookup table per tensor"}),
        "weight_threshold": WEIGHT_THRESHOLD,
    }
    if scheme is Compression.W8A8:
        quantization["activations"] = {"dtype": "int8", "granularity": "per_tensor", "count": activations}
        quantization["calibration"] = calib_info
    return quantization
