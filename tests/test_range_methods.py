"""The recipe picks the range rule per op type or node (``OpConfig.method`` / ``percentile``), and that
choice reaches the activation ranges of every target: a node-level rule changes the range of the tensor
that node outputs, and no other (openvino refuses it: NNCF has one range estimator per model)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.errors import ConfigError  # noqa: E402
from edgekit.quantize import ranges as R  # noqa: E402
from edgekit.quantize.calibration import CalibrationSet  # noqa: E402
from edgekit.quantize.recipe import CalibrationMethod, OpConfig, Recipe  # noqa: E402
from edgekit.targets import TARGETS, BuildSpec, Precision  # noqa: E402
from edgekit.targets.canonicalize import canonicalize  # noqa: E402

#: c0 → t0 → c1 → t1 → c2 → y; no activation between them, so each tensor is one node's output alone
BASE = Recipe(num_samples=16)
PER_NODE = Recipe(num_samples=16, nodes={"c1": OpConfig(method="percentile", percentile=90.0)})
WATCHED = ("t0", "t1")


def _chain() -> "onnx.ModelProto":
    rng = np.random.default_rng(3)

    def conv(name: str, x: str, y: str, cin: int, cout: int):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"{name}_w")
        b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, f"{name}_b")
        return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[1, 1, 1, 1]), [w, b]

    nodes, inits = [], []
    for name, x, y, cin, cout in (("c0", "x", "t0", 3, 8), ("c1", "t0", "t1", 8, 8), ("c2", "t1", "y", 8, 4)):
        n, i = conv(name, x, y, cin, cout)
        nodes.append(n)
        inits += i
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def canon():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canonicalize(_chain()).model


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(5)
    return CalibrationSet([{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(16)])


def _target(name: str):
    cls = TARGETS.get(name)
    installed, detail = cls().toolchain()
    if not installed:
        pytest.skip(f"{name} toolchain not installed here: {detail}")
    return cls()


def _build(name: str, canon, calib, tmp_path: Path, recipe: Recipe, **runtime_options):
    spec = BuildSpec(precision=Precision.INT8, recipe=recipe, runtime_options=runtime_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _target(name).build(canon, spec, calib, tmp_path)


def _qdq_scales(path: Path) -> Dict[str, float]:
    """Tensor → the scale of the QuantizeLinear that quantizes it, in a Q/DQ ONNX file."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.input[0]: float(np.asarray(inits[n.input[1]]).reshape(-1)[0])
            for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[1] in inits}


def _only_t1_narrower(base: Dict[str, float], per_node: Dict[str, float]) -> None:
    for t in WATCHED:
        assert t in base and t in per_node, f"{t} is not quantized: {sorted(base)}"
    # a 90th-percentile range clips t1's tails: a much finer scale; every other tensor keeps its range
    assert per_node["t1"] < 0.8 * base["t1"], (base["t1"], per_node["t1"])
    for t in set(base) - {"t1"}:
        assert per_node[t] == pytest.approx(base[t], rel=1e-6), t


# -- the recipe ------------------------------------------------------------------------------

def test_recipe_validates_and_round_trips_per_op_rules():
    r = Recipe(method="entropy", op_types={"Conv": OpConfig(method="mse")},
               nodes={"head": OpConfig(method="percentile", percentile=99.9)})
    assert Recipe.from_json(r.to_json()) == r and r.per_op_methods
    assert r.range_rule("head", "Conv") == (CalibrationMethod.PERCENTILE, 99.9)
    assert r.range_rule("body", "Conv") == (CalibrationMethod.MSE, 99.999)
    assert r.range_rule("add", "Add") == (CalibrationMethod.ENTROPY, 99.999)
    assert not BASE.per_op_methods
    with pytest.raises(ConfigError, match=r"^recipe\.nodes\.a\.method: must be one of \{'minmax', 'percentile', "
                                          r"'entropy', 'mse'\}, but got 'kl'$"):
        Recipe.from_json({"nodes": {"a": {"method": "kl"}}})
    with pytest.raises(ConfigError, match=r"^recipe\.op_types\.Conv\.percentile: must be a number in \(0, 100\]"):
        Recipe.from_json({"op_types": {"Conv": {"method": "percentile", "percentile": 0}}})
    # a percentile that its rule would not use is an error, not silently ignored
    with pytest.raises(ConfigError, match=r"^recipe\.nodes\.a\.percentile: needs method 'percentile', but the "
                                          r"method there is 'minmax'"):
        Recipe.from_json({"nodes": {"a": {"percentile": 99.0}}})
    assert Recipe(method="percentile", nodes={"a": OpConfig(percentile=99.0)}).range_rule("a", "X")[1] == 99.0


def test_rules_resolve_to_the_tensors_nodes_output(canon):
    assert R.recipe_rules(canon, BASE) == {}
    assert R.recipe_rules(canon, PER_NODE) == {"t1": (R.RangeMethod.PERCENTILE, 90.0)}
    everything = R.recipe_rules(canon, Recipe(method="mse"), everything=True)
    assert set(everything) == {"x", "t0", "t1", "y"} and {m for m, _ in everything.values()} == {R.RangeMethod.MSE}
    # a rule in global_config is every node's and the graph input's
    whole = R.recipe_rules(canon, Recipe(global_config=OpConfig(method="entropy")))
    assert whole == {t: (R.RangeMethod.ENTROPY, 99.999) for t in ("x", "t0", "t1", "y")}
    # a Relu after the node is folded into its range by quantizers: it takes the node's rule too
    relu = onnx.ModelProto()
    relu.CopyFrom(canon)
    c2 = next(n for n in relu.graph.node if n.name == "c2")
    c2.input[0] = "r1"
    relu.graph.node.insert(2, helper.make_node("Relu", ["t1"], ["r1"], name="relu1"))
    assert set(R.recipe_rules(relu, PER_NODE)) == {"t1", "r1"}


