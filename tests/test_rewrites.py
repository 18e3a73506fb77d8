"""Quantization-friendly rewrites (targets/rewrites.py): each pattern is found, rewritten to fewer ops
with the same fp32 function, left alone where folding would change it, and int8 builds record them."""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.targets.canonicalize import canonicalize  # noqa: E402
from edgekit.targets.lowering.fusions import apply_fusions  # noqa: E402
from edgekit.targets.lowering.graph import GraphView  # noqa: E402
from edgekit.targets.rewrites import DEFAULT, rewrite  # noqa: E402

RNG = np.random.default_rng(11)


def _c(name: str, value) -> "onnx.TensorProto":
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _model(nodes: List, inits: List, x_shape: Tuple[int, ...], y: str, opset: int = 13,
           y_shape: Tuple[int, ...] = (), raw: bool = False) -> "onnx.ModelProto":
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(y_shape or x_shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if raw:
        return m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canonicalize(m, optimize=False).model


def _hardswish_clip(x: str, tag: str) -> Tuple[List, List, str]:
    """paddle2onnx's HardSwish: x * Clip(x + 3, 0, 6) / 6."""
    nodes = [helper.make_node("Add", [x, "three"], [f"{tag}_a"], name=f"{tag}_add"),
             helper.make_node("Clip", [f"{tag}_a", "zero", "six"], [f"{tag}_c"], name=f"{tag}_clip"),
             helper.make_node("Mul", [x, f"{tag}_c"], [f"{tag}_m"], name=f"{tag}_mul"),
             helper.make_node("Div", [f"{tag}_m", "six"], [f"{tag}_hs"], name=f"{tag}_div")]
    return nodes, [], f"{tag}_hs"


def _lcnet_block(raw: bool = False) -> "onnx.ModelProto":
    """PP-LCNetV3 as paddle2onnx writes it: Conv → ×s → +b → HardSwish → ×s → +b → 1×1 Conv, then a padded
    depthwise Conv behind a shift (must keep its Add) and a Gemm head with a scale before and after."""
    w0 = RNG.standard_normal((8, 3, 3, 3)) * 0.3
    w1 = RNG.standard_normal((8, 8, 1, 1)) * 0.3
    w2 = RNG.standard_normal((8, 1, 3, 3)) * 0.3
    wg = RNG.standard_normal((5, 8)) * 0.3  # [N, K]: transB
    inits = [_c("w0", w0), _c("b0", RNG.standard_normal(8)), _c("s0", [0.9]), _c("t0", [0.5]),
             _c("three", 3.0), _c("zero", 0.0), _c("six", 6.0), _c("s1", [0.47]), _c("t1", [-0.01]),
             _c("w1", w1), _c("b1", RNG.standard_normal(8)), _c("t2", RNG.standard_normal((1, 8, 1, 1))),
             _c("w2", w2), _c("b2", RNG.standard_normal(8)), _c("sg", [1.5]), _c("wg", wg),
             _c("bg", RNG.standard_normal(5)), _c("sg2", RNG.standard_normal(5) + 2.0)]
    hs, _, hs_out = _hardswish_clip("lab", "hs0")
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["s0", "c0"], ["m0"], name="lab_scale"),
             helper.make_node("Add", ["m0", "t0"], ["lab"], name="lab_shift"),
             *hs,
             helper.make_node("Mul", ["s1", hs_out], ["m1"], name="post_scale"),
             helper.make_node("Add", ["m1", "t1"], ["a1"], name="post_shift"),
             helper.make_node("Conv", ["a1", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Sub", ["c1", "t2"], ["d1"], name="dw_shift"),  # Sub: folds into conv1, not dw
             helper.make_node("Relu", ["d1"], ["r1"], name="relu"),
             helper.make_node("Add", ["r1", "t2"], ["r2"], name="pre_dw_shift"),  # before a padded Conv: stays
             helper.make_node("Conv", ["r2", "w2", "b2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Div", ["f", "sg"], ["fs"], name="head_scale"),
             helper.make_node("Gemm", ["fs", "wg", "bg"], ["g"], name="head", transB=1),
             helper.make_node("Mul", ["g", "sg2"], ["y"], name="head_out_scale")]
    return _model(nodes, inits, (1, 3, 10, 10), "y", y_shape=(1, 5), raw=raw)


def _run(m, feeds) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [sess.run(None, f)[0] for f in feeds]


def _sqnr(a: List[np.ndarray], b: List[np.ndarray]) -> float:
    ra, rb = np.concatenate([x.ravel() for x in a]).astype(np.float64), np.concatenate([x.ravel() for x in b])
    noise = float(np.sum((ra - rb) ** 2))
    return np.inf if noise == 0 else 10 * np.log10(float(np.sum(ra ** 2)) / noise)


def _ops(m) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for n in m.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def test_lcnet_block_folds_to_fewer_ops_with_the_same_function():
    m = _lcnet_block()
    before = [n.SerializeToString() for n in m.graph.node]
    r, counts = rewrite(m)
    onnx.shape_inference.infer_shapes(r, strict_mode=True)  # every node type-checks
    assert counts == {"hardswish_clip": 1, "scale_bias_into_producer": 4, "scale_bias_into_consumer": 3}, counts
    ops = _ops(r)
    # left: the HardSwish pair, the shift before the padded depthwise conv (a border would see it)
    assert ops == {"Conv": 3, "HardSigmoid": 1, "Mul": 1, "Relu": 1, "Add": 1, "GlobalAveragePool": 1,
                   "Flatten": 1, "Gemm": 1}, ops
    kept = next(n for n in r.graph.node if n.op_type == "Add")
    assert kept.name == "pre_dw_shift"
    feeds = [{"x": RNG.standard_normal((1, 3, 10, 10)).astype(np.float32) * 2} for _ in range(4)]
    assert _sqnr(_run(m, feeds), _run(r, feeds)) > 120.0
    assert [n.SerializeToString() for n in m.graph.node] == before, "the argument is not modified"


def test_nothing_to_rewrite_returns_the_model_itself():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    m = _model(nodes, [], (1, 4), "y")
    r, counts = rewrite(m)
    assert r is m and counts == {}


def test_shared_weights_and_graph_outputs_are_never_folded():
    """A weight two Convs read is copied, not scaled in place; a Conv output the graph returns keeps its value."""
    w = RNG.standard_normal((4, 2, 1, 1))
    inits = [_c("w", w), _c("s", [2.0])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c0"], name="a"),
             helper.make_node("Mul", ["c0", "s"], ["y"], name="scale"),
             helper.make_node("Conv", ["x", "w"], ["c1"], name="b")]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3]),
                           helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    m = canonicalize(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), optimize=False).model
    r, counts = rewrite(m)
    assert counts == {"scale_bias_into_producer": 1}
    feeds = [{"x": RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)}]
    sess_a, sess_b = (ort.InferenceSession(x.SerializeToString(), providers=["CPUExecutionProvider"]) for x in (m, r))
    for a, b in zip(sess_a.run(None, feeds[0]), sess_b.run(None, feeds[0])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # c1 is a graph output and w's other reader: its Conv still reads the original weight
    assert next(n for n in r.graph.node if n.name == "b").input[1] == "w"


@pytest.mark.parametrize("opset, fused", [(13, {"HardSigmoid": 1, "Mul": 1}), (14, {"HardSwish": 1})])
def test_lowering_makes_hardswish_only_where_the_opset_has_it(opset, fused):
    """The paddle form rewritten to x * HardSigmoid(x): the lowering (tflite, coreml) fuses it into HardSwish
    at opset 14+, and below leaves two ops every emitter lowers (tflite covers HardSwish from 14)."""
    nodes, _, out = _hardswish_clip("x", "p")
    inits = [_c("three", 3.0), _c("zero", 0.0), _c("six", 6.0)]
    m = _model(nodes + [helper.make_node("Relu", [out], ["y"], name="r")], inits, (1, 8), "y", opset=opset)
    r, counts = rewrite(m)
    assert counts == {"hardswish_clip": 1}
    view = GraphView(r)
    apply_fusions(view)
    assert view.op_counts() == {**fused, "Relu": 1}


def test_int8_builds_record_the_rewrites_and_fp32_builds_skip_them(tmp_path):
    from edgekit.targets.pipeline import build_package

    m = _lcnet_block(raw=True)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    feeds = {"x": RNG.standard_normal((40, 3, 10, 10)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **feeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = build_package(path, target="onnxruntime", precision="int8", calibration=tmp_path / "calib.npz",
                             output=tmp_path / "int8.edgepkg", allow_gate_failure=True, mixed_precision=False)
        fp32 = build_package(path, target="onnxruntime", precision="fp32", calibration=tmp_path / "calib.npz",
                             output=tmp_path / "fp32.edgepkg")
    notes = int8.manifest["source"]["canonicalization"]
    assert any(n.startswith("int8 rewrite scale_bias_into_producer: 4×") for n in notes), notes
    assert any(n.startswith("int8 rewrite hardswish_clip: 1×") for n in notes), notes
    assert not any("int8 rewrite" in n for n in fp32.manifest["source"]["canonicalization"])
    assert fp32.manifest["verification"]["min_sqnr_db"] > 100


def test_default_order_names_every_rewrite():
    assert DEFAULT == ("hardsigmoid", "hardswish_clip", "scale_bias_into_producer", "scale_bias_into_consumer")
    with pytest.raises(ValueError, match="unknown rewrite"):
        rewrite(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [], (1, 2), "y"), ["fold_everything"])


@pytest.mark.parametrize("kernel,stride,pads,gather", [(3, 1, [1, 1, 1, 1], False), (1, 1, [0, 0, 0, 0], False),
                                                       (3, 2, [1, 0, 2, 1], False), (2, 1, [0, 0, 0, 0], False),
                                                       (3, 1, [1, 1, 1, 1], True)])
def test_space_to_depth_into_conv_is_one_conv_with_the_same_function(kernel, stride, pads, gather):
    """A Focus stem: SpaceToDepth(2) → Conv, or with a Gather putting the channels in YOLOv5's order between them
    (the canonical YOLOX's); folded into one Conv on the pixels (larger kernel, stride, pads)."""
    w = RNG.standard_normal((6, 12, kernel, kernel)) * 0.3
    order = np.array([0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11], np.int64)  # (0,0), (1,0), (0,1), (1,1) blocks
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s0" if gather else "s"], name="focus", blocksize=2)]
    nodes += [helper.make_node("Gather", ["s0", "order"], ["s"], name="focus_order", axis=1)] if gather else []
    nodes += [helper.make_node("Conv", ["s", "w", "b"], ["y"], name="stem", kernel_shape=[kernel, kernel],
                               strides=[stride, stride], pads=pads)]
    inits = [_c("w", w), _c("b", RNG.standard_normal(6)), numpy_helper.from_array(order, "order")]
    m = _model(nodes, inits, (1, 3, 16, 16), "y", raw=True)
    out, fired = rewrite(m, ["space_to_depth_into_conv"])
    assert fired == {"space_to_depth_into_conv": 1} and _ops(out) == {"Conv": 1}
    conv = out.graph.node[0]
    assert conv.name == "stem" and conv.input[0] == "x"
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs["kernel_shape"] == [2 * kernel] * 2 and attrs["strides"] == [2 * stride] * 2
    assert attrs["pads"] == [2 * p for p in pads]
    feeds = [{"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(3)]
    want, got = _run(m, feeds), _run(out, feeds)
    assert [a.shape for a in got] == [a.shape for a in want]
    assert _sqnr(want, got) > 120
    assert "space_to_depth_into_conv" not in DEFAULT  # the targets that measured it cheaper ask for it
    from edgekit.targets import TARGETS

    askers = {n for n in TARGETS.names() if "space_to_depth_into_conv" in TARGETS.get(n).int8_rewrites}
    assert askers == {"onnxruntime", "openvino", "tflite"}


def test_space_to_depth_read_elsewhere_or_into_a_grouped_conv_stays():
    w = RNG.standard_normal((12, 1, 3, 3)) * 0.3
    grouped = [helper.make_node("SpaceToDepth", ["x"], ["s"], name="focus", blocksize=2),
               helper.make_node("Conv", ["s", "w"], ["y"], name="dw", group=12, pads=[1, 1, 1, 1])]
    m = _model(grouped, [_c("w", w)], (1, 3, 8, 8), "y", y_shape=(1, 12, 4, 4), raw=True)
    assert rewrite(m, ["space_to_depth_into_conv"])[1] == {}
    shared = [helper.make_node("SpaceToDepth", ["x"], ["s"], name="focus", blocksize=2),
              helper.make_node("Conv", ["s", "w2"], ["c"], name="conv"),
              helper.make_node("Add", ["c", "s"], ["y"], name="skip")]
    m = _model(shared, [_c("w2", RNG.standard_normal((12, 12, 1, 1)))], (1, 3, 8, 8), "y", y_shape=(1, 12, 4, 4),
               raw=True)
    assert rewrite(m, ["space_to_depth_into_conv"])[1] == {}
