"""``coreml-reference``: a numpy interpreter of a saved ML Program.

Core ML runs only on Apple devices and coremltools cannot predict on Linux,
so this is how a Linux build host (and CI) runs a Core ML package: it reads
the ``.mlpackage`` itself (spec + weight blob, :mod:`.program`) and
interprets each MIL operation with numpy (:mod:`.kernels`).  It is fed the
manifest's tensors, like every runner; an image input gets the pixels they
came from (:mod:`.features`).

It is a *checker*, not a runtime: slow (pure numpy, no fusion) but faithful
to what the program declares.  With ``inference_precision="program"`` (the
default) every value the program types as fp16 is rounded to fp16, and
compressed weights (int8, palettized, W8A8's quantize/dequantize) are
expanded exactly as their ``constexpr_*`` ops define — the numerics a Core
ML device computes up to its accumulation order.  ``"fp32"`` keeps fp32
between ops, to separate compression error from fp16 rounding.
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ...errors import ModelError
from ...manifest import Manifest
from ...options import Option, OptionSchema
from ..base import Runner
from .features import ImageFeed, io_names
from .kernels import KERNELS
from .program import MilOp, MilProgram, TensorType, load_program

_FLOAT16 = "FLOAT16"


class ReferencePrecision(str, enum.Enum):
    PROGRAM = "program"  #: round to fp16 wherever the program computes in fp16
    FP32 = "fp32"  #: keep fp32 between ops


def mlpackage_of(root: Path, entry: str) -> Path:
    """The ``.mlpackage`` folder of a package's entry (``model.mlpackage/Manifest.json``)."""
    path = root / entry
    for p in (path, *path.parents):
        if p.suffix == ".mlpackage":
            return p
    return path.parent


class MilInterpreter:
    """Runs one :class:`MilProgram`; constants and ``constexpr_*`` ops are evaluated once."""

    def __init__(self, program: MilProgram, *, fp16_rounding: bool = True) -> None:
        self.program = program
        self.fp16_rounding = fp16_rounding
        missing = sorted({op.type for op in program.ops
                          if op.type != "const" and op.type not in KERNELS})
        if missing:
            raise ModelError(
                f"the Core ML program uses MIL op(s) the reference executor does not interpret: {', '.join(missing)} "
                f"(it interprets: {', '.join(sorted(KERNELS))}); run it on an Apple device with the coreml runtime")
        self.constants: Dict[str, Any] = {}
        self.steps: List[MilOp] = []
        for op in program.ops:
            if op.type == "const":
                self.constants[op.outputs[0][0]] = op.attributes["val"]
            elif op.type.startswith("constexpr_") and all(
                    kind == "value" or ref in self.constants for items in op.inputs.values() for kind, ref in items):
                self._store(op, KERNELS[op.type](self._args(op, self.constants)), self.constants)
            else:
                self.steps.append(op)

    def _args(self, op: MilOp, env: Mapping[str, Any]) -> Dict[str, Any]:
        # iOS 16 constexpr ops carry their parameters as attributes, later ones as inputs
        args: Dict[str, Any] = {k: v for k, v in op.attributes.items() if k != "val"}
        for key, items in op.inputs.items():
            vals = [env[ref] if kind == "var" else ref for kind, ref in items]
            args[key] = vals if key == "values" or len(vals) > 1 else vals[0]
        return args

    def _round(self, value: Any, ttype: Optional[TensorType]) -> Any:
        value = np.asarray(value)
        if ttype is None:
            return value
        if ttype.dtype == _FLOAT16:
            # fp16 storage between ops; kept as float32 arrays so numpy computes at float32 speed
            return value.astype(np.float16).astype(np.float32) if self.fp16_rounding else value.astype(np.float32)
        if ttype.dtype == "FLOAT32":
            return value.astype(np.float32, copy=False)
        return value

    def _store(self, op: MilOp, result: Any, env: Dict[str, Any]) -> None:
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for (name, ttype), value in zip(op.outputs, results):
            env[name] = self._round(value, ttype)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        env: Dict[str, Any] = dict(self.constants)
        for name, ttype in self.program.inputs:
            env[name] = self._round(feeds[name], ttype)
        for op in self.steps:
            try:
                result = KERNELS[op.type](self._args(op, env))
            except (ValueError, IndexError, KeyError, TypeError) as err:  # a program this executor misreads
                raise ModelError(f"reference executor: MIL op {op.name} ({op.type}) failed: {err}") from None
            self._store(op, result, env)
        return {name: np.asarray(env[name]) for name in self.program.outputs}


class CoreMLReferenceRunner(Runner):
    """Runs a Core ML package's ML Program with numpy (any OS); see the module docstring."""

    name = "coreml-reference"
    extra = "coreml"
    options = OptionSchema("coreml-reference runner", [
        Option("inference_precision", ReferencePrecision, ReferencePrecision.PROGRAM,
               '"program": round to fp16 where the program computes in fp16 (what a device does); '
               '"fp32": keep fp32 between ops'),
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        self.package = mlpackage_of(self.root, manifest.entry)
        program = load_program(self.package)
        precision = ReferencePrecision(self.options["inference_precision"])
        self.interpreter = MilInterpreter(program, fp16_rounding=precision is ReferencePrecision.PROGRAM)
        self._in_names, self._out_names = io_names(manifest, [n for n, _ in program.inputs], program.outputs)
        self._image = ImageFeed.of(manifest)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        image = self._image
        values = self.interpreter.run({self._in_names[k]: image.pixels(v) if image and k == image.input else v
                                       for k, v in feeds.items()})
        out: Dict[str, np.ndarray] = {}
        for spec in self.manifest.outputs:
            y = values[self._out_names[spec.name]]
            out[spec.name] = y.astype(spec.dtype, copy=False).reshape(spec.shape) if spec.shape else y
        return out

    def describe(self) -> Dict[str, Any]:
        prog = self.interpreter.program
        # only runtime versions are strings here (the pipeline records string values as versions)
        return {"runner": self.name, "operations": len(prog.ops),
                "program": {"opset": prog.opset, "spec_version": prog.spec_version,
                            "inference_precision": ReferencePrecision(self.options["inference_precision"]).value}}