def test_shared_ranges_honour_per_tensor_rules(canon, calib):
    feeds = [dict(f) for f in calib.feeds]
    base = R.ranges(canon, feeds, names=list(WATCHED))
    mixed = R.ranges(canon, feeds, names=list(WATCHED), per_tensor=R.recipe_rules(canon, PER_NODE))
    assert mixed["t0"] == base["t0"]
    assert mixed["t1"][1] - mixed["t1"][0] < 0.8 * (base["t1"][1] - base["t1"][0])


# -- every target ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, qdq_file", [("onnxruntime", "model.onnx"), ("qnn", "model_qdq.onnx"),
                                            ("tensorrt", "model.onnx")])
def test_qdq_targets_take_a_nodes_rule_for_its_tensor_only(canon, calib, tmp_path, name, qdq_file):
    _build(name, canon, calib, tmp_path / "a", BASE)
    base = _qdq_scales(tmp_path / "a" / qdq_file)
    _build(name, canon, calib, tmp_path / "b", PER_NODE)
    _only_t1_narrower(base, _qdq_scales(tmp_path / "b" / qdq_file))


def test_onnxruntime_takes_edgekits_mse_for_every_range(canon, calib, tmp_path):
    """onnxruntime has no MSE calibrator: every activation gets edgekit's MSE range instead (narrower than
    min-max here: MSE trades a little clipping for finer steps)."""
    _build("onnxruntime", canon, calib, tmp_path / "a", BASE)
    _build("onnxruntime", canon, calib, tmp_path / "b", Recipe(num_samples=16, method="mse"))
    base, got = _qdq_scales(tmp_path / "a" / "model.onnx"), _qdq_scales(tmp_path / "b" / "model.onnx")
    assert set(got) == set(base)
    assert all(got[t] <= base[t] * (1 + 1e-6) for t in base) and any(got[t] < 0.99 * base[t] for t in base)


def _tflite_scales(path: Path) -> Dict[str, float]:
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(model_path=str(path))
    return {d["name"]: float(d["quantization_parameters"]["scales"][0]) for d in interp.get_tensor_details()
            if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) == 1}


def test_tflite_takes_a_nodes_rule_for_its_tensor_only(canon, calib, tmp_path):
    _build("tflite", canon, calib, tmp_path / "a", BASE)
    _build("tflite", canon, calib, tmp_path / "b", PER_NODE)
    base, per_node = _tflite_scales(tmp_path / "a" / "model.tflite"), _tflite_scales(tmp_path / "b" / "model.tflite")
    t1 = [n for n in base if n == "t1" or n.startswith("t1")]
    assert t1, sorted(base)
    assert per_node[t1[0]] < 0.8 * base[t1[0]]
    for t in set(base) - set(t1):
        assert per_node[t] == pytest.approx(base[t], rel=1e-6), t


def _coreml_scales(root: Path) -> Dict[str, float]:
    from edgekit.runners.coreml.program import load_program

    pkg = next(root.glob("**/*.mlpackage"))
    prog = load_program(pkg)
    consts = {o.outputs[0][0]: o.attributes.get("val") for o in prog.ops if o.type == "const"}
    out: Dict[str, float] = {}
    for op in prog.ops:
        if op.type == "quantize":
            kind, val = op.inputs["scale"][0]
            out[op.name] = float(np.asarray(consts[val] if kind == "var" else val).reshape(-1)[0])
    return out


def test_coreml_w8a8_takes_a_nodes_rule_for_its_tensor_only(canon, calib, tmp_path):
    _build("coreml", canon, calib, tmp_path / "a", BASE, compression="w8a8")
    _build("coreml", canon, calib, tmp_path / "b", PER_NODE, compression="w8a8")
    base, per_node = _coreml_scales(tmp_path / "a"), _coreml_scales(tmp_path / "b")
    t1 = [n for n in base if n.startswith("t1")]
    assert t1 and len(base) == 3, sorted(base)  # x, t0, t1 feed the three convs
    assert per_node[t1[0]] < 0.8 * base[t1[0]]
    for t in set(base) - set(t1):
        assert per_node[t] == pytest.approx(base[t], rel=1e-6), t


def test_openvino_refuses_per_op_rules_and_rules_nncf_lacks(canon, calib, tmp_path):
    _target("openvino")
    with pytest.raises(ConfigError, match=r"nodes\.c1\.method \(NNCF has one range estimator per model"):
        _build("openvino", canon, calib, tmp_path / "a", PER_NODE)
    with pytest.raises(ConfigError, match=r"method='mse' \(NNCF has no MSE range estimator"):
        _build("openvino", canon, calib, tmp_path / "b", Recipe(num_samples=16, method="mse"))
    # a whole-model rule set in global_config is NNCF's one estimator: it builds
    art = _build("openvino", canon, calib, tmp_path / "c",
                 Recipe(num_samples=16, global_config=OpConfig(method="percentile", percentile=99.0)))
    assert art.quantization["range_estimator"] == "percentile"
