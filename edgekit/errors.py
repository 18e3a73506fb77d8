"""One exception hierarchy.

Every error a user can cause (bad model, bad package, bad input, missing
runtime) is an :class:`EdgekitError`; its message names the problem and the
fix.  Anything else escaping edgekit is a bug in edgekit.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """A problem with what the user gave edgekit; the message says how to fix it."""


class ConfigError(EdgekitError, ValueError):
    """An option or configuration value is invalid."""


class ManifestError(EdgekitError):
    """manifest.json is missing, malformed, or has a wrong field."""


class PackageError(EdgekitError):
    """A package file is missing, extra, changed or unreadable."""


class SignatureError(PackageError):
    """A package's signature is missing, untrusted or does not match (under a device's signing policy)."""


class InputError(EdgekitError, ValueError):
    """An input given to preprocess / infer / predict is wrong."""


class ModelError(EdgekitError):
    """The source model cannot be read or prepared (corrupt ONNX, dynamic dims...)."""


class UnsupportedModelError(ModelError):
    """The model uses ops or features the chosen target lacks."""


class CalibrationError(EdgekitError):
    """Calibration data is missing, empty or does not match the model."""


class GateError(EdgekitError):
    """A build failed its verification gates; the message carries the figures."""


class RuntimeMissingError(EdgekitError, ImportError):
    """The runtime a package needs is not installed; the message names the extra."""


class RegistryError(EdgekitError, KeyError):
    """A runner or target name is unknown or registered twice."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
