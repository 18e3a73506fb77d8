"""The Target interface: what a compiler for one device family provides.

The pipeline (:mod:`edgekit.targets.pipeline`) owns everything that is the
same for every target — canonicalize, calibrate, verify, package — so a
target is small: ``check`` (cheap, no vendor SDK) and ``build``.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from edgekit._validate import coerce_enum
from edgekit.errors import UnsupportedModelError
from edgekit.manifest import TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe
    from edgekit.targets.devices import DeviceProfile


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: "str | Precision") -> "Precision":
        return coerce_enum(value, cls, "precision")


@dataclass(frozen=True)
class BuildSpec:
    """Everything a target needs to know about the build, validated up front."""

    precision: Precision
    recipe: "Recipe"
    device: Optional["DeviceProfile"] = None
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    task: str = "raw"
    #: the user's validation data (``--val``), loaded through the shared
    #: preprocessing; labelled when it came from class folders.  None when none
    #: was given (a hold-out of the calibration data is not passed here).
    validation: Optional["CalibrationSet"] = None
    #: the verification gates (``min_sqnr_db``, ``max_accuracy_drop``), unset ones left out
    gates: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UnsupportedNode:
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


@dataclass(frozen=True)
class SupportReport:
    """Result of :meth:`Target.check`: every problem, found before any long step."""

    target: str
    unsupported: Tuple[UnsupportedNode, ...] = ()
    dynamic_dims: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.dynamic_dims

    def raise_if_unsupported(self) -> None:
        """One error listing every problem: the CLI prints it as one line."""
        if self.ok:
            return
        parts = []
        if self.unsupported:
            listed = "; ".join(str(n) for n in self.unsupported)
            parts.append(
                f"{len(self.unsupported)} node(s) the {self.target} target cannot build: {listed} "
                "(fix: replace these ops in the model, or pick another target from `edgekit targets`)"
            )
        if self.dynamic_dims:
            parts.append(
                "dynamic dimensions left unfixed: " + ", ".join(self.dynamic_dims)
                + " (fix: --size HxW, or input_shapes={...} in edgekit.build)"
            )
        raise UnsupportedModelError("; ".join(parts))

    def to_json(self) -> Dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "unsupported": [{"node": n.node, "op_type": n.op_type, "reason": n.reason} for n in self.unsupported],
            "dynamic_dims": list(self.dynamic_dims),
            "notes": list(self.notes),
        }


@dataclass
class Artifact:
    """What :meth:`Target.build` produced inside its workdir.

    ``files`` are paths relative to the workdir; the pipeline copies them under
    ``model/`` in the package.  ``inputs``/``outputs`` default to the source
    model's when None.  ``details`` lands in ``manifest.target.details`` and
    ``quantization`` in ``manifest.quantization``.  ``verify_options`` are
    runner options the pipeline uses only while verifying on the build host
    (with ``verify_note`` saying why), e.g. to emulate a device's exact integer
    arithmetic where the host's kernels differ.
    """

    files: List[str]
    entry: str
    runtime_options: Dict[str, Any] = field(default_factory=dict)
    runtime_versions: Dict[str, str] = field(default_factory=dict)
    inputs: Optional[Sequence[TensorSpec]] = None
    outputs: Optional[Sequence[TensorSpec]] = None
    details: Dict[str, Any] = field(default_factory=dict)
    quantization: Optional[Dict[str, Any]] = None
    verify_options: Dict[str, Any] = field(default_factory=dict)
    verify_note: str = ""


class Target(ABC):
    """One compiler per device family.  Subclasses set the class attributes."""

    name: ClassVar[str]
    runtime: ClassVar[str]  # the runner that runs the artifact on the device
    precisions: ClassVar[FrozenSet[Precision]]
    description: ClassVar[str] = ""
    #: runner used by the pipeline to verify the artifact on the build host
    verify_runtime: ClassVar[Optional[str]] = None

    def toolchain(self) -> Tuple[bool, str]:
        """(installed here?, versions or the pip command that installs it)."""
        return True, ""

    @abstractmethod
    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:
        """List every node and dim this target cannot handle.  Cheap; no vendor SDK."""

    @abstractmethod
    def build(
        self,
        model: "onnx.ModelProto",
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        workdir: Path,
    ) -> Artifact:
        """Compile the canonical fp32 model into files under ``workdir``."""
