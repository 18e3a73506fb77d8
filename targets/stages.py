"""The build stages: load → canonicalize → check → calibrate → target build → verify → gate → package.

Each stage is a function from typed inputs to a typed output, so it can be
run and tested alone; :mod:`edgekit.targets.pipeline` composes them and
times each into the manifest's build report.  Everything the user asked for
is validated by :func:`resolve_request` before the first long step.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import edgekit
from edgekit import _jsontypes as jt
from edgekit import postprocess as _post
from edgekit import preprocess as _pre
from edgekit.errors import ConfigError, EdgekitError, GateError
from edgekit.layout import fit_steps_to_input
from edgekit.manifest import (
    SCHEMA,
    ArtifactInfo,
    BuildReport,
    Manifest,
    QuantizationInfo,
    SourceInfo,
    StageTiming,
    SupportInfo,
    TargetInfo,
    TensorSpec,
    Verification,
    make_details,
)
from edgekit.package import LABELS, MANIFEST, check_output, write_package
from edgekit.quantize.calibration import CalibrationSet, load_feeds
from edgekit.quantize.mixed import MixedPrecisionConfig
from edgekit.quantize.ranges import recipe_for_samples
from edgekit.quantize.parity import (MIN_RECALL_DETECTIONS, ParityReport, check_gates, compare_outputs, recall_judged,
                                    streamed_parts)
from edgekit.quantize.recipe import Recipe

from .base import Artifact, BuildSpec, Precision, SupportReport, Target
from .canonicalize import CanonicalModel, canonicalize, load_onnx, onnx_sha256
from .devices import DeviceProfile
from .state import StatePair, carry_state, run_stream, state_pairs

#: progress(stage, done, total): called as long steps advance (total 0 = unknown)
ProgressFn = Callable[[str, int, int], None]

#: verification samples held out of the calibration data at most
HOLDOUT_MAX = 100
RECIPE_FILE = "recipe.json"
RANDOM_VERIFY_SAMPLES = 8
#: below this many verification samples the figures are rough: the build says so
MIN_VERIFY_SAMPLES = 32
#: a stateful model is checked as a stream when there are at least this many samples (one feeds its state on)
MIN_STREAM_CHUNKS = 2
GATES = ("min_sqnr_db", "max_accuracy_drop", "min_recall")

#: the SQNR floor (dB) of the weakest checked part when the user sets none.  Measured by
#: benchmarks/quality_floors.py on the 11 golden models (tests/models, random-normal calibration and
#: verification) and the bundled Fashion-MNIST CNN (its images), weakest part, lowest over the models:
#:   onnxruntime  fp32 200 (bit-exact)  fp16 62.1  int8 29.9 (bundled 36.8)
#:   openvino     fp32 125.8            fp16 62.1  int8 27.7 (bundled 27.0)
#: (qnn and tensorrt not measured yet).  A floor is a line against broken artifacts (a silent bf16
#: downcast of fp32 gives 22–52 dB; broken int8 0–10 dB), not a quality target: set --min-sqnr for that.
DEFAULT_MIN_SQNR_DB: Mapping[Precision, float] = {
    Precision.FP32: 60.0,
    Precision.FP16: 30.0,
    Precision.BF16: 30.0,
    Precision.INT8: 25.0,
}

#: tasks whose decoded boxes a recall gate judges (a text detector's boxes carry no class)
RECALL_TASKS = ("detect", "text-detect")

#: a detector's floor on recall vs fp32 (its decoded detections matched with fp32's at IoU ≥ 0.5, same
#: class) when the user sets no --min-recall; it judges once fp32 found MIN_RECALL_DETECTIONS boxes
#: (edgekit.quantize.parity).  Measured (benchmarks/bench_detect_recall.py; golden yolo_head on random-normal
#: feeds, 533 fp32 boxes; Ultralytics YOLOv8n 320² on 64 held-out people scenes, 95 boxes):
#:   fp32 1.000 on every target (golden and YOLOv8n); fp16 0.979–1.000 (qnn's HTP the lowest);
#:   bf16 0.998 (YOLOv8n 1.000);
#:   int8: golden 0.949–0.989 on every target; YOLOv8n 0.97–0.99 with its stem and the head's last
#:   layers kept out of int8 (targets/graph.py detection_tail), 0.905–0.916 without on onnxruntime,
#:   openvino and tflite (0.78 on the 9 boxes of the first real-model run): int8's floor lies between.
#:   Sampling: at 95 boxes one box is 0.011 of recall, the floors keep about two standard errors of margin.
#: Like the SQNR floors, a line against broken artifacts, not a quality target: set --min-recall for that.
DEFAULT_MIN_RECALL: Mapping[Precision, float] = {
    Precision.FP32: 0.98,
    Precision.FP16: 0.95,
    Precision.BF16: 0.95,
    Precision.INT8: 0.92,
}


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


# ----------------------------------------------------------------- the request
@dataclass(frozen=True)
class BuildRequest:
    """Everything the user asked for, validated before any long step."""

    model: Any
    target: Target
    profile: Optional[DeviceProfile]
    precision: Precision
    recipe: Recipe
    steps: Tuple[Any, ...]
    postprocess: Any
    labels: Optional[Tuple[str, ...]]
    #: the gates the user set (unset ones left out); default floors are added by :func:`gate`
    gates: Mapping[str, float]
    #: runner options the package carries, checked against the runner's schema
    runtime_options: Mapping[str, Any]
    #: the target's build options (never in the manifest)
    build_options: Mapping[str, Any]
    calibration: Any = None
    validation: Any = None
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None
    size: Optional[Tuple[int, int]] = None
    name: Optional[str] = None
    output: Optional[Path] = None
    allow_gate_failure: bool = False
    progress: ProgressFn = _no_progress
    #: int8: how far the build may keep layers in float to meet its floor (edgekit.quantize.mixed)
    mixed_precision: Any = None
    #: int8: rank the layers and report the layer-wise divergence even when the floor holds (--explain)
    explain: bool = False

    @property
    def task(self) -> str:
        return _post.config_to_json(self.postprocess)["task"]


def get_target(name: str) -> Target:
    from . import TARGETS

    return TARGETS.get(name)()


def resolve_target(target: Optional[str], device: Optional[str]) -> Tuple[Target, Optional[DeviceProfile]]:
    from .devices import get_profile

    if device is not None:
        profile = get_profile(device)
        if target is not None and target != profile.target:
            raise ConfigError(
                f"device {device!r} uses the {profile.target!r} target, but --target {target!r} was given; drop one"
            )
        return get_target(profile.target), profile
    if target is None:
        raise ConfigError("give a target or a device: --target onnxruntime or --device raspberry-pi-5 (see `edgekit targets`)")
    return get_target(target), None


def read_steps(preprocess: Any) -> Tuple[Any, ...]:
    if preprocess is None:
        return ()
    if isinstance(preprocess, (str, os.PathLike)):
        path = Path(preprocess)
        if not path.is_file():
            raise ConfigError(f"{path}: preprocessing file not found; give a JSON file with a list of steps")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and "preprocess" in data:
            data = data["preprocess"]
        return _pre.steps_from_json(data, where=str(path))
    preprocess = list(preprocess)
    if all(isinstance(s, dict) for s in preprocess):
        return _pre.steps_from_json(preprocess, where="preprocess")
    return tuple(preprocess)


def read_labels(labels: Any) -> Optional[Tuple[str, ...]]:
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise ConfigError(f"{path}: labels file not found; give a text file with one class name per line")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: labels file is not UTF-8 (byte {exc.start}); save it as UTF-8") from None
        # one class per "\n"-separated line; only ASCII blanks are trimmed, so a label that is itself a
        # Unicode space (PaddleOCR dictionaries hold U+3000) keeps its index
        return tuple(x.strip(" \t\r") for x in text.split("\n") if x.strip(" \t\r"))
    return tuple(str(x) for x in labels)


def read_postprocess(task: Optional[str], postprocess: Any) -> Any:
    if postprocess is not None:
        if isinstance(postprocess, dict):
            return _post.config_from_json(postprocess, where="postprocess")
        return postprocess
    return _post.config_from_json({"task": task or "raw"}, where="task")


def read_recipe(recipe: Any) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if recipe is None:
        return Recipe()
    if isinstance(recipe, Mapping):
        return Recipe.from_json(dict(recipe), where="recipe")
    return Recipe.load(recipe)


def read_gates(gates: Optional[Mapping[str, Optional[float]]]) -> Dict[str, float]:
    given = dict(gates or {})
    unknown = sorted(set(given) - set(GATES))
    if unknown:
        raise ConfigError(f"unknown gate(s) {unknown}; known gates: {', '.join(GATES)}")
    out = {}
    for k, v in given.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f'gate "{k}" must be a number, but got {v!r}')
        if k == "min_recall" and not 0.0 <= v <= 1.0:
            raise ConfigError(f'gate "min_recall" must be a fraction in [0, 1], but got {v!r}')
        out[k] = float(v)
    return out


def _runner_options_schema(runtime: str) -> Any:
    """The runner's OptionSchema, or None where the runner (or its schema) cannot be imported here."""
    from edgekit.runners import RUNNERS

    try:
        cls = RUNNERS.get(runtime)
    except ImportError:
        return None
    return getattr(cls, "options", None)


