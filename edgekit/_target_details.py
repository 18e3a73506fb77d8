"""The typed ``manifest.target.details`` of the built-in targets that carry more than ``precision``.

Defined apart from :mod:`edgekit.manifest` so that a device pays for these
classes only when it reads a package of that target (a qnn device never
needs the Core ML ones); :func:`edgekit.manifest.details_type` imports this
module on demand, and ``edgekit.manifest.QnnDetails`` etc. still resolve.
"""
# no `from __future__ import annotations` here: field types are read by the loader (see edgekit.manifest)

from dataclasses import field
from typing import Any, List, Mapping, Optional, Tuple

from ._jsontypes import meta
from ._record import record
from .manifest import TargetDetails, _JsonView


@record
class PlacedNode(_JsonView):
    """A node the QNN EP left on the CPU."""

    node: str
    op_type: str
    extra: Mapping[str, Any] = field(default_factory=dict, metadata=meta(extra=True))


@record
class QnnPlacement(_JsonView):
    """Which nodes the QNN EP placed on the HTP."""

    total_nodes: int
    htp_nodes: int
    cpu_nodes: Tuple[PlacedNode, ...] = ()
    all_on_npu: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, metadata=meta(extra=True))


@record
class QnnDetails(TargetDetails):
    """qnn target: the context binary the runner loads and the HTP it was compiled for."""

    context_binary: Optional[str] = None
    context_binaries: Tuple[str, ...] = ()
    htp_arch: Optional[int] = None
    soc_model: Optional[int] = None
    soc: Optional[str] = None
    placement: Optional[QnnPlacement] = None


@record
class TensorrtDetails(TargetDetails):
    """tensorrt target: the build profile the device builds its engine with.

    The profile's own fields are checked by ``edgekit.runners.tensorrt.profile.BuildProfile``
    when a runner reads it (it belongs to the runner's format).
    """

    build_profile: Optional[Mapping[str, Any]] = None
    trt_version: Optional[str] = None


@record
class CoremlIoNames(_JsonView):
    """Manifest tensor name → Core ML feature name (MIL names are C identifiers)."""

    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)


@record
class CoremlImageInput(_JsonView):
    """An input the .mlpackage takes as a Core ML image (a CVPixelBuffer / CGImage on the device).

    Core ML computes ``pixel * scale + bias[c]`` from the 8-bit pixels in
    ``color_layout`` order, at ``height`` x ``width``; that is the manifest
    input ``input`` (the preprocessed NCHW float tensor).  Runners fed the
    manifest tensor recover the pixels as ``(tensor - bias[c]) / scale``.
    """

    input: str
    feature: str
    color_layout: str = field(metadata=meta(choices=("RGB", "BGR", "GRAYSCALE")))
    scale: float
    bias: Tuple[float, ...]
    height: int = field(metadata=meta(minimum=1))
    width: int = field(metadata=meta(minimum=1))


@record
class CoremlShape(_JsonView):
    """One enumerated input shape; ``sqnr_db`` is its check vs onnxruntime (the default is the verified one)."""

    shape: Tuple[int, ...] = field(metadata=meta(minimum=1))
    default: bool = False
    sqnr_db: Optional[float] = None


@record
class AneRisk(_JsonView):
    """A layer of the ML Program that may leave the Neural Engine, and why."""

    layer: str
    op: str
    reason: str
    onnx_node: Optional[str] = None


@record
class NeuralEngineReport(_JsonView):
    """Layers of the ML Program checked against the Neural Engine rules, and those at risk."""

    checked_ops: int
    at_risk: Tuple[AneRisk, ...] = ()
    rules: Optional[str] = None


@record
class CoremlDetails(TargetDetails):
    """coreml target: the ML Program's scheme, its IO (tensor or image input) and the Neural Engine report."""

    compression: Optional[str] = None
    deployment_target: Optional[str] = None
    ml_program_opset: Optional[str] = None
    compute_precision: Optional[str] = None
    io_names: Optional[CoremlIoNames] = None
    input_type: str = field(default="tensor", metadata=meta(choices=("tensor", "image")))
    image_input: Optional[CoremlImageInput] = None
    #: the input shapes Core ML accepts (enumerated shapes); empty when the input is static
    enumerated_shapes: Tuple[CoremlShape, ...] = ()
    neural_engine: Optional[NeuralEngineReport] = None

    def inspect_lines(self) -> List[str]:
        lines = [f"coreml     {self.compression}, deployment target {self.deployment_target} "
                 f"(ML Program {self.ml_program_opset}), computes in {self.compute_precision}"]
        img = self.image_input
        if img is not None:
            bias = ", ".join(f"{b:.6g}" for b in img.bias)
            lines.append(f"input      {img.input}: Core ML image {img.feature!r} ({img.color_layout} {img.height}x{img.width} "
                         f"pixel buffer); Core ML computes pixel * {img.scale:.6g} + [{bias}]")
        else:
            lines.append("input      tensor (MLMultiArray)")
        if self.enumerated_shapes:
            lines.append("shapes     " + ", ".join(
                f"{list(s.shape)}" + (" (default)" if s.default else f" {s.sqnr_db:.1f} dB" if s.sqnr_db is not None else "")
                for s in self.enumerated_shapes))
        ane = self.neural_engine
        if ane is not None:
            lines.append(f"neural engine  {len(ane.at_risk)} of {ane.checked_ops} layers at risk of running off the ANE")
            for r in ane.at_risk:
                onnx = f", ONNX node {r.onnx_node}" if r.onnx_node else ""
                lines.append(f"    {r.layer} ({r.op}{onnx}): {r.reason}")
        return lines
