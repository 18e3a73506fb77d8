"""Neural Engine report: the conditions that keep a layer off the ANE, as data.

Core ML decides placement on the device and Apple publishes no rule list, so
this table collects the documented and widely measured ones (Apple's
"Deploying Transformers on the Apple Neural Engine" note, coremltools'
performance guides, and the community's ANE notes): the ANE computes in
fp16, on static shapes of rank ≤ 5 with dims up to 16,384, and lacks a few op
types.  Each rule is checked against the saved program's operations; a hit
means "at risk of running on the GPU/CPU", not a certainty — ``edgekit
inspect`` lists them and ``coreml`` runs on a Mac can confirm with
``MLComputePlan``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

#: the ANE's largest tensor dimension and rank
MAX_DIM = 16384
MAX_RANK = 5

#: op types that do not run on the Neural Engine (fall back to GPU/CPU)
OFF_ANE_OPS: Mapping[str, str] = {
    "gather": "gathers are not an ANE op (run on the CPU)",
    "gather_nd": "gathers are not an ANE op (run on the CPU)",
    "scatter": "scatters are not an ANE op",
    "reduce_argmax": "arg-max runs on the CPU/GPU",
    "reduce_argmin": "arg-min runs on the CPU/GPU",
    "non_zero": "data-dependent shapes are not supported on the ANE",
    "while_loop": "control flow is not supported on the ANE",
    "cond": "control flow is not supported on the ANE",
    "erf": "a bare erf is not an ANE op (fuse into gelu)",
    "lstm": "recurrent layers are reported to run on the CPU/GPU, not the ANE (the sequence loop is not an ANE op)",
}

#: the ANE computes in fp16 (and int8 on A17 Pro / M4 for W8A8); these dtypes mean another unit
OFF_ANE_DTYPES: Mapping[str, str] = {
    "FLOAT32": "fp32 compute runs on the GPU/CPU (the ANE computes fp16)",
    "INT32": "int32 tensors run on the CPU",
    "INT64": "int64 tensors run on the CPU",
}

#: ops whose dtype does not matter for placement (bookkeeping around IO)
_DTYPE_EXEMPT = frozenset({"cast", "const", "quantize", "dequantize", "reshape", "identity"})


@dataclass(frozen=True)
class AtRisk:
    layer: str
    op: str
    reason: str
    onnx_node: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        out = {"layer": self.layer, "op": self.op, "reason": self.reason}
        if self.onnx_node:
            out["onnx_node"] = self.onnx_node
        return out


def _checks(op_type: str, dtype: Optional[str], shape: Sequence[int], attrs: Mapping[str, Any],
            enumerated: bool = False) -> List[str]:
    reasons: List[str] = []
    if op_type in OFF_ANE_OPS:
        reasons.append(OFF_ANE_OPS[op_type])
    if dtype in OFF_ANE_DTYPES and op_type not in _DTYPE_EXEMPT:
        reasons.append(OFF_ANE_DTYPES[dtype])
    if any(d <= 0 for d in shape) and not enumerated:  # enumerated sizes are specialized statically on the device
        reasons.append("a dynamic dimension (the ANE needs static shapes)")
    if len(shape) > MAX_RANK:
        reasons.append(f"rank {len(shape)} > {MAX_RANK}")
    big = [d for d in shape if d > MAX_DIM]
    if big:
        reasons.append(f"a dimension of {big[0]} > {MAX_DIM}")
    return reasons


def neural_engine_report(program: Any, origins: Mapping[str, str], enumerated: bool = False) -> Dict[str, Any]:
    """Check every operation of a loaded :class:`~edgekit.runners.coreml.program.MilProgram`.

    ``enumerated``: the input has enumerated sizes, so its symbolic dims are not dynamic on the device.
    """
    found: List[AtRisk] = []
    checked = 0
    for op in program.ops:
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        checked += 1
        name, ttype = op.outputs[0] if op.outputs else (op.name, None)
        dtype = ttype.dtype if ttype is not None else None
        shape = ttype.shape if ttype is not None else ()
        for reason in _checks(op.type, dtype, shape, op.attributes, enumerated):
            found.append(AtRisk(name, op.type, reason, origins.get(name)))
    return {
        "checked_ops": checked,
        "at_risk": [a.to_json() for a in found],
        "rules": "targets/coreml/ane.py (heuristics: Core ML places layers on the device)",
    }