def split_options(target: Target, profile: Optional[DeviceProfile], runtime_options: Optional[Mapping[str, Any]],
                  build_options: Optional[Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(runtime options for the package, build options for the target), each checked by its schema.

    Names the target declares as build options move to the build options (so
    ``require_npu`` given among runtime options steers the build and never
    reaches a manifest).  A device-only runner option (a cache folder) is
    refused: a package never decides where the device writes.
    """
    bschema = getattr(target, "build_options", None)
    bnames = set(bschema.names) if bschema is not None else set()
    given_rt: Dict[str, Any] = dict(profile.runtime_options) if profile is not None else {}
    given_rt.update(runtime_options or {})
    build: Dict[str, Any] = {k: v for k, v in given_rt.items() if k in bnames}
    build.update(build_options or {})
    runtime = {k: v for k, v in given_rt.items() if k not in bnames}
    rschema = _runner_options_schema(target.runtime)
    if rschema is not None:
        device_only = [k for k in runtime if k in rschema and rschema[k].device_only]
        if device_only:
            raise ConfigError(
                f"runtime option(s) {device_only} of the {target.runtime} runner are device-only (they touch the "
                "device's file system) and a package never carries them; set them on the device: "
                f"edgekit.load(..., {device_only[0]}=...) or the EDGEKIT_CACHE_DIR environment variable"
            )
        runtime = rschema.parse(runtime, source=f"the build's runtime options for the {target.runtime} runner",
                                also_known=sorted(bnames))
    if bschema is not None and build:
        build = bschema.parse(build, source=f"the {target.name} target's build options")
    elif build:
        raise ConfigError(f"the {target.name} target has no build options, but got {sorted(build)}")
    return runtime, build


def resolve_request(model: Any, *, target: Optional[str] = None, device: Optional[str] = None,
                    precision: Optional[str] = None, calibration: Any = None, validation: Any = None,
                    preprocess: Any = None, task: Optional[str] = None, postprocess: Any = None, labels: Any = None,
                    gates: Optional[Mapping[str, Optional[float]]] = None, output: Any = None, recipe: Any = None,
                    input_shapes: Optional[Mapping[str, Sequence[int]]] = None, size: Optional[Tuple[int, int]] = None,
                    runtime_options: Optional[Mapping[str, Any]] = None,
                    build_options: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                    allow_gate_failure: bool = False, progress: Optional[ProgressFn] = None,
                    mixed_precision: Any = None, explain: bool = False) -> BuildRequest:
    """Check every argument of :func:`edgekit.build`; nothing long runs here."""
    if output is not None:
        check_output(output)  # an output that is not a package (or not writable) is refused before any work
    tgt, profile = resolve_target(target, device)
    prec = Precision.parse(precision or (profile.precision if profile else "fp32"))
    if prec not in tgt.precisions:
        raise ConfigError(
            f"the {tgt.name} target builds {sorted(p.value for p in tgt.precisions)}, not {prec.value!r}; pick another --precision"
        )
    rt, bo = split_options(tgt, profile, runtime_options, build_options)
    steps = read_steps(preprocess)
    req = BuildRequest(
        model=model, target=tgt, profile=profile, precision=prec, recipe=read_recipe(recipe), steps=steps,
        postprocess=read_postprocess(task, postprocess), labels=read_labels(labels), gates=read_gates(gates),
        runtime_options=rt, build_options=bo, calibration=calibration, validation=validation,
        input_shapes=input_shapes, size=size if size is not None else _resize_size(steps), name=name,
        output=Path(output) if output is not None else None, allow_gate_failure=allow_gate_failure,
        progress=progress or _no_progress, mixed_precision=MixedPrecisionConfig.parse(mixed_precision),
        explain=bool(explain),
    )
    check_task_gates(req.task, req.gates)
    return req


def _resize_size(steps: Sequence[Any]) -> Optional[Tuple[int, int]]:
    for s in steps:
        if isinstance(s, _pre.Resize):
            return (s.height, s.width)
    return None


# ----------------------------------------------------------------- 1. load
@dataclass(frozen=True)
class Source:
    proto: Any  # onnx.ModelProto
    sha256: str
    name: str


def load(req: BuildRequest) -> Source:
    """Read the source model and hash it (a path's bytes; a ModelProto's serialization)."""
    req.progress("load", 0, 0)
    map_large_allocations()
    name = req.name
    if name is None and isinstance(req.model, (str, os.PathLike)):
        name = Path(req.model).stem
    return Source(proto=load_onnx(req.model), sha256=onnx_sha256(req.model), name=name or "model")


# ----------------------------------------------------------------- 2. canonicalize
@dataclass(frozen=True)
class Canonical:
    model: CanonicalModel
    #: the postprocess config decided from the graph (output, segmentation scores, label count)
    postprocess: Any
    #: the preprocessing completed and checked against the input (edgekit.layout.fit_steps_to_input)
    steps: Tuple[Any, ...] = ()


def canonicalize_stage(req: BuildRequest, src: Source) -> Canonical:
    layout = next((s.order.value for s in req.steps if isinstance(s, _pre.Layout)), None)
    from . import rewrites  # quantization-friendly, fp32-exact rewrites: only int8 builds pay for them

    # a source the build loaded itself (load_onnx: read and checked) is handed over, changed in place rather than
    # checked and copied again (its weights are dropped right after, see drop_source_weights); a caller's
    # ModelProto is copied
    canon = canonicalize(src.proto, input_shapes=req.input_shapes, size=req.size, layout=layout,
                         rewrites=rewrites.DEFAULT + tuple(req.target.int8_rewrites)
                         if req.precision is Precision.INT8 else (),
                         owned=src.proto is not req.model)
    steps = tuple(req.steps)
    input_layout = None
    if len(canon.inputs) == 1:  # image steps feed one input: its layout, and a tensor that fits it
        steps = fit_steps_to_input(steps, canon.inputs[0].name, canon.inputs[0].shape)
        input_layout = canon.inputs[0].layout
    post = _post.resolve_for_model(req.postprocess, canon.model.graph, [(t.name, t.shape) for t in canon.outputs],
                                   req.labels, input_layout)
    return Canonical(model=canon, postprocess=post, steps=steps)


def drop_source_weights(req: BuildRequest, src: Source) -> Source:
    """The source after canonicalization: the stages after it read only its header (producer, metadata),
    so a source the build loaded itself keeps no weights (a whole copy of the model, for a large model most
    of the build's memory).  A ModelProto the caller passed is theirs and is left alone."""
    if src.proto is req.model:
        return src
    del src.proto.graph.initializer[:]
    header = type(src.proto)()
    header.CopyFrom(src.proto)  # a fresh message: the old one's memory is freed with it, not kept in its arena
    return dataclasses.replace(src, proto=header)


# ----------------------------------------------------------------- 3. check
@dataclass(frozen=True)
class Checked:
    spec: BuildSpec
    support: SupportReport


def check(req: BuildRequest, canon: Canonical) -> Checked:
    """The target's cheap support check; every problem in one error, before any long step."""
    task = _post.config_to_json(canon.postprocess)["task"]
    spec = BuildSpec(precision=req.precision, recipe=req.recipe, device=req.profile,
                     runtime_options=dict(req.runtime_options), task=task, gates=dict(req.gates),
                     build_options=dict(req.build_options), preprocess=tuple(canon.steps))
    report = req.target.check(canon.model.model, spec)
    report.raise_if_unsupported()
    return Checked(spec=spec, support=report)


# ----------------------------------------------------------------- 4. calibrate
@dataclass(frozen=True)
class DataSets:
    """Calibration and verification data, through the shared preprocessing."""

    spec: BuildSpec  # with the user's validation data attached (accuracy-controlled int8 reads it)
    calibration: Optional[CalibrationSet]
    verification: Optional[CalibrationSet]
    verify_source: str


def calibrate(req: BuildRequest, canon: Canonical, checked: Checked) -> DataSets:
    pre = _pre.Preprocessor(canon.steps)
    names = list(req.labels) if req.labels else None
    calib = verify = None
    verify_source = ""
    spec = checked.spec
    if req.calibration is not None:
        calib = load_feeds(req.calibration, canon.model.inputs, pre, limit=req.recipe.num_samples + HOLDOUT_MAX,
                           class_names=names, progress=lambda d, t: req.progress("calibration data", d, t))
    if req.validation is not None:
        verify = load_feeds(req.validation, canon.model.inputs, pre, class_names=names,
                            progress=lambda d, t: req.progress("validation data", d, t))
        verify_source = verify.source
        spec = dataclasses.replace(spec, validation=verify)
    elif calib is not None and len(calib.feeds) >= 2:
        n_hold = max(1, min(HOLDOUT_MAX, len(calib.feeds) // 5))
        calib, verify = calib.split(n_hold)
        verify_source = f"{len(verify.feeds)} samples held out from the calibration data"
    if verify is None and calib is not None:
        verify = calib
        verify_source = "the calibration data (too few samples to hold any out)"
    if calib is not None and req.precision is Precision.INT8:
        calib = _carry_calibration_state(canon, calib)
        # percentile / entropy on a handful of samples is guesswork: min-max, with a warning naming the count
        spec = dataclasses.replace(spec, recipe=recipe_for_samples(spec.recipe, len(calib)))
    if "max_accuracy_drop" in req.gates and (verify is None or verify.labels is None or spec.task != "classify"):
        raise ConfigError(
            "the max_accuracy_drop gate needs labelled validation data for a classifier (--task classify and "
            "--val or --calib as a folder of class subfolders); without it the gate cannot be evaluated. "
            "Give labelled data, or drop --max-accuracy-drop"
        )
    return DataSets(spec=spec, calibration=calib, verification=verify, verify_source=verify_source)


def _carry_calibration_state(canon: Canonical, calib: CalibrationSet) -> CalibrationSet:
    """A stateful model calibrates on the states a stream brings its samples (targets/state.carry_state)."""
    pairs = state_pairs(canon.model.model)
    if not pairs or len(calib.feeds) < MIN_STREAM_CHUNKS:
        return calib
    import onnxruntime as ort

    sess = ort.InferenceSession(canon.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [p.output for p in pairs]
    feeds, changed = carry_state(calib.feeds, pairs, lambda f: dict(zip(names, sess.run(names, f))))
    if not changed:
        return calib
    return dataclasses.replace(calib, feeds=feeds, source=f"{calib.source}; state inputs ({', '.join(p.input for p in pairs)}) "
                               f"of {changed} zero-state samples carried over from the samples before, as in a stream")


# ----------------------------------------------------------------- 5. target build
@dataclass(frozen=True)
class Built:
    artifact: Artifact
    #: the package's files (model/…, labels.txt, recipe.json), manifest not yet written
    stage: Path


def target_build(req: BuildRequest, canon: Canonical, data: DataSets, workdir: Path) -> Built:
    """The target compiles the canonical model; its files are staged under ``model/``."""
    art_dir = workdir / "artifact"
    art_dir.mkdir()
    req.progress("build", 0, 0)
    artifact = req.target.build(canon.model.model, data.spec, data.calibration, art_dir)
    stage = workdir / "package"
    (stage / "model").mkdir(parents=True)
    for rel in artifact.files:
        src = art_dir / rel
        if not src.is_file():
            raise EdgekitError(f"internal error: target {req.target.name} listed {rel!r} but did not write it")
        dst = stage / "model" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    if req.labels:
        (stage / LABELS).write_text("\n".join(req.labels) + "\n", encoding="utf-8")
    if artifact.quantization and artifact.quantization.get("recipe"):
        # the recipe as a file next to the artifact: `edgekit build --recipe recipe.json` reproduces it
        (stage / RECIPE_FILE).write_text(json.dumps(artifact.quantization["recipe"], indent=2) + "\n", encoding="utf-8")
    return Built(artifact=artifact, stage=stage)


def steps_for_artifact(steps: Sequence[Any], inputs: Optional[Sequence[TensorSpec]]) -> Tuple[Any, ...]:
    """The package's preprocessing: the build's steps, quantizing into the input where the artifact takes integers.

    Calibration and verification feed float tensors (adapt_feed quantizes them for the
    artifact); the device runs the manifest's steps, so they must make what the input takes.
    """
    steps = tuple(steps)
    if inputs is None or len(inputs) != 1:  # the steps feed one input; several inputs take tensors as given
        return steps
    spec = inputs[0]
    if spec.quantization is None or np.dtype(spec.dtype).kind not in "iu":
        return steps
    return _pre.quantize_into(steps, spec.dtype, spec.quantization.scale, spec.quantization.zero_point)


def assemble_manifest(req: BuildRequest, src: Source, canon: Canonical, checked: Checked, built: Built, *,
                      runtime_versions: Mapping[str, str], verification: Optional[Verification] = None,
                      build: Optional[BuildReport] = None) -> Manifest:
    """The typed manifest of this build (``files`` is filled by write_package)."""
    art, tgt = built.artifact, req.target
    options = {**req.runtime_options, **art.runtime_options}
    rschema = _runner_options_schema(tgt.runtime)
    if rschema is not None and art.runtime_options:  # what the target adds is checked like the user's
        options = {**req.runtime_options, **rschema.parse(art.runtime_options, source=f"the {tgt.name} target")}
    return Manifest(
        schema=SCHEMA,
        name=src.name,
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        edgekit_version=edgekit.__version__,
        source=SourceInfo(sha256=src.sha256, format="onnx", opset=canon.model.opset,
                          producer=src.proto.producer_name or None, canonicalization=tuple(canon.model.notes),
                          metadata_props={p.key: p.value for p in src.proto.metadata_props}),
        target_info=TargetInfo(name=tgt.name, runtime=tgt.runtime, device=req.profile.name if req.profile else None,
                               runtime_versions=dict(runtime_versions), runtime_options=jt._plain(options),
                               details=make_details(tgt.name, art.details, "target details")),
        precision=req.precision.value,
        quantization=jt.parse(QuantizationInfo, jt._plain(dict(art.quantization)), "quantization")
        if art.quantization else None,
        inputs=tuple(art.inputs) if art.inputs is not None else tuple(canon.model.inputs),
        outputs=tuple(art.outputs) if art.outputs is not None else tuple(canon.model.outputs),
        preprocess=steps_for_artifact(canon.steps, art.inputs),
        postprocess=canon.postprocess,
        artifact=ArtifactInfo(entry=f"model/{art.entry}", files=tuple(f"model/{f}" for f in art.files)),
        files={},
        labels_file=LABELS if req.labels else None,
        recipe_file=RECIPE_FILE if (built.stage / RECIPE_FILE).exists() else None,
        support=jt.parse(SupportInfo, jt._plain(checked.support.to_json()), "support"),
        verification=verification,
        build=build,
    )


# ----------------------------------------------------------------- 6. verify
@dataclass(frozen=True)
class Verified:
    parity: ParityReport
    #: the verification record without the gate outcome (see :func:`gate`)
    record: Mapping[str, Any]
    runtime_versions: Mapping[str, str]


def random_feeds(canon: CanonicalModel, n: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(n):
        feed = {}
        for t in canon.inputs:
            if t.dtype.startswith("float"):
                feed[t.name] = rng.standard_normal(t.shape).astype(t.dtype)
            else:
                feed[t.name] = rng.integers(0, 8, size=t.shape).astype(t.dtype)
        feeds.append(feed)
    return feeds


def run_reference(model: Union[bytes, str], feeds: Sequence[Mapping[str, np.ndarray]],
                  progress: ProgressFn, pairs: Sequence[StatePair] = ()
                  ) -> Tuple[List[Dict[str, np.ndarray]], float, Optional[List[Dict[str, np.ndarray]]]]:
    """The fp32 canonical model (serialized, or the path of its file) through onnxruntime: the yardstick for
    every target.  With state ``pairs``, also the feeds run as one stream (None without)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model, sess_options=ort.SessionOptions(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out, times = [], []
    for i, feed in enumerate(feeds):
        t0 = time.perf_counter()
        values = sess.run(names, dict(feed))
        times.append(time.perf_counter() - t0)
        out.append(dict(zip(names, values)))
        progress("verify fp32", i + 1, len(feeds))
    stream = run_stream(lambda f: dict(zip(names, sess.run(names, f))), feeds, pairs) if pairs else None
    return out, float(np.median(times)) if times else 0.0, stream


def adapt_feed(feed: Mapping[str, np.ndarray], runner: Any) -> Dict[str, np.ndarray]:
    """Cast fp32 verification feeds to what the artifact takes (fp16 IO, quantized inputs)."""
    out = {}
    for spec in runner.inputs:
        x = feed[spec.name]
        if spec.quantization is not None and np.dtype(spec.dtype).kind in "iu":
            info = np.iinfo(spec.dtype)
            q = np.round(x / spec.quantization.scale) + spec.quantization.zero_point
            x = np.clip(q, info.min, info.max)
        out[spec.name] = np.ascontiguousarray(x.astype(spec.dtype, copy=False))
    return out


def dequantize_outputs(outputs: Mapping[str, np.ndarray], runner: Any) -> Dict[str, np.ndarray]:
    res = {}
    for spec in runner.outputs:
        y = outputs[spec.name]
        if spec.quantization is not None and np.dtype(spec.dtype).kind in "iu":
            y = (y.astype(np.float32) - spec.quantization.zero_point) * spec.quantization.scale
        res[spec.name] = y.astype(np.float32, copy=False)
    return res


def _verify_feeds(canon: Canonical, data: DataSets) -> Tuple[List[Any], Optional[List[int]], str, bool]:
    if data.verification is None:
        feeds = random_feeds(canon.model, RANDOM_VERIFY_SAMPLES)
        warnings.warn(
            f"no --calib or --val given: verified on {len(feeds)} random-normal tensors, not real inputs; the "
            "figures say the artifact computes what the source computes, not how it does on your data",
            stacklevel=2,
        )
        return feeds, None, f"{len(feeds)} random-normal tensors (no --calib or --val given: parity only, no accuracy)", True
    n = len(data.verification.feeds)
    if n < MIN_VERIFY_SAMPLES:
        warnings.warn(
            f"verified on only {n} sample(s) ({data.verify_source}); below {MIN_VERIFY_SAMPLES} the figures are "
            "rough: give more with --val", stacklevel=2)
    return list(data.verification.feeds), data.verification.labels, data.verify_source, False


def verify(req: BuildRequest, src: Source, canon: Canonical, checked: Checked, data: DataSets, built: Built,
           workdir: Path) -> Verified:
    """Run the artifact (through its runner) and the fp32 source (onnxruntime) on the same samples."""
    from edgekit.model import load as _load

    art = built.artifact
    versions = dict(art.runtime_versions)
    staged = workdir / "staged"
    write_package(built.stage, assemble_manifest(req, src, canon, checked, built, runtime_versions=versions).to_json(),
                  staged)
    feeds, labels, source, random_inputs = _verify_feeds(canon, data)
    # a model that carries state across calls is also checked as one stream of the feeds (targets/state.py)
    pairs = state_pairs(canon.model.model) if len(feeds) >= MIN_STREAM_CHUNKS else ()
    # from a file: onnxruntime given bytes holds them beside its own copy of the weights while it loads
    reference, ref_latency, ref_stream = run_reference(
        str(canon.model.save(workdir / "reference" / "model.onnx")), feeds, req.progress, pairs)
    return_freed_memory()  # the reference session's memory, before the artifact's session loads
    runtime = req.target.verify_runtime or req.target.runtime
    candidate, times = [], []
    with _load(staged, runtime=runtime, require_signature=False, **art.verify_options) as m:
        versions.update({k: v for k, v in m.runner.describe().items()
                         if k not in ("runner", "providers") and isinstance(v, str)})
        for i, feed in enumerate(feeds):
            out = m.infer(adapt_feed(feed, m.runner))
            times.append(m.runner.last_latency_s)
            candidate.append(dequantize_outputs(out, m.runner))
            req.progress("verify", i + 1, len(feeds))
        cand_stream = run_stream(lambda f: dequantize_outputs(m.infer(adapt_feed(f, m.runner)), m.runner),
                                 feeds, pairs) if pairs else None
    parity = compare_outputs(reference, candidate, task=checked.spec.task, labels=labels,
                             postprocess=canon.postprocess, class_names=req.labels)
    if ref_stream is not None and cand_stream is not None:
        parity = dataclasses.replace(parity, parts=parity.parts + streamed_parts(ref_stream, cand_stream))
    record = {
        "samples": len(feeds), "data": source, "random_inputs": random_inputs,
        "stream": {"chunks": len(feeds), "state": [p.to_json() for p in pairs],
                   "note": "the samples run in order as one stream, each call fed the state outputs of the call "
                           "before, through the fp32 reference and the artifact; the '(streamed)' parts"} if pairs else None,
        "reference": "fp32 source model on onnxruntime (CPUExecutionProvider)",
        "runtime": runtime, "runtime_options": jt._plain(dict(art.verify_options)), "note": art.verify_note or None,
        **parity.to_json(),
        "latency_ms": {
            "artifact_median": round(float(np.median(times)) * 1e3, 4) if times else None,
            "fp32_reference_median": round(ref_latency * 1e3, 4),
            "note": "single-sample medians on the build host during verification; use `edgekit bench` on the device",
        },
    }
    return Verified(parity=parity, record=record, runtime_versions=versions)


# ----------------------------------------------------------------- 7. gate
def effective_gates(req: BuildRequest) -> Tuple[Dict[str, float], Dict[str, str]]:
    """The user's gates plus the precision's default floors where the user set none: SQNR for every
    build, recall for a detector (``--task detect`` or ``text-detect``)."""
    gates = dict(req.gates)
    sources = {k: "user" for k in gates}
    if "min_sqnr_db" not in gates:
        gates["min_sqnr_db"] = DEFAULT_MIN_SQNR_DB[req.precision]
        sources["min_sqnr_db"] = f"default floor for {req.precision.value}"
    if "min_recall" not in gates and req.task in RECALL_TASKS:
        gates["min_recall"] = DEFAULT_MIN_RECALL[req.precision]
        sources["min_recall"] = f"default floor for {req.precision.value} detection"
    return gates, sources


def check_effective_gates(req: BuildRequest, parity: ParityReport) -> None:
    """Every gate of :func:`effective_gates` on one verification; :class:`GateError` (one line) when one fails.
    The gate stage and the int8 mixed-precision search judge a build through this one function."""
    gates, sources = effective_gates(req)
    check_gates(parity, min_sqnr_db=gates.get("min_sqnr_db"), max_accuracy_drop=gates.get("max_accuracy_drop"),
                floor=sources["min_sqnr_db"] != "user", min_recall=gates.get("min_recall"),
                recall_floor=sources.get("min_recall", "user") != "user")


def check_task_gates(task: str, gates: Mapping[str, float]) -> None:
    """A gate the task cannot evaluate is refused before any long step."""
    if "min_recall" in gates and task not in RECALL_TASKS:
        raise ConfigError(f"the min_recall gate judges decoded detections, but the task is {task!r}; "
                          "give --task detect or text-detect, or drop --min-recall")


def gate(req: BuildRequest, verified: Verified) -> Verification:
    """Apply the gates to the weakest checked part; a failure raises unless ``allow_gate_failure``."""
    gates, sources = effective_gates(req)
    record = dict(verified.record, gates=gates, gate_sources=sources)
    if "min_recall" in gates and sources["min_recall"] != "user" and verified.parity.detection is not None \
            and not recall_judged(verified.parity, recall_floor=True):
        warnings.warn(
            f"the default recall floor ({gates['min_recall']:.2f}) did not judge this detector: fp32 found only "
            f"{verified.parity.detection.reference_detections} box(es) on the verification samples (it needs "
            f"{MIN_RECALL_DETECTIONS}); give more images with --val, or set --min-recall", stacklevel=2)
    try:
        check_effective_gates(req, verified.parity)
        record["passed"] = True
    except GateError as exc:
        if not req.allow_gate_failure:
            raise
        record.update(passed=False, gate_failure=str(exc))
        warnings.warn(f"build kept despite failed gates (--allow-gate-failure): {exc}", stacklevel=2)
    return jt.parse(Verification, record, "verification")


# ----------------------------------------------------------------- 8. package
def host_info() -> Dict[str, str]:
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()}


def package(req: BuildRequest, manifest: Manifest, built: Built) -> Tuple[Path, Manifest]:
    """Write the package atomically (nothing appears at ``output`` unless it is complete); the manifest as written."""
    output = req.output or Path(f"{manifest.name}-{req.target.name}-{req.precision.value}.edgepkg")
    req.progress("package", 0, 0)
    path = Path(write_package(built.stage, manifest.to_json(), output))
    if path.is_dir():
        text = (path / MANIFEST).read_text(encoding="utf-8")
    else:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(MANIFEST).decode("utf-8")
    return path, Manifest.from_json(json.loads(text), req.labels)


_TRIM: Any = None


def return_freed_memory() -> None:
    """Hand the heap pages a stage freed back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed heap memory, and the next stage's big allocations (onnxruntime's weights) are mostly
    fresh mmaps that cannot reuse it, so without this every stage's garbage adds to the build's peak.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
            _TRIM = False
    if _TRIM:
        _TRIM(0)


#: allocations at least this large get their own mapping (see map_large_allocations)
MMAP_THRESHOLD = 1 << 20
_MAPPED = False


def map_large_allocations() -> None:
    """Have glibc serve every allocation of ``MMAP_THRESHOLD`` or more with its own mapping, returned to the OS
    when freed (glibc's ``mallopt(M_MMAP_THRESHOLD)``; a no-op elsewhere).  Set once per process, at the first
    build.

    glibc starts at 128 KiB but raises its threshold to the size of each mapped block freed, up to 32 MiB; once a
    build has freed a few weight-sized buffers, onnxruntime's weights land in the heap, where what a session frees
    stays fragmented (malloc_trim returns only part of it).  Measured on a 200 MB model
    (benchmarks/bench_build_memory.py --stages): the verify stage's reference session peaked at 3.60x the model
    and the artifact's at 3.94x; with the threshold held, 2.57x and 2.59x (whole build 4.2x -> 2.6x).  The price:
    buffers freed are mapped afresh next time, ~2-4 s more system time (page faults) on that 40 s build.  1 MiB,
    not 128 KiB: small temporaries (numpy, protobuf) stay in the heap.  The setting is process-wide and stays
    for the rest of a program that calls edgekit.build.
    """
    global _MAPPED
    if _MAPPED:
        return
    _MAPPED = True
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows); musl's mallopt accepts and ignores it
        return
    m_mmap_threshold = -3  # <malloc.h>
    mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(MMAP_THRESHOLD))


class StageClock:
    """Runs stages and records how long each took (for the build report)."""

    def __init__(self) -> None:
        self.timings: List[StageTiming] = []

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings.append(StageTiming(name=name, seconds=round(time.perf_counter() - t0, 4)))
            return_freed_memory()
