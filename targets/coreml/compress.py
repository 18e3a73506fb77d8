"""Weight compression on the converted model, and activation ranges for W8A8.

Weights go through coremltools' own compressors (``optimize.coreml``), so the
package holds exactly the ``constexpr_*`` ops Core ML documents.  Activation
ranges come from the shared calibration feeds run through the fp32 source on
onnxruntime (coremltools' own activation calibration needs to *run* the Core
ML model, which only macOS can).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from edgekit.errors import CalibrationError

from .schemes import Compression

#: constants with fewer elements stay fp16 (biases, norms): compressing them saves nothing
WEIGHT_THRESHOLD = 2048


def compress_weights(mlmodel: Any, scheme: Compression, skip_ops: Iterable[str] = ()) -> Any:
    """``mlmodel`` with its weights compressed per ``scheme`` (fp16/fp32: unchanged); the weights the MIL
    ops named in ``skip_ops`` read stay as they are (int8 schemes: the layers kept out of int8)."""
    import coremltools.optimize.coreml as cto

    if scheme in (Compression.W8, Compression.W8A8):
        op_cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                             weight_threshold=WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(
            global_config=op_cfg, op_name_configs={name: None for name in skip_ops}))
    bits = scheme.palette_bits
    if bits is not None:
        op_cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=bits, granularity="per_tensor",
                                        weight_threshold=WEIGHT_THRESHOLD)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_cfg))
    return mlmodel


def activation_tensors(model: Any, consumers: Iterable[str]) -> List[str]:
    """Float activations (not initializers) that feed one of ``consumers`` op types."""
    inits = {t.name for t in model.graph.initializer}
    wanted = set(consumers)
    out: List[str] = []
    for node in model.graph.node:
        if node.op_type not in wanted:
            continue
        inputs = node.input[:2] if node.op_type == "MatMul" else node.input[:1]
        for name in inputs:
            if name and name not in inits and name not in out:
                out.append(name)
    return out


def activation_ranges(model: Any, tensors: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]],
                      recipe: Any = None) -> Dict[str, Tuple[float, float]]:
    """(low, high) of each tensor over ``feeds``, from the fp32 model on onnxruntime, by the shared
    range rules (:mod:`edgekit.quantize.ranges`): the recipe's method and percentile, its per-op
    choices for the tensors those ops output, natural ranges of bounded ops (min-max without a recipe)."""
    from edgekit.quantize.ranges import ranges, recipe_rules
    from edgekit.quantize.recipe import Recipe

    if not feeds:
        raise CalibrationError("W8A8 needs calibration data for its activation ranges: pass --calib DIR|FILE.npz")
    recipe = recipe if recipe is not None else Recipe()
    return ranges(model, [dict(f) for f in feeds], method=recipe.method.value, percentile=recipe.percentile,
                  per_tensor=recipe_rules(model, recipe), names=list(tensors))
