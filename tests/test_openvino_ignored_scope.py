"""openvino int8: ONNX node names the recipe keeps in float reach the converted ov.Model's ops.

The frontend renames unnamed nodes after their output tensors and folds Conv+BatchNormalization into a
Convolution with a generated name, so name matching alone left such layers int8 (issue 13).
"""
from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")

from edgekit.quantize.recipe import Recipe  # noqa: E402
from edgekit.targets.graph import iter_nodes  # noqa: E402
from edgekit.targets.openvino.int8 import ignored_scope, quantized_in_scope, quantized_layers  # noqa: E402
from models.meta import MODELS_DIR  # noqa: E402


def _quantize(path, recipe):
    model = onnx.load(str(path))
    ov_model = ov.convert_model(str(path))
    names, _, unmatched = ignored_scope(ov_model, model, recipe)
    assert unmatched == []
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    data = nncf.Dataset([{model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}
                         for _ in range(3)])
    scope = nncf.IgnoredScope(names=names, validate=False) if names else None
    return nncf.quantize(ov_model, data, subset_size=3, ignored_scope=scope), names


def test_unnamed_conv_with_folded_batchnorm_stays_float(tmp_path):
    model = onnx.load(str(MODELS_DIR / "conv_bn_relu.onnx"))
    for node in model.graph.node:  # exported graphs often leave nodes unnamed
        node.name = ""
    path = tmp_path / "unnamed.onnx"
    onnx.save(model, str(path))
    names = {node.op_type + str(i): name for i, (name, node) in enumerate(iter_nodes(model.graph))}
    conv_1 = names["Conv3"]
    baseline, _ = _quantize(path, Recipe())
    assert all(quantized_layers(baseline).values())
    quantized, scope = _quantize(path, Recipe(exclude_nodes=(conv_1, names["Relu2"])))
    layers = quantized_layers(quantized)
    floats = sorted(k for k, v in layers.items() if not v)
    assert len(floats) == 1 and floats[0] in scope, layers  # the folded Conv of conv_1, under its generated name
    assert sum(layers.values()) == len(layers) - 1
    assert quantized_in_scope(quantized, scope) == []
