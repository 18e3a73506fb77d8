"""The HTP a qnn package is compiled for, from the build options and the device profile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Tuple

from edgekit.errors import ConfigError
from edgekit.options import Option, OptionSchema

if TYPE_CHECKING:  # pragma: no cover
    from ..base import BuildSpec

#: HTP architectures onnxruntime-qnn compiles for, with a representative SoC (QNN soc_model, part number)
HTP_ARCHS: Mapping[int, Tuple[int, str]] = {
    68: (30, "SM8350"),
    69: (36, "SM8450"),
    73: (43, "SM8550"),
    75: (57, "SM8650"),
    79: (69, "SM8750"),
}

#: used when no device profile or htp_arch is given (Snapdragon 8 Gen 2 / X Elite generation)
DEFAULT_HTP_ARCH = 73

BUILD_OPTIONS = OptionSchema("qnn target", [
    Option("htp_arch", (int, str), None, "Hexagon HTP generation to compile for (e.g. 75 or \"v75\")"),
    Option("soc_model", (int, str), None, "QNN SoC model id (default: the arch's representative SoC)"),
    Option("soc", str, None, "SoC part number, for the manifest and the SNPE/QAIRT commands"),
    Option("require_npu", bool, False, "fail the build when any node would leave the HTP for the CPU"),
    Option("unroll_lstm", bool, True, "int8: unroll plain LSTMs into per-step HTP ops, each gate and state with its own "
           "16-bit range (the HTP's own LSTM op lost Silero VAD's state: 28.7 vs 39.6 dB); false keeps the one op"),
    Option("split_16_bit_convs", bool, True, "int8: a convolution kept out of int8 runs as two with 8-bit weights "
           "(high and low part) and an Add: the HTP computes 16-bit weights ~20 dB short of the CPU, A16W8 exactly"),
    # the SNPE/QAIRT sidecars are build-side files (and hold calibration samples): never in the device package
    Option("snpe_export_dir", str, None, "write the SNPE/QAIRT files (fp32 and QDQ ONNX, AIMET encodings, converter "
           "commands) to this folder; used by `edgekit export snpe PKG DIR`"),
])


@dataclass(frozen=True)
class HtpConfig:
    """The HTP a package is compiled for."""

    arch: int
    soc_model: int
    soc: str
    source: str  # where the settings came from, for the manifest

    def to_json(self) -> Dict[str, Any]:
        return {"htp_arch": self.arch, "soc_model": self.soc_model, "soc": self.soc, "from": self.source}


def _number(value: Any, name: str) -> int:
    text = str(value).strip().lower().lstrip("v")
    if not text.isdigit():
        raise ConfigError(f'"{name}" must be a number like 75 (or "v75"), but got {value!r}')
    return int(text)


def htp_config(spec: "BuildSpec") -> HtpConfig:
    """HTP arch and SoC model from the build options, else the device profile, else the default."""
    from .target import QnnTarget

    opts = QnnTarget().build_option_values(spec)
    device = spec.device
    arch_value = opts["htp_arch"]
    if arch_value is None and device is not None:
        raise ConfigError(
            f"device profile {device.name!r} has no HTP architecture: add htp_arch (e.g. 75) and soc_model "
            f"(e.g. 57) under [{device.name}.target_options] in devices.toml, or pass the build options "
            "{'htp_arch': 75, 'soc_model': 57}"
        )
    if arch_value is None:
        arch, source = DEFAULT_HTP_ARCH, f"default (no device profile: HTP v{DEFAULT_HTP_ARCH})"
    else:
        arch = _number(arch_value, "htp_arch")
        given = "htp_arch" in (getattr(spec, "build_options", None) or {}) or "htp_arch" in (spec.runtime_options or {})
        source = "build options" if given or device is None else f"device profile {device.name}"
    if arch not in HTP_ARCHS:
        raise ConfigError(f'"htp_arch" must be one of {{{", ".join(str(a) for a in HTP_ARCHS)}}}, but got {arch_value!r}')
    default_soc_model, default_soc = HTP_ARCHS[arch]
    soc_model = _number(opts["soc_model"], "soc_model") if opts["soc_model"] is not None else default_soc_model
    soc = opts["soc"] or (default_soc if soc_model == default_soc_model else "unknown")
    return HtpConfig(arch=arch, soc_model=soc_model, soc=soc, source=source)
