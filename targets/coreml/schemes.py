"""Compression schemes and deployment targets, and which target each scheme needs.

Facts (coremltools 9, ``optimize/coreml`` and the MIL opset docs):
- fp16 / fp32 compute, int8 per-channel weights (``constexpr_affine_dequantize``)
  and per-tensor palettization (``constexpr_lut_to_dense``) load on iOS 16 /
  macOS 13; iOS 18 stores the same schemes as ``constexpr_blockwise_shift_scale``
  and the new ``constexpr_lut_to_dense``.
- W8A8 needs activation ``quantize``/``dequantize`` ops: iOS 17 / macOS 14.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from edgekit.errors import ConfigError

from ..spec import Precision


class DeploymentTarget(str, enum.Enum):
    """Minimum OS the app ships for; each iOS version pairs with one macOS version."""

    IOS16 = "ios16"
    IOS17 = "ios17"
    IOS18 = "ios18"
    MACOS13 = "macos13"
    MACOS14 = "macos14"
    MACOS15 = "macos15"

    @property
    def level(self) -> int:
        """The MIL opset level (iOS 16 == macOS 13 …)."""
        return {"ios16": 16, "macos13": 16, "ios17": 17, "macos14": 17, "ios18": 18, "macos15": 18}[self.value]

    @property
    def is_mac(self) -> bool:
        return self.value.startswith("macos")

    def ct_target(self) -> Any:
        import coremltools as ct

        return {16: ct.target.iOS16, 17: ct.target.iOS17, 18: ct.target.iOS18}[self.level]

    @classmethod
    def at_level(cls, level: int, mac: bool) -> "DeploymentTarget":
        for t in cls:
            if t.level == level and t.is_mac == mac:
                return t
        raise ConfigError(f"no deployment target at level {level}")

    def pretty(self) -> str:
        return (f"macOS {self.level - 3}" if self.is_mac else f"iOS {self.level}")


class Compression(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    W8 = "w8"  #: int8 weights, linear symmetric, one scale per output channel; fp16 compute
    PALETTIZE8 = "palettize8"  #: 256-entry k-means lookup table per weight tensor
    PALETTIZE6 = "palettize6"
    PALETTIZE4 = "palettize4"
    W8A8 = "w8a8"  #: int8 weights and int8 activations (calibrated ranges)

    @property
    def min_level(self) -> int:
        return 17 if self is Compression.W8A8 else 16

    @property
    def precision(self) -> Precision:
        if self is Compression.FP32:
            return Precision.FP32
        if self is Compression.FP16:
            return Precision.FP16
        return Precision.INT8

    @property
    def palette_bits(self) -> Optional[int]:
        return {"palettize8": 8, "palettize6": 6, "palettize4": 4}.get(self.value)

    @property
    def needs_calibration(self) -> bool:
        return self is Compression.W8A8


#: what a precision builds when neither the user nor the device profile picks a scheme
DEFAULT_FOR_PRECISION = {Precision.FP32: Compression.FP32, Precision.FP16: Compression.FP16,
                         Precision.INT8: Compression.W8}


@dataclass(frozen=True)
class Plan:
    """The resolved scheme and deployment target of one build, and why the target is what it is."""

    compression: Compression
    deployment: DeploymentTarget
    note: str = ""


def resolve_plan(
    precision: Precision,
    compression: Optional[Compression],
    compression_explicit: bool,
    deployment: Optional[DeploymentTarget],
    deployment_explicit: bool,
) -> Plan:
    """Pick the scheme and the deployment target; refuse what the target cannot carry.

    An explicit ``deployment_target`` that is too old for the scheme is an
    error naming the minimum; a default one (iOS 16, or the device profile's)
    is raised automatically and the plan says so.
    """
    if compression is not None and compression.precision is not precision:
        if compression_explicit:
            raise ConfigError(
                f'"compression" {compression.value!r} builds {compression.precision.value}, but the precision is '
                f"{precision.value}; pass --precision {compression.precision.value}, or a compression from "
                f"{sorted(c.value for c in Compression if c.precision is precision)}")
        compression = None  # a profile default meant for another precision
    scheme = compression or DEFAULT_FOR_PRECISION[precision]
    target = deployment or DeploymentTarget.IOS16
    note = ""
    if target.level < scheme.min_level:
        minimum = DeploymentTarget.at_level(scheme.min_level, target.is_mac)
        if deployment_explicit:
            raise ConfigError(
                f"compression {scheme.value!r} needs deployment target {minimum.value} ({minimum.pretty()}) or newer, "
                f"but deployment_target is {target.value}; raise deployment_target to {minimum.value}, "
                "or pick a compression that loads there (w8, palettize4/6/8, fp16)")
        note = f"deployment target raised from {target.value} to {minimum.value}: {scheme.value} needs {minimum.pretty()}"
        target = minimum
    return Plan(scheme, target, note)


def pretty_pair(level: int) -> Tuple[str, str]:
    return f"iOS {level}", f"macOS {level - 3}"
