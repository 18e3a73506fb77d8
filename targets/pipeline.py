"""The build pipeline: canonicalize → check → calibrate → target.build → verify → package.

Everything that is the same for every target lives here, so a target only
implements ``check`` and ``build``.  Nothing is written to ``output`` unless
every step, the verification gates included, succeeded.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import edgekit
from edgekit import postprocess as _post
from edgekit import preprocess as _pre
from edgekit.errors import ConfigError, EdgekitError
from edgekit.manifest import SCHEMA
from edgekit.package import LABELS, check_output, write_package
from edgekit.quantize.calibration import CalibrationSet, load_feeds
from edgekit.quantize.parity import ParityReport, check_gates, compare_outputs
from edgekit.quantize.recipe import Recipe

from . import TARGETS
from .base import BuildSpec, Precision, Target
from .canonicalize import CanonicalModel, canonicalize, load_onnx, onnx_sha256
from .devices import DeviceProfile, get_profile

#: progress(stage, done, total): called as long steps advance (total 0 = unknown)
ProgressFn = Callable[[str, int, int], None]

#: verification samples used when the user gives no validation data
HOLDOUT_MAX = 100
RECIPE_FILE = "recipe.json"
RANDOM_VERIFY_SAMPLES = 8


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_package` returns: the package path and its manifest."""

    path: Path
    manifest: Dict[str, Any]
    parity: ParityReport


def get_target(name: str) -> Target:
    return TARGETS.get(name)()


def resolve_target(target: Optional[str], device: Optional[str]) -> Tuple[Target, Optional[DeviceProfile]]:
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


def _steps(preprocess: Any) -> Tuple[Any, ...]:
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


def _labels(labels: Any) -> Optional[List[str]]:
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
        return [x.strip() for x in text.splitlines() if x.strip()]
    return [str(x) for x in labels]


def _resize_size(steps: Sequence[Any]) -> Optional[Tuple[int, int]]:
    for s in steps:
        if isinstance(s, _pre.Resize):
            return (s.height, s.width)
    return None


def _postprocess_config(task: Optional[str], postprocess: Any) -> Any:
    if postprocess is not None:
        if isinstance(postprocess, dict):
            return _post.config_from_json(postprocess, where="postprocess")
        return postprocess
    return _post.config_from_json({"task": task or "raw"}, where="task")


def _random_feeds(canon: CanonicalModel, n: int) -> List[Dict[str, np.ndarray]]:
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


