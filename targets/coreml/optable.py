"""The Core ML target's op table, derived from the lowering's own coverage (:data:`.ops.COVERAGE`).

One source of truth: an op is in the table exactly when the lowering has an
emitter for it, and its check is the emitter's own precondition (e.g. "the
weight must be a constant") judged on the graph view the lowering walks
(:func:`..lowering.folded`), so ``check`` and ``build`` cannot disagree.  The
derivation is the one the TFLite target uses (:meth:`..lowering.OpCoverage.op_table`).
"""
from __future__ import annotations

from ..lowering import folded
from ..optable import OpTable
from .ops import COVERAGE


def build_op_table() -> OpTable:
    return COVERAGE.op_table("coreml", "edgekit's ONNX → MIL lowering (targets/coreml/ops.py)", folded,
                             "that folds to a constant (static shape arithmetic)")


OP_TABLE = build_op_table()
