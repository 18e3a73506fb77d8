"""``coreml``: Core ML itself (macOS / iOS through coremltools' ``MLModel``).

Core ML only runs on Apple systems; coremltools installs on Linux but cannot
predict there.  Elsewhere this runner refuses with an error that names the
``coreml-reference`` runtime, which interprets the same ``.mlpackage`` with
numpy.
"""
from __future__ import annotations

import enum
import platform
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from ...errors import RuntimeMissingError
from ...manifest import Manifest
from ...options import Option, OptionSchema
from ..base import Runner, missing_runtime
from .features import ImageFeed, io_names
from .reference import mlpackage_of


class ComputeUnits(str, enum.Enum):
    ALL = "ALL"
    CPU_AND_NE = "CPU_AND_NE"
    CPU_AND_GPU = "CPU_AND_GPU"
    CPU_ONLY = "CPU_ONLY"


class CoreMLRunner(Runner):
    """Runs the package's ``.mlpackage`` with Core ML (macOS 13+)."""

    name = "coreml"
    extra = "coreml"
    options = OptionSchema("coreml runner", [
        Option("compute_units", ComputeUnits, ComputeUnits.ALL,
               "where Core ML may run layers: ALL, CPU_AND_NE (Neural Engine), CPU_AND_GPU, CPU_ONLY"),
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        if platform.system() != "Darwin":
            raise RuntimeMissingError(
                f"the coreml runtime runs only on macOS/iOS (this is {platform.system()}); on this machine run the "
                "package with the numpy reference executor: --runtime coreml-reference "
                "(edgekit.load(..., runtime=\"coreml-reference\"))")
        try:
            import coremltools as ct
        except ImportError as exc:
            raise missing_runtime("coremltools", self.extra, exc) from None
        self._ct = ct
        units = ComputeUnits(self.options["compute_units"])
        package = mlpackage_of(self.root, manifest.entry)
        self.model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, units.value))
        spec = self.model.get_spec()
        self._in_names, self._out_names = io_names(manifest, [i.name for i in spec.description.input],
                                                   [o.name for o in spec.description.output])
        self._image = ImageFeed.of(manifest)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        image = self._image  # an image input takes a PIL image (Core ML applies the scale and bias itself)
        values = self.model.predict({self._in_names[k]: image.pil_image(v) if image and k == image.input else v
                                     for k, v in feeds.items()})
        out: Dict[str, np.ndarray] = {}
        for spec in self.manifest.outputs:
            y = np.asarray(values[self._out_names[spec.name]])
            out[spec.name] = y.astype(spec.dtype, copy=False).reshape(spec.shape)
        return out

    def describe(self) -> Dict[str, Any]:
        return {"runner": self.name, "coremltools": self._ct.__version__,
                "compute_units": ComputeUnits(self.options["compute_units"]).value}

    def close(self) -> None:
        self.model = None
