"""The optional accuracy pass of a farm job: parity of the package on the device with fp32 on the host.

``edgekit farm run PKG --reference model.onnx --data feeds.npz``: before any job starts, the host loads
the samples (``feeds.npz``: one array per input name, samples stacked on axis 0, never pickled; or a
``.npy`` for a one-input model), runs the fp32 source model through onnxruntime on them (the
yardstick the build's verification uses), and writes per package the samples in the dtypes that
package takes (quantized integer inputs included) as one content-addressed ``.npz`` pushed with the
job.  The runner sends every sample through the package after the timed run and writes the raw
outputs to ``outputs.npz``; the host pulls it, dequantizes integer outputs and computes per output
SQNR (dB), cosine and max-abs error with the same code as the build (``quantize.parity``), plus the
task's agreement figures (top-1 for classifiers).  The runner stays dumb and numpy-only; every
comparison happens on the host.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import ConfigError
from edgekit.package import sha256_file

from .transport import DeviceFault


@dataclass(frozen=True)
class AccuracyPlan:
    """What one package's jobs push (``data``) and what the host compares their outputs with."""

    data: Path                                   # the samples in the package's input dtypes (.npz)
    data_sha256: str
    reference: Path                              # the fp32 source model
    reference_sha256: str
    source: str                                  # where the samples came from (the user's file)
    expected: Tuple[Dict[str, np.ndarray], ...]  # fp32 outputs per sample, package output names only
    manifest: Any                                # edgekit Manifest: output specs, task, labels

    @property
    def samples(self) -> int:
        return len(self.expected)

    def to_json(self) -> Dict[str, Any]:
        return {"reference": str(self.reference), "reference_sha256": self.reference_sha256,
                "data": self.source, "data_sha256": self.data_sha256, "samples": self.samples}


def _reference_specs(reference: Path, like: Sequence[Any]) -> Tuple[List[Any], List[str]]:
    """The package's input specs with the reference model's own dtypes (fp32 where the package
    takes quantized integers): the samples are read as the reference takes them."""
    import onnx
    from onnx import helper

    try:
        graph = onnx.load(str(reference), load_external_data=False).graph
    except Exception as exc:
        raise ConfigError(f"--reference {reference}: not a readable ONNX model ({' '.join(str(exc).split())[:200]}); "
                          "give the .onnx the packages were built from") from None
    inits = {t.name for t in graph.initializer}
    dtypes = {i.name: np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)).name
              for i in graph.input if i.name not in inits}
    outputs = [o.name for o in graph.output]
    names = [s.name for s in like]
    if sorted(dtypes) != sorted(names):
        raise ConfigError(f"--reference {reference}: its inputs are {sorted(dtypes)} but the package's are {sorted(names)}; "
                          "give the source model the package was built from")
    return [dataclasses.replace(s, dtype=dtypes[s.name], quantization=None) for s in like], outputs


def plan(reference: Path, data: Path, packages: Sequence[Path], workdir: Path) -> Dict[str, AccuracyPlan]:
    """One plan per package (keyed by the package's sha256); the fp32 reference is run once per input layout."""
    from edgekit.package import open_package
    from edgekit.quantize.calibration import load_feeds
    from edgekit.targets.stages import adapt_feed, run_reference

    reference, data = Path(reference), Path(data)
    if not reference.is_file():
        raise ConfigError(f"--reference {reference}: no such file; give the fp32 .onnx the packages were built from")
    if data.suffix.lower() not in (".npz", ".npy"):
        raise ConfigError(f"--data {data}: give input tensors as a .npz (one array per input name, samples stacked "
                          "on axis 0) or a .npy for a one-input model")
    ref_sha = sha256_file(reference)
    model_bytes = reference.read_bytes()
    cache: Dict[Tuple[Any, ...], Tuple[List[Dict[str, np.ndarray]], List[Dict[str, np.ndarray]]]] = {}
    plans: Dict[str, AccuracyPlan] = {}
    for pkg in packages:
        opened = open_package(pkg)
        try:
            manifest = opened.manifest
        finally:
            opened.close()
        specs, ref_outputs = _reference_specs(reference, manifest.inputs)
        missing = [o.name for o in manifest.outputs if o.name not in ref_outputs]
        if missing:
            raise ConfigError(f"--reference {reference}: has no output(s) {missing} of package {Path(pkg).name} "
                              f"(it has {ref_outputs}); give the source model the package was built from")
        key = tuple((s.name, tuple(s.shape), s.dtype) for s in specs)
        if key not in cache:
            feeds = load_feeds(data, specs).feeds
            expected, _, _ = run_reference(model_bytes, feeds, lambda *a: None)
            cache[key] = (list(feeds), expected)
        feeds, expected = cache[key]
        adapted = [adapt_feed(f, manifest) for f in feeds]
        buf = io.BytesIO()
        np.savez(buf, **{s.name: np.stack([a[s.name] for a in adapted]) for s in manifest.inputs})
        raw = buf.getvalue()
        sha = hashlib.sha256(raw).hexdigest()
        path = workdir / f"data-{sha[:16]}.npz"
        path.write_bytes(raw)
        plans[sha256_file(Path(pkg))] = AccuracyPlan(
            data=path, data_sha256=sha, reference=reference, reference_sha256=ref_sha, source=str(data),
            expected=tuple({o.name: e[o.name] for o in manifest.outputs} for e in expected), manifest=manifest)
    return plans


def parity(plan: AccuracyPlan, raw: bytes, expected_sha256: Optional[str]) -> Dict[str, Any]:
    """Compare the runner's ``outputs.npz`` with fp32.  A file that does not match the sha256 the
    runner recorded, or that does not hold every output of every sample, is the device's fault."""
    from edgekit.quantize.parity import compare_outputs
    from edgekit.targets.stages import dequantize_outputs

    if expected_sha256 and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise DeviceFault(f"outputs.npz is truncated or corrupt ({len(raw)} bytes, sha256 differs from result.json)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DeviceFault(f"outputs.npz is unreadable: {' '.join(str(exc).split())[:200]}") from None
    names = [o.name for o in plan.manifest.outputs]
    short = [n for n in names if n not in arrays or len(arrays[n]) != plan.samples]
    if short:
        raise DeviceFault(f"outputs.npz lacks outputs {short} for {plan.samples} samples")
    candidate = [dequantize_outputs({n: arrays[n][i] for n in names}, plan.manifest) for i in range(plan.samples)]
    report = compare_outputs(list(plan.expected), candidate, task=plan.manifest.postprocess.task.value,
                             postprocess=plan.manifest.postprocess, class_names=plan.manifest.labels)
    return {**report.to_json(), **plan.to_json(),
            "reference_runtime": "fp32 source model on onnxruntime (CPUExecutionProvider) on the farm host"}


def parity_rows(doc: Mapping[str, Any]) -> List[Tuple[str, str, Optional[float], Optional[float], Optional[float]]]:
    """(part, output, sqnr_db, cosine, max_abs) for the store's ``parity`` table."""
    return [(p["name"], p["output"], p.get("sqnr_db"), p.get("cosine"), p.get("max_abs"))
            for p in (doc.get("parts") or [])]
