"""What a build is asked to do: the precision and the build spec a target receives.

Kept apart from :mod:`edgekit.targets.base` (the Target interface) so the
pipeline stages and the targets share one small, dependency-free module;
``base`` re-exports both names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from edgekit._validate import coerce_enum

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe
    from edgekit.targets.devices import DeviceProfile


class Precision(str, enum.Enum):
    """A package's precision: what runs on the device and what verification ran.

    ``bf16`` is its own precision (chosen on purpose where a runtime offers
    it), never what an fp32 package silently runs in.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
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
    #: runner options the package will carry (checked against the runner's schema before the build)
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    task: str = "raw"
    #: the user's validation data (``--val``), loaded through the shared
    #: preprocessing; labelled when it came from class folders.  None when none
    #: was given (a hold-out of the calibration data is not passed here).
    validation: Optional["CalibrationSet"] = None
    #: the verification gates (``min_sqnr_db``, ``max_accuracy_drop``), unset ones left out
    gates: Mapping[str, float] = field(default_factory=dict)
    #: target build options (``Target.build_options``): steer the build, never reach a manifest
    build_options: Mapping[str, Any] = field(default_factory=dict)
    #: the preprocessing steps the package carries (edgekit.preprocess steps, fitted to the input): a
    #: target may fold them into its artifact (coreml: a plain scale/bias becomes a Core ML image input)
    preprocess: tuple = ()
