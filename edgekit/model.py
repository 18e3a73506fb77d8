"""``edgekit.load`` and :class:`Model`: the device-side API."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import EdgekitError, InputError, RegistryError, RuntimeMissingError
from .package import OpenedPackage, open_package
from .signing import TrustPolicy
from .postprocess import postprocess
from .preprocess import Preprocessed, Preprocessor
from .runners import RUNNERS, Runner


#: load()'s own arguments, offered as the closest match for a misspelt option
_LOAD_ARGUMENTS = ("runtime",)


class Model:
    """A loaded package: preprocess → infer → postprocess with one contract."""

    def __init__(self, package: OpenedPackage, runner: Runner) -> None:
        self._package = package
        self.manifest = package.manifest
        self.runner = runner
        self.labels = package.manifest.labels
        self._pre = Preprocessor(package.manifest.preprocess)
        self._quantized_outputs = tuple(t for t in package.manifest.outputs
                                        if t.quantization is not None and np.dtype(t.dtype).kind in "iu")
        self._closed = False

    @property
    def path(self) -> Path:
        return self._package.path

    def preprocess(self, source: Any) -> np.ndarray:
        """The input tensor for ``source`` exactly as calibration and verification saw it."""
        return self._pre(source).tensor

    def _feeds(self, source: Any) -> "tuple[Dict[str, np.ndarray], Any]":
        if isinstance(source, Mapping):
            return {k: np.asarray(v) for k, v in source.items()}, None
        inputs = self.manifest.inputs
        if len(inputs) != 1:
            names = ", ".join(t.name for t in inputs)
            raise InputError(
                f"this model has {len(inputs)} inputs ({names}); pass a dict of name → tensor to predict/infer"
            )
        pre: Preprocessed = self._pre(source)
        return {inputs[0].name: pre.tensor}, pre.transform

    def _check_open(self) -> None:
        if self._closed:
            raise EdgekitError(f"the model {self.manifest.name!r} was closed; load the package again to run it")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the artifact on named tensors (checked against the manifest)."""
        self._check_open()
        return self.runner.infer(feeds)

    def predict(self, source: Any) -> Any:
        """Preprocess ``source`` (path, bytes, PIL image, HWC uint8 array, tensor), run, postprocess."""
        self._check_open()
        feeds, transform = self._feeds(source)
        outputs = self.runner.infer(feeds)
        for spec in self._quantized_outputs:  # integer outputs (int8 IO): postprocessing works on real values
            q = spec.quantization
            outputs[spec.name] = (outputs[spec.name].astype(np.float32) - q.zero_point) * np.float32(q.scale)
        return postprocess(self.manifest.postprocess, outputs, transform=transform, labels=self.labels)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        self._package.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"<edgekit.Model {m.name!r} target={m.target} precision={m.precision} runner={self.runner.name}>"


def load(path: Union[str, "os.PathLike[str]"], runtime: Optional[str] = None, *,
         trusted_keys: Optional[Sequence[Any]] = None, require_signature: Optional[bool] = None,
         **runtime_options: Any) -> Model:
    """Open, verify and load a package.  ``runtime`` defaults to the manifest's.

    ``runtime_options`` are the runner's options (``threads``, ``device`` …;
    see ``edgekit targets --json``), checked against its schema: a misspelt
    name is an error naming the closest option.
    """
    # signing policy: trusted_keys (KEY.pub paths or PEM bytes) plus EDGEKIT_TRUSTED_KEYS; a signature is
    # required when keys are trusted, unless require_signature=False (or EDGEKIT_REQUIRE_SIGNATURE=0)
    package = open_package(path, trust=TrustPolicy.resolve(trusted_keys, require_signature))
    try:
        name = runtime or package.manifest.runtime
        try:
            runner_cls = RUNNERS.get(name)
        except RegistryError as exc:
            raise RuntimeMissingError(f"{exc}; install the runtime's extra, e.g. pip install 'edgekit[{name}]'") from None
        # checked here too so a misspelt load() argument ("runtme") is suggested as one
        runner_cls.options.parse(runtime_options, source="edgekit.load()", also_known=_LOAD_ARGUMENTS)
        runner = runner_cls(package.root, package.manifest, **runtime_options)
    except BaseException:
        package.close()
        raise
    return Model(package, runner)
