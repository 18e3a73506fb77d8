"""The build pipeline: load → canonicalize → check → calibrate → target build → verify → gate → package.

Everything that is the same for every target lives in the stages
(:mod:`edgekit.targets.stages`), so a target only implements ``check`` and
``build``.  :func:`build_package` composes them, times each into the
manifest's build report and collects the build's warnings.  Nothing is
written to ``output`` unless every stage, the gates included, succeeded.
"""
from __future__ import annotations

import dataclasses
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from edgekit import _warnings
from edgekit.manifest import BuildReport, Manifest, StageTiming
from edgekit.quantize.parity import ParityReport

from . import exporter_meta, int8_stage, stages
from .stages import (  # noqa: F401 - re-exported for callers of the old module layout
    DEFAULT_MIN_SQNR_DB,
    HOLDOUT_MAX,
    MIN_VERIFY_SAMPLES,
    RANDOM_VERIFY_SAMPLES,
    RECIPE_FILE,
    ProgressFn,
    get_target,
    resolve_target,
)


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_package` returns.

    ``package``: the typed manifest written into the package; ``manifest``:
    the same as a JSON document.  ``warnings``: one readable line each (also
    in ``manifest.build.warnings``); ``chatter``: third-party warnings, for
    ``--debug``.
    """

    path: Path
    package: Manifest
    parity: ParityReport
    warnings: Tuple[str, ...] = ()
    chatter: Tuple[str, ...] = ()
    #: every stage's time, "package" included (the manifest's report ends at "gate":
    #: it is written by the package stage)
    timings: Tuple[StageTiming, ...] = ()
    #: int8 with ``explain``: the sensitivity table and the layer-wise divergence, as text
    explanation: Tuple[str, ...] = ()

    @property
    def manifest(self) -> Dict[str, Any]:
        return self.package.to_json()


def build_package(model: Any, **options: Any) -> BuildResult:
    """Build one package; see :func:`build` for the options.  Warnings are collected, not shown."""
    clock = stages.StageClock()
    with _warnings.collect() as caught:
        req = stages.resolve_request(model, **options)
        src = clock.run("load", stages.load, req)
        req = exporter_meta.apply_defaults(req, src.proto)  # labels / input size from the exporter's metadata
        canon = clock.run("canonicalize", stages.canonicalize_stage, req, src)
        src = stages.drop_source_weights(req, src)
        stages.return_freed_memory()
        checked = clock.run("check", stages.check, req, canon)
        data = clock.run("calibrate", stages.calibrate, req, canon, checked)
        with tempfile.TemporaryDirectory(prefix="edgekit-build-") as tmp:
            built = clock.run("target build", stages.target_build, req, canon, data, Path(tmp))
            verified = clock.run("verify", stages.verify, req, src, canon, checked, data, built, Path(tmp))
            explanation: Tuple[str, ...] = ()
            if int8_stage.applies(req):  # int8 only: mixed precision when the floor is missed, then speed
                int8 = clock.run("mixed precision", int8_stage.mixed_precision, req, src, canon, checked, data, built,
                                 verified, Path(tmp), req.mixed_precision, req.explain)
                built, verified = int8.built, int8.verified
            verification = clock.run("gate", stages.gate, req, verified)
            if int8_stage.applies(req):
                built, explanation = clock.run("int8 speed", int8_stage.finish, req, src, canon, checked, data, built,
                                               int8, Path(tmp))
            manifest = stages.assemble_manifest(req, src, canon, checked, built,
                                                runtime_versions=verified.runtime_versions, verification=verification)
            report = BuildReport(stages=tuple(clock.timings), warnings=tuple(caught.warnings), host=stages.host_info())
            manifest = dataclasses.replace(manifest, build=report)
            path, manifest = clock.run("package", stages.package, req, manifest, built)
    return BuildResult(path=path, package=manifest, parity=verified.parity, warnings=tuple(caught.warnings),
                       chatter=tuple(caught.chatter), timings=tuple(clock.timings), explanation=explanation)


def build(model: Any, **kwargs: Any) -> Path:
    """Build a package for one target and return its path.

    ``edgekit.build("model.onnx", target="onnxruntime" | device="raspberry-pi-5",
    precision="fp32" | "fp16" | "bf16" | "int8", calibration="images/" | "feeds.npz" |
    iterable_of_feeds, validation=..., preprocess=[...], task="classify",
    labels=[...], gates={"min_sqnr_db": 30, "max_accuracy_drop": 0.5},
    output="model.edgepkg")``.  Other keywords: ``recipe``, ``input_shapes``,
    ``size``, ``runtime_options``, ``build_options``, ``name``,
    ``allow_gate_failure``, ``progress``.  Without ``gates["min_sqnr_db"]`` a
    default floor per precision applies (:data:`DEFAULT_MIN_SQNR_DB`).  The
    build's warnings are raised again here as :class:`edgekit._warnings.BuildWarning`.
    """
    result = build_package(model, **kwargs)
    for line in result.warnings:
        warnings.warn(line, _warnings.BuildWarning, stacklevel=2)
    return result.path