def _run_reference(model_bytes: bytes, feeds: Sequence[Mapping[str, np.ndarray]], progress: ProgressFn) -> Tuple[List[Dict[str, np.ndarray]], float]:
    """The fp32 canonical model through onnxruntime: the yardstick for every target."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    sess = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out, times = [], []
    for i, feed in enumerate(feeds):
        t0 = time.perf_counter()
        values = sess.run(names, dict(feed))
        times.append(time.perf_counter() - t0)
        out.append(dict(zip(names, values)))
        progress("verify fp32", i + 1, len(feeds))
    return out, float(np.median(times)) if times else 0.0


def _adapt_feed(feed: Mapping[str, np.ndarray], runner: Any) -> Dict[str, np.ndarray]:
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


def _dequantize_outputs(outputs: Mapping[str, np.ndarray], runner: Any) -> Dict[str, np.ndarray]:
    res = {}
    for spec in runner.outputs:
        y = outputs[spec.name]
        if spec.quantization is not None and np.dtype(spec.dtype).kind in "iu":
            y = (y.astype(np.float32) - spec.quantization.zero_point) * spec.quantization.scale
        res[spec.name] = y.astype(np.float32, copy=False)
    return res


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_package(
    model: Union[str, "os.PathLike[str]", bytes, Any],
    *,
    target: Optional[str] = None,
    device: Optional[str] = None,
    precision: Optional[str] = None,
    calibration: Any = None,
    validation: Any = None,
    preprocess: Any = None,
    task: Optional[str] = None,
    postprocess: Any = None,
    labels: Any = None,
    gates: Optional[Mapping[str, Optional[float]]] = None,
    output: Union[str, "os.PathLike[str]", None] = None,
    recipe: Union[Recipe, Mapping[str, Any], str, "os.PathLike[str]", None] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    size: Optional[Tuple[int, int]] = None,
    runtime_options: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    allow_gate_failure: bool = False,
    progress: Optional[ProgressFn] = None,
) -> BuildResult:
    """Build one package; see :func:`build` for the parameters."""
    progress = progress or _no_progress
    if output is not None:
        check_output(output)  # refuse to clobber a non-package (or an unwritable path) before any work
    tgt, profile = resolve_target(target, device)
    prec = Precision.parse(precision or (profile.precision if profile else "fp32"))
    if prec not in tgt.precisions:
        raise ConfigError(
            f"the {tgt.name} target builds {sorted(p.value for p in tgt.precisions)}, not {prec.value!r}; pick another --precision"
        )
    gates = dict(gates or {})
    unknown_gates = set(gates) - {"min_sqnr_db", "max_accuracy_drop"}
    if unknown_gates:
        raise ConfigError(f"unknown gate(s) {sorted(unknown_gates)}; known gates: min_sqnr_db, max_accuracy_drop")
    if isinstance(recipe, Recipe):
        rec = recipe
    elif recipe is None:
        rec = Recipe()
    elif isinstance(recipe, Mapping):
        rec = Recipe.from_json(dict(recipe), where="recipe")
    else:
        rec = Recipe.load(recipe)

    # 1. read and canonicalize the source
    progress("load", 0, 0)
    source_name = name
    if isinstance(model, (str, os.PathLike)):
        source_name = source_name or Path(model).stem
    proto = load_onnx(model)
    sha = onnx_sha256(model)  # the file's bytes for a path; a ModelProto hashes its serialization
    steps = _steps(preprocess)
    if size is None:
        size = _resize_size(steps)
    canon = canonicalize(proto, input_shapes=input_shapes, size=size)
    class_names = _labels(labels)
    post_cfg = _postprocess_config(task, postprocess)
    task_name = _post.config_to_json(post_cfg)["task"]

    # 2. cheap support check before any long step
    opts: Dict[str, Any] = {}
    if profile is not None:
        opts.update(profile.runtime_options)
    opts.update(runtime_options or {})
    spec = BuildSpec(precision=prec, recipe=rec, device=profile, runtime_options=opts, task=task_name,
                     gates={k: v for k, v in gates.items() if v is not None})
    report = tgt.check(canon.model, spec)
    report.raise_if_unsupported()

    # 3. calibration and validation data, through the shared preprocessing
    pre = _pre.Preprocessor(steps)
    calib: Optional[CalibrationSet] = None
    verify_set: Optional[CalibrationSet] = None
    verify_source = ""
    if calibration is not None:
        calib = load_feeds(calibration, canon.inputs, pre, limit=rec.num_samples + HOLDOUT_MAX, class_names=class_names,
                           progress=lambda d, t: progress("calibration data", d, t))
    if validation is not None:
        verify_set = load_feeds(validation, canon.inputs, pre, class_names=class_names,
                                progress=lambda d, t: progress("validation data", d, t))
        verify_source = verify_set.source
        spec = dataclasses.replace(spec, validation=verify_set)  # e.g. for accuracy-controlled int8
    elif calib is not None and len(calib.feeds) >= 2:
        n_hold = max(1, min(HOLDOUT_MAX, len(calib.feeds) // 5))
        calib, verify_set = calib.split(n_hold)
        verify_source = f"{len(verify_set.feeds)} samples held out from the calibration data"
    if verify_set is None and calib is not None:
        verify_set = calib
        verify_source = "the calibration data (too few samples to hold any out)"

    with tempfile.TemporaryDirectory(prefix="edgekit-build-") as tmp:
        work = Path(tmp)
        art_dir = work / "artifact"
        art_dir.mkdir()
        progress("build", 0, 0)
        artifact = tgt.build(canon.model, spec, calib, art_dir)

        # 4. stage the package
        stage = work / "package"
        (stage / "model").mkdir(parents=True)
        for rel in artifact.files:
            src = art_dir / rel
            if not src.is_file():
                raise EdgekitError(f"internal error: target {tgt.name} listed {rel!r} but did not write it")
            dst = stage / "model" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        if class_names:
            (stage / LABELS).write_text("\n".join(class_names) + "\n", encoding="utf-8")
        if artifact.quantization and artifact.quantization.get("recipe"):
            # the recipe as a file next to the artifact: `edgekit build --recipe recipe.json` reproduces it
            (stage / RECIPE_FILE).write_text(json.dumps(artifact.quantization["recipe"], indent=2) + "\n", encoding="utf-8")
        inputs = list(artifact.inputs) if artifact.inputs is not None else list(canon.inputs)
        outputs = list(artifact.outputs) if artifact.outputs is not None else list(canon.outputs)
        runtime_versions = dict(artifact.runtime_versions)
        manifest: Dict[str, Any] = {
            "schema": SCHEMA,
            "name": source_name or "model",
            "created": _now(),
            "edgekit_version": edgekit.__version__,
            "source": {
                "format": "onnx",
                "sha256": sha,
                "opset": canon.opset,
                "producer": proto.producer_name or None,
                "canonicalization": list(canon.notes),
            },
            "target": {
                "name": tgt.name,
                "device": profile.name if profile else None,
                "runtime": tgt.runtime,
                "runtime_versions": runtime_versions,
                "runtime_options": {**opts, **artifact.runtime_options},
                "details": artifact.details,
            },
            "precision": prec.value,
            "quantization": artifact.quantization,
            "inputs": [t.to_json() for t in inputs],
            "outputs": [t.to_json() for t in outputs],
            "preprocess": _pre.steps_to_json(steps),
            "postprocess": _post.config_to_json(post_cfg),
            "labels": LABELS if class_names else None,
            "recipe": RECIPE_FILE if (stage / RECIPE_FILE).exists() else None,
            "artifact": {"entry": f"model/{artifact.entry}", "files": [f"model/{f}" for f in artifact.files]},
            "support": report.to_json(),
            "verification": None,
            "build_host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        }
        staged = work / "staged"
        write_package(stage, manifest, staged)

        # 5. verify: the artifact (through its runner) against the fp32 source (onnxruntime)
        if verify_set is None:
            feeds = _random_feeds(canon, RANDOM_VERIFY_SAMPLES)
            verify_labels = None
            verify_source = f"{len(feeds)} random-normal tensors (no --calib or --val given: parity only, no accuracy)"
        else:
            feeds = verify_set.feeds
            verify_labels = verify_set.labels
        reference, ref_latency = _run_reference(canon.model.SerializeToString(), feeds, progress)
        runtime = tgt.verify_runtime or tgt.runtime
        from edgekit.model import load as _load

        candidate, times = [], []
        with _load(staged, runtime=runtime, **artifact.verify_options) as m:
            runtime_versions.update({k: v for k, v in m.runner.describe().items()
                                     if k not in ("runner", "providers") and isinstance(v, str)})
            for i, feed in enumerate(feeds):
                out = m.infer(_adapt_feed(feed, m.runner))
                times.append(m.runner.last_latency_s)
                candidate.append(_dequantize_outputs(out, m.runner))
                progress("verify", i + 1, len(feeds))
        parity = compare_outputs(reference, candidate, task=task_name, labels=verify_labels)
        verification = {
            "samples": len(feeds),
            "data": verify_source,
            "reference": "fp32 source model on onnxruntime (CPUExecutionProvider)",
            "runtime": runtime,
            "runtime_options": dict(artifact.verify_options),
            "note": artifact.verify_note or None,
            **parity.to_json(),
            "latency_ms": {
                "artifact_median": round(float(np.median(times)) * 1e3, 4) if times else None,
                "fp32_reference_median": round(ref_latency * 1e3, 4),
                "note": "single-sample medians on the build host during verification; use `edgekit bench` on the device",
            },
            "gates": {k: v for k, v in gates.items() if v is not None},
        }
        gate_error = None
        try:
            check_gates(parity, min_sqnr_db=gates.get("min_sqnr_db"), max_accuracy_drop=gates.get("max_accuracy_drop"))
            verification["passed"] = True
        except EdgekitError as exc:
            if not allow_gate_failure:
                raise
            verification["passed"] = False
            gate_error = str(exc)
            warnings.warn(f"build kept despite failed gates: {exc}")
        if gate_error:
            verification["gate_failure"] = gate_error
        manifest["verification"] = verification
        manifest["target"]["runtime_versions"] = runtime_versions

        # 6. the package, atomically
        if output is None:
            output = Path(f"{manifest['name']}-{tgt.name}-{prec.value}.edgepkg")
        progress("package", 0, 0)
        path = write_package(stage, manifest, output)
    return BuildResult(path=Path(path), manifest=manifest, parity=parity)


def build(model: Any, **kwargs: Any) -> Path:
    """Build a package for one target and return its path.

    ``edgekit.build("model.onnx", target="onnxruntime" | device="raspberry-pi-5",
    precision="fp32" | "fp16" | "int8", calibration="images/" | "feeds.npz" |
    iterable_of_feeds, validation=..., preprocess=[...], task="classify",
    labels=[...], gates={"min_sqnr_db": 30, "max_accuracy_drop": 0.5},
    output="model.edgepkg")``.  Other keywords: ``recipe``, ``input_shapes``,
    ``size``, ``runtime_options``, ``name``, ``allow_gate_failure``, ``progress``.
    """
    return build_package(model, **kwargs).path
