"""int8 that survives real networks: ranges, the switchable twin, sensitivity, mixed precision, divergence, speed.

Golden models with few calibration samples keep this fast; the real-model
figures come from benchmarks/bench_int8_real.py.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.errors import ConfigError, GateError  # noqa: E402
from edgekit.quantize import divergence as D  # noqa: E402
from edgekit.quantize import mixed as M  # noqa: E402
from edgekit.quantize import ranges as R  # noqa: E402
from edgekit.quantize import sensitivity as S  # noqa: E402
from edgekit.quantize.recipe import CalibrationMethod, Recipe  # noqa: E402
from edgekit.targets.pipeline import build_package  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

GM = {m.name: m for m in GOLDEN_MODELS}


def feeds(gm, n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{t.name: (scale * rng.standard_normal(t.shape)).astype(np.float32) for t in gm.inputs} for _ in range(n)]


def load(name):
    from edgekit.targets.canonicalize import canonicalize

    return canonicalize(GM[name].path).model


# ----------------------------------------------------------------- ranges
def _stats(x):
    s = R.TensorStats("t")
    s.update_minmax(x)
    s.update_hist(x)
    return s


def test_histogram_rules_clip_a_heavy_tail_that_minmax_keeps():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000), [60.0, -55.0]]).astype(np.float32)
    s = _stats(x)
    mm = R.choose(s, R.RangeMethod.MINMAX)
    assert mm == (pytest.approx(-55.0), pytest.approx(60.0))
    for method in (R.RangeMethod.PERCENTILE, R.RangeMethod.ENTROPY):
        lo, hi = R.choose(s, method, percentile=99.99)
        assert -55.0 <= lo < 0.0 < hi <= 60.0, method
        assert hi - lo < 0.6 * (mm[1] - mm[0]), (method, lo, hi)  # the two outliers no longer set the grid
    # MSE weighs the outliers' clipping error against the bulk's rounding error: on a tail with mass it clips
    y = np.concatenate([rng.standard_normal(100_000), rng.uniform(-40, 40, 50)]).astype(np.float32)
    s2 = _stats(y)
    lo, hi = R.choose(s2, R.RangeMethod.MSE)
    assert s2.lo <= lo < 0.0 < hi <= s2.hi and hi - lo < 0.9 * (s2.hi - s2.lo)


def test_bounded_ops_get_their_natural_range_and_ranges_hold_zero():
    s = _stats(np.linspace(0.2, 0.7, 1000).astype(np.float32))  # a sigmoid that never saturated in calibration
    assert R.choose(s, R.RangeMethod.MINMAX, producer="Sigmoid") == (0.0, 1.0)
    assert R.choose(s, R.RangeMethod.MINMAX, producer="Tanh") == (-1.0, 1.0)
    assert R.choose(s, R.RangeMethod.MINMAX) == (0.0, pytest.approx(0.7))  # 0 is always representable


def test_ranges_on_a_model_name_every_float_activation_and_use_natural_ranges():
    model = load("activations")
    r = R.ranges(model, feeds(GM["activations"], 4))
    producers = R.float_tensors(model)
    assert set(r) == set(producers)
    for name, op in producers.items():
        if op in ("Sigmoid", "HardSigmoid"):
            assert r[name] == (0.0, 1.0)
        if op == "Tanh":
            assert r[name] == (-1.0, 1.0)


def test_too_few_samples_for_histogram_rules_fall_back_to_minmax_with_the_count():
    with pytest.warns(UserWarning, match=r"calibration has 5 sample\(s\), too few for entropy ranges"):
        assert R.effective_method(R.RangeMethod.ENTROPY, 5) is R.RangeMethod.MINMAX
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.effective_method(R.RangeMethod.MSE, R.MIN_HISTOGRAM_SAMPLES) is R.RangeMethod.MSE
    with pytest.warns(UserWarning, match="3 sample"):
        assert R.recipe_for_samples(Recipe(method="percentile"), 3).method is CalibrationMethod.MINMAX
    with pytest.raises(ConfigError, match="range method"):
        R.RangeMethod.parse("kl")


def test_a_build_with_too_few_samples_for_percentile_calibrates_minmax_and_says_so(tmp_path):
    gm = GM["conv_bn_relu"]
    res = build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 8),
                        recipe={"method": "percentile"}, output=tmp_path / "p.edgepkg", mixed_precision=False)
    assert any("too few for percentile ranges" in w and "min-max" in w for w in res.warnings)
    assert res.package.quantization.recipe["method"] == "minmax"


# ----------------------------------------------------------------- the twin and the sweep
def test_twin_with_no_layer_quantized_is_the_fp32_model_and_each_flag_changes_it():
    import onnxruntime as ort

    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 3)
    act = R.ranges(model, fs)
    layers = S.find_layers(model, R.float_tensors(model))
    assert {x.op_type for x in layers} >= {"Conv", "Add", "Gemm"}
    assert all(x.macs > 0 for x in layers if x.op_type in ("Conv", "Gemm"))
    twin = S.Twin(model, act, layers)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, fs[0])[0]
    off = twin.run(fs[0], ())
    np.testing.assert_allclose(off[twin.outputs[0]], ref, rtol=1e-4, atol=1e-5)
    on = twin.run(fs[0], [x.name for x in layers])
    assert 15.0 < S.sqnr_db(ref, on[twin.outputs[0]]) < 80.0
    one = twin.run(fs[0], [layers[0].name])
    assert not np.array_equal(one[twin.outputs[0]], off[twin.outputs[0]])


def test_twin_switches_quantization_points_a_layer_turns_on_its_tensors_and_weight():
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 3)
    layers = S.find_layers(model, R.float_tensors(model))
    twin = S.Twin(model, R.ranges(model, fs), layers)
    conv = next(x.name for x in layers if x.op_type == "Conv")
    pts = twin.layer_points[conv]
    assert f"w:{conv}" in pts and any(p.startswith("t:") for p in pts)
    assert twin.active_points([conv]) == set(pts)
    # a tensor two layers share is one point: quantized for both readers once either layer is int8
    shared = [p for p in twin.points if sum(p in twin.layer_points[x.name] for x in layers) >= 2]
    assert shared
    owner = next(x.name for x in layers if shared[0] in twin.layer_points[x.name])
    a = twin.run_all(fs, [owner])
    b = twin.run_points(fs, twin.layer_points[owner])
    assert all(np.array_equal(a[i][k], b[i][k]) for i in range(len(fs)) for k in a[i])
    only = twin.run_points(fs, [shared[0]])[0][twin.outputs[0]]
    assert not np.array_equal(only, twin.run(fs[0], ())[twin.outputs[0]])
    assert all(twin.point_size[p] > 0 for p in twin.points if p.startswith("t:"))


def test_fake_quant_weight_is_per_channel_symmetric_int8():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * np.array([1, 10, 100, 0.01], np.float32)[:, None, None, None]
    q = S.fake_quant_weight(w, 0)
    for c in range(4):
        step = np.abs(w[c]).max() / 127
        assert np.abs(q[c] - w[c]).max() <= step / 2 + 1e-7
        assert len(np.unique(np.round(q[c] / step))) <= 255


def test_sensitivity_ranks_every_layer_most_damaging_first():
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 6)
    twin = S.Twin(model, R.ranges(model, fs), S.find_layers(model, R.float_tensors(model)))
    rep = S.analyse(twin, fs)
    assert [x.alone_db for x in rep.layers] == sorted(x.alone_db for x in rep.layers)
    assert set(rep.ranked) == {x.name for x in twin.layers}
    assert 10.0 < rep.all_int8_db < 100.0 and all(x.alone_db < 200.0 for x in rep.layers)
    top = rep.layers[0]
    assert top.kept_float_db is not None and rep.layers[-1].alone_db > top.alone_db
    doc = rep.to_json()
    assert doc["ranked"][0]["layer"] == top.name and "sensitivity" in rep.table()


def test_sensitivity_stops_at_its_mac_budget_and_still_ranks_every_layer():
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 4)
    twin = S.Twin(model, R.ranges(model, fs), S.find_layers(model, R.float_tensors(model)))
    rep = S.analyse(twin, fs, bound=S.SweepBound(gmacs=0.0))
    assert rep.truncated and rep.samples == 2  # feeds cut to the minimum first
    assert {x.name for x in rep.layers} == {x.name for x in twin.layers}
    assert all(x.alone_db is None and x.kept_float_db is None for x in rep.layers)
    assert rep.to_json()["ranked"][0]["alone_db"] is None and "-" in rep.table()
    assert rep.bound["stopped_by"] == "evaluation budget" and rep.to_json()["bound"]["budget_gmacs"] == 0.0


def test_the_sweep_bound_is_counted_so_the_same_inputs_measure_the_same_points():
    """A package must not depend on host load: the bound is in MACs, so the samples and the points measured are
    a function of the model and the budget alone."""
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 6)
    twin = S.Twin(model, R.ranges(model, fs), S.find_layers(model, R.float_tensors(model)))
    n_points, per = len(twin.points), twin.macs_per_sample / 1e9
    assert n_points > 3 and twin.macs_per_sample >= S.MIN_MACS_PER_SAMPLE
    # every point plus the reference and all-int8 on 3 samples: the feeds are cut evenly to 3, nothing else
    three = S.analyse(twin, fs, bound=S.SweepBound(gmacs=per * 3 * (n_points + 2) * 1.001))
    assert three.samples == 3 and not three.truncated and len(three.point_db) == n_points
    # too little for every point even on 2 samples: 2 samples, then exactly the points the budget pays for
    reps = [S.analyse(twin, fs, bound=S.SweepBound(gmacs=per * 2 * (2 + 3) * 1.001)) for _ in range(2)]
    a, b = reps
    assert a.samples == b.samples == 2 and len(a.point_db) == 3 and a.point_db == b.point_db
    assert a.truncated and a.bound["stopped_by"] == "evaluation budget" and a.bound == b.bound
    assert a.bound["spent_gmacs"] <= a.bound["budget_gmacs"] and a.bound["macs_per_sample"] == twin.macs_per_sample
    # the default budget measures every point of a small model on every sample given
    full = S.analyse(twin, fs)
    assert full.samples == 6 and not full.truncated and full.bound["stopped_by"] is None


def test_the_wall_time_guard_stops_the_sweep_with_a_warning_and_says_so():
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 3)
    twin = S.Twin(model, R.ranges(model, fs), S.find_layers(model, R.float_tensors(model)))
    with pytest.warns(UserWarning, match="wall-time guard of 1e-09 s after 0 of .* depends on it"):
        rep = S.analyse(twin, fs, bound=S.SweepBound(gmacs=1e6, wall_guard_s=1e-9))
    assert rep.truncated and rep.bound["stopped_by"] == "wall-time guard" and not rep.point_db
    with pytest.raises(ConfigError, match='"gmacs" must be a number ≥ 0, but got -1'):
        S.SweepBound(gmacs=-1)


# ----------------------------------------------------------------- the search
def test_bisection_finds_the_fewest_float_layers_and_reports_the_budget_when_short():
    calls = []

    def ev(k):
        calls.append(k)
        return 10.0 + 3.0 * k

    k, db, tried = M.bisect_count(ev, 25.0, 20)
    assert k == 5 and db == 25.0 and len(calls) <= 7 and (5, 25.0) in tried
    k, db, _ = M.bisect_count(ev, 100.0, 20)
    assert (k, db) == (20, 70.0)
    assert M.bisect_count(ev, 5.0, 20)[0] == 0
    calls.clear()
    k, db, _ = M.bisect_count(ev, 25.0, 20, min_count=8)  # after a real build at 7: at least 8, already enough
    assert (k, db) == (8, 34.0) and calls == [8]
    # after a real build 3 dB short: the fewest further layers whose modelled gain covers 3 (+0.5) dB
    order = [M.Choice(f"l{i}", 0.1, 1.0, 20.0 + i) for i in range(10)]
    assert M.next_after_miss(order, 2, 22.0, 25.0, 10) == 6  # 21 dB at k=2 → needs 24.5 → l5 (k=6)
    assert M.next_after_miss(order, 2, 26.0, 25.0, 10) == 3  # passed SQNR, failed another gate: one more
    assert M.next_after_miss(order, 2, 10.0, 25.0, 8) == 8  # beyond the model: the budget
    assert M.next_after_miss(order, 8, 10.0, 25.0, 8) == 8


def test_benefit_order_takes_damage_per_float_mac_and_keeps_float_regions_contiguous():
    # conv_a: heavy, its weight noisy; conv_b: light, a bit less noisy; act: zero-MAC op after conv_b whose
    # tensor t:y (conv_b → act) only goes float when both are float; conv_c: light and harmless
    layers = [("conv_a", 1_000_000), ("conv_b", 10_000), ("act", 0), ("conv_c", 10_000)]
    points = {"conv_a": ("w:conv_a", "t:x"), "conv_b": ("w:conv_b", "t:x", "t:y"), "act": ("t:y", "t:z"),
              "conv_c": ("w:conv_c", "t:z", "t:out")}
    db = {"w:conv_a": 20.0, "w:conv_b": 22.0, "t:x": 40.0, "t:y": 21.0, "t:z": 45.0, "w:conv_c": 50.0, "t:out": 50.0}
    total = sum(10 ** (-v / 10) for v in db.values())
    sizes = {"t:x": 100, "t:y": 100, "t:z": 100, "t:out": 10}
    order = M.benefit_order(layers, db, points, -10 * np.log10(total), sizes)
    names = [c.name for c in order]
    assert sorted(names) == sorted(n for n, _ in layers)
    assert names.index("conv_b") < names.index("conv_a")  # the same damage for 1 % of the MACs first
    assert abs(names.index("act") - names.index("conv_b")) == 1  # t:y goes only with both: taken together
    assert names[-1] in ("conv_a", "conv_c")
    predicted = [c.predicted_db for c in order]
    assert predicted == sorted(predicted) and predicted[-1] == 200.0  # all float: no noise left
    assert abs(sum(c.benefit for c in order) - 1.0) < 1e-9  # the picks free the whole all-int8 noise once
    # the pick that completes the pair frees t:y (and conv_b's weight): the bulk of the noise
    assert order[max(names.index("act"), names.index("conv_b"))].benefit > 0.5
    # unmeasured points (time budget spent) share the noise the measured ones leave unexplained
    noise = M.point_noise({"a": 30.0}, ["a", "b", "c"], 20.0)
    assert noise["a"] == pytest.approx(1e-3) and noise["b"] == noise["c"] == pytest.approx((1e-2 - 1e-3) / 2)
    assert M.point_noise({"a": 30.0, "b": 30.0}, ["a", "b"], 20.0)["a"] == pytest.approx(5e-3)  # all measured: scaled


def test_prune_returns_the_heaviest_float_layers_the_twin_does_not_need_within_its_evaluations():
    macs = {"a": 100, "b": 50, "c": 10, "relu": 0, "d": 80}
    # the twin holds while neither "d" nor "c" is back in int8 (they carry the noise); "a" and "b" are free
    asked = []

    def holds(keep):
        asked.append(tuple(keep))
        return {"d", "c"} <= set(keep)

    left, trials = M.prune(["a", "relu", "b", "c", "d"], macs, holds, max_evals=10)
    assert [n for n, _ in trials] == ["a", "d", "b", "c"]  # heaviest first; an op without MACs is not tried
    assert trials == [("a", True), ("d", False), ("b", True), ("c", False)]
    assert left == ["relu", "c", "d"]  # order kept; each trial starts from what the earlier ones left
    assert asked[2] == ("relu", "c", "d")
    left, trials = M.prune(["a", "b", "c", "d"], macs, holds, max_evals=1)
    assert trials == [("a", True)] and left == ["b", "c", "d"]
    assert M.prune(["a"], macs, holds, max_evals=0) == (["a"], [])
    with pytest.raises(ConfigError, match="prune_evals"):
        M.MixedPrecisionConfig(prune_evals=-1)


def test_descent_returns_all_candidates_in_one_build_when_they_hold_else_bisects_within_its_builds():
    built = []

    def upto(limit):
        def holds(n):
            built.append(n)
            return n <= limit  # the real build holds while at most ``limit`` of the first candidates went back
        return holds

    assert M.descend(5, upto(5), builds=4) == (5, [(5, True)]) and built == [5]  # the twin was right: one build
    built.clear()
    good, tried = M.descend(5, upto(2), builds=4)
    assert good == 2 and tried == [(5, False), (2, True), (3, False)]  # all, then halves between hold and miss
    assert M.descend(8, upto(6), builds=4)[0] == 6
    # the builds bound it: the best found so far stands, or none (0: the mix as it passed)
    assert M.descend(8, upto(6), builds=2) == (4, [(8, False), (4, True)])
    assert M.descend(5, upto(0), builds=3) == (0, [(5, False), (2, False), (1, False)])
    assert M.descend(5, upto(5), builds=0) == (0, []) and M.descend(0, upto(5), builds=3) == (0, [])


def test_mixed_config_is_validated():
    assert M.MixedPrecisionConfig.parse(None).enabled and not M.MixedPrecisionConfig.parse(False).enabled
    assert M.MixedPrecisionConfig.parse({"max_float_share": 0.25}).budget(10) == 3
    # the share counts layers with MACs: zero-MAC ops between them ride along for free
    cfg = M.MixedPrecisionConfig(max_float_share=0.5)
    macs = {"act1": 0, "conv1": 10, "act2": 0, "conv2": 20, "pool": 0, "conv3": 30, "conv4": 40}
    assert cfg.budget_in(["act1", "conv1", "act2", "conv2", "pool", "conv3", "conv4"], macs) == 5  # 2 of 4 convs
    assert cfg.budget_in(["a", "b", "c", "d"], {}) == 2
    # many cheap sensitive layers: the MAC cap goes further than the count (3 of 4 convs, 3 % of the MACs)
    cheap = {"c1": 1, "c2": 1, "c3": 1, "c4": 97}
    assert cfg.budget_in(["c1", "c2", "c3", "c4"], cheap) == 3
    assert cfg.budget_in(["c4", "c1", "c2", "c3"], cheap) == 2  # the heavy one first: the count's 2 of 4
    with pytest.raises(ConfigError, match="max_float_share"):
        M.MixedPrecisionConfig(max_float_share=0.0)
    with pytest.raises(ConfigError, match='"mixed_precision.sweep_gmacs" must be a number ≥ 0'):
        M.MixedPrecisionConfig(sweep_gmacs=float("nan"))
    bound = M.MixedPrecisionConfig(sweep_gmacs=12.5, time_budget_s=60).sweep_bound()
    assert (bound.gmacs, bound.wall_guard_s) == (12.5, 60.0)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['budget'\]"):
        M.MixedPrecisionConfig.parse({"budget": 3})
    with pytest.raises(ConfigError, match="mixed_precision"):
        M.MixedPrecisionConfig.parse("yes")
    assert M.int8_mac_share({"a": 30, "b": 70}, ["b"]) == 0.3 and M.int8_mac_share({"a": 0}, []) is None




def test_missed_floor_keeps_the_most_sensitive_layers_in_float_until_it_holds(tmp_path):
    gm = GM["residual_add"]
    # all-int8 reaches ~30-35 dB on random-normal data; 42 dB needs some layers in float
    out = tmp_path / "mix.edgepkg"
    res = build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 24),
                        gates={"min_sqnr_db": 42.0}, output=out,
                        mixed_precision={"max_float_share": 1.0, "samples": 6, "speed_check": False})
    q = res.package.quantization.to_json()
    mp = q["mixed_precision"]
    assert res.package.verification.passed and res.package.verification.min_sqnr_db >= 42.0
    assert mp["passed"] and mp["attempts"][0]["float_layers"] == 0 and mp["attempts"][0]["sqnr_db"] < 42.0
    assert mp["attempts"][-1]["passed"] and mp["float_layers"] == len(mp["kept_float"]) >= 1
    kept = [x["layer"] for x in mp["kept_float"]]
    assert set(kept) <= set(q["recipe"]["exclude_nodes"]) and set(kept) <= set(q["excluded_nodes"])
    # taken in the benefit-per-cost order, each with what it frees and costs
    picks = [int(x["reason"].split(" of ")[0].split()[-1]) for x in mp["kept_float"]]
    assert picks == sorted(set(picks)) and picks[0] >= 1
    # the prune pass: what it tried, heaviest first, within its evaluations; what it returned is int8 now
    pr = mp["prune"]
    assert len(pr["trials"]) <= M.MixedPrecisionConfig().prune_evals
    assert [t["macs"] for t in pr["trials"]] == sorted((t["macs"] for t in pr["trials"]), reverse=True)
    assert all((t["twin_sqnr_db"] >= pr["target_db"] - 0.01) == t["returned"] for t in pr["trials"])
    assert not set(pr["returned_to_int8"]) & set(kept)
    assert len(kept) + len(pr["returned_to_int8"]) <= pr["prefix_float_layers"] or not mp["attempts"][1]["passed"]
    # after the pass, the twin calibrated at the passing mix may prune once more: recorded either way
    after = pr["after_pass"]
    assert after is not None and after["offset_db"] == pytest.approx(after["real_db"] - after["twin_db"], abs=0.02)
    if after["kept"]:
        assert after["refined_db"] >= 42.0 and after["returned_to_int8"] and not set(after["returned_to_int8"]) & set(kept)
        # the descent's real builds: the most candidates (first ones first) that held every gate went back
        assert after["returned_to_int8"] == after["candidates"][:len(after["returned_to_int8"])]
        held = [t for t in after["builds"] if t["passed"]]
        assert max(t["returned"] for t in held) == len(after["returned_to_int8"])
        assert max(t["sqnr_db"] for t in held if t["returned"] == len(after["returned_to_int8"])) == after["refined_db"]
    else:
        assert after["why"]
    assert all("benefit per cost" in x["reason"] and "MAC-equivalents" in x["reason"] for x in mp["kept_float"])
    assert mp["selection"].startswith("benefit per cost")
    assert mp["sensitivity"]["points_measured"] >= len(kept)
    # the bound the sweep ran under is in the manifest: counted in MACs, the guard beside it
    bound = mp["sensitivity"]["bound"]
    assert bound["budget_gmacs"] == M.MixedPrecisionConfig().sweep_gmacs and bound["stopped_by"] is None
    assert 0 < bound["spent_gmacs"] <= bound["budget_gmacs"] and bound["macs_per_sample"] > 0
    share = mp["int8_mac_share"]
    assert share is not None and 0.0 <= share <= 1.0
    # the kept layers really run in float: no DequantizeLinear feeds them in the artifact
    import zipfile

    art = onnx.load_from_string(zipfile.ZipFile(out).read("model/model.onnx"))
    dq = {o for n in art.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for n in art.graph.node:
        if n.name in kept and n.op_type in ("Conv", "Gemm"):
            assert n.input[1] not in dq, n.name


def test_a_floor_no_mix_meets_fails_with_the_best_sqnr_the_mixes_tried_and_no_package(tmp_path):
    gm = GM["conv_bn_relu"]
    out = tmp_path / "never.edgepkg"
    with pytest.raises(GateError) as err:
        build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 20),
                      gates={"min_sqnr_db": 150.0}, output=out,
                      mixed_precision={"max_float_share": 0.5, "max_builds": 2, "samples": 4, "speed_check": False})
    msg = str(err.value)
    assert "\n" not in msg and "misses the required 150.00 dB" in msg and "best " in msg
    assert "tried 0 in float →" in msg and "layer(s) in float [" in msg and "--min-sqnr" in msg
    assert not out.exists() and not list(tmp_path.iterdir())


def test_no_mixed_precision_keeps_the_plain_gate_failure(tmp_path):
    gm = GM["conv_bn_relu"]
    with pytest.raises(GateError, match="SQNR .* < required 150.00 dB"):
        build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 12),
                      gates={"min_sqnr_db": 150.0}, output=tmp_path / "x.edgepkg", mixed_precision=False)


# ----------------------------------------------------------------- divergence
def test_divergence_is_exact_against_itself_and_chunking_changes_nothing():
    model, gm = load("residual_add"), GM["residual_add"]
    fs = feeds(gm, 3)
    same = D.of_models(model, model, fs, threshold_db=25, what="self")
    assert same.rows and all(r.sqnr_db == 200.0 for r in same.rows) and same.first_departure is None
    twin = S.Twin(model, R.ranges(model, fs), S.find_layers(model, R.float_tensors(model)))
    a = D.of_twin(twin, fs, threshold_db=60.0)
    floats = R.float_tensors(model)
    small = D.layerwise(D.session_runner(twin.model, extra_feeds=twin.flag_feed(())),
                        D.session_runner(twin.model, extra_feeds=twin.flag_feed(points=twin.points)),
                        D.graph_tensors(model, floats), fs, threshold_db=60.0, what="chunked", chunk=2)
    assert [r.tensor for r in a.rows] == [r.tensor for r in small.rows]
    np.testing.assert_allclose([r.sqnr_db for r in a.rows], [r.sqnr_db for r in small.rows], rtol=1e-6)
    assert a.first_departure is not None and a.first_departure.sqnr_db < 60.0
    assert a.rows[-1].sqnr_db < 60.0 and "first layer below" in a.table()


# ----------------------------------------------------------------- speed, explain, CLI, the audio network
def test_int8_build_records_speed_against_fp32_in_the_same_runner(tmp_path):
    gm = GM["conv_bn_relu"]
    res = build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 12),
                        output=tmp_path / "s.edgepkg")
    sp = res.package.quantization.to_json()["speed"]
    assert sp["runtime"] == "onnxruntime" and sp["int8_median_ms"] > 0 and sp["fp32_median_ms"] > 0
    assert sp["ratio"] == pytest.approx(sp["int8_median_ms"] / sp["fp32_median_ms"], rel=0.01)
    slower = [w for w in res.warnings if "int8 package is not faster than fp32" in w]
    assert bool(slower) == (sp["ratio"] >= 1.0)
    assert "int8 speed" in [s.name for s in res.timings]


def test_audio_conv1d_int8_loads_and_meets_the_default_floor(tmp_path):
    gm = GM["audio_conv1d"]
    res = build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 12),
                        output=tmp_path / "a.edgepkg")
    assert res.package.verification.passed and res.package.verification.min_sqnr_db >= 25.0


def test_cli_build_explain_and_inspect_divergence(tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli import app

    gm = GM["residual_add"]
    data = tmp_path / "d.npz"
    np.savez(data, **{gm.inputs[0].name: np.stack([f[gm.inputs[0].name][0] for f in feeds(gm, 20)])[:, None]})
    pkg = tmp_path / "r.edgepkg"
    r = CliRunner().invoke(app, ["build", str(gm.path), "-t", "onnxruntime", "-p", "int8", "--calib", str(data),
                                 "--explain", "-o", str(pkg)])
    assert r.exit_code == 0, r.output
    assert "sensitivity (" in r.output and "layer-wise divergence" in r.output and "speed on this host" in r.output
    r = CliRunner().invoke(app, ["inspect", str(pkg), "--divergence", "--source", str(gm.path), "--data", str(data),
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["recorded_divergence"]["rows"] and doc["divergence"]["rows"] and doc["speed"]["ratio"] > 0


def test_onnxruntime_int8_gives_bounded_ops_their_natural_range(tmp_path):
    import zipfile

    from onnx import numpy_helper

    gm = GM["activations"]
    out = tmp_path / "act.edgepkg"
    build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 12), output=out,
                  mixed_precision=False)
    m = onnx.load_from_string(zipfile.ZipFile(out).read("model/model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    bounded = [n for n in m.graph.node if n.op_type == "QuantizeLinear"
               and producer.get(n.input[0]) in ("Sigmoid", "HardSigmoid")]
    assert bounded
    for n in bounded:  # [0, 1] on 256 uint8 levels, whatever the calibration data reached
        assert float(inits[n.input[1]]) == pytest.approx(1 / 255) and int(inits[n.input[2]]) == 0


# ----------------------------------------------------------------- a real network (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name, min_int8_share", [("ppocrv4-det", 0.5), ("ppocrv4-rec", 0.3)])
def test_real_ppocrv4_default_int8_sweeps_every_point_and_meets_the_floor_on_onnxruntime(tmp_path, name,
                                                                                           min_int8_share):
    """PP-OCRv4's DB detector and SVTR recogniser: full int8 gives ~9.5 / ~11.8 dB on their outputs (every
    stage adds noise, the detector's sigmoid map amplifies it; no single point is to blame).  The default
    build's bounded sweep measures every point (a starved, wall-time-bound sweep measured 21-24 of 266 and
    ended at 19.5 dB), and the float budget counted in MACs lets the search keep the many cheap sensitive
    layers in float (measured: det 27.1 dB with 58 % of MACs int8, rec 26.6 dB with 37 %)."""
    from realbuild import build_real

    # the detector judged by its map's SQNR (task raw), the hard case for the search; as the suite builds it
    # (text-detect) its boxes are judged instead (tests/test_text_detect.py)
    res = build_real(name, "onnxruntime", tmp_path, task="raw")
    v = res.package.verification
    mp = res.package.quantization.to_json()["mixed_precision"]
    sens = mp["sensitivity"]
    assert sens["points_measured"] == sens["points"] and sens["bound"]["stopped_by"] is None
    assert sens["bound"]["spent_gmacs"] <= sens["bound"]["budget_gmacs"]
    assert mp["attempts"][0]["sqnr_db"] < 15.0
    assert v.passed and v.min_sqnr_db >= 25.0 and mp["int8_mac_share"] >= min_int8_share


@pytest.mark.slow
def test_real_ppocrv4_rec_on_openvino_descends_from_the_searched_mix_in_real_builds(tmp_path):
    """PP-OCRv4 rec on openvino: the search's mix (178 of 195 layers float, 43 % of MACs int8) beats its twin by
    2-3 dB, the calibrated twin names heavy 1×1 convolutions, and the real builds decide how many go back —
    measured on an AVX512-VNNI host: four together 23.4 dB, the first two 25.9 (kept), three 22.5; 67 % of MACs
    int8, 0.95× NNCF's default int8 of the model (`benchmarks/bench_int8_anchors.py`)."""
    from realbuild import build_real

    res = build_real("ppocrv4-rec", "openvino", tmp_path)
    v = res.package.verification
    mp = res.package.quantization.to_json()["mixed_precision"]
    after = mp["prune"]["after_pass"]
    assert v.passed and v.min_sqnr_db >= 25.0
    searched = next(a for a in mp["attempts"][1:] if a["passed"])
    assert after is not None and after["real_db"] >= 25.0
    if after["kept"]:  # what went back is the longest prefix of the candidates a real build held the floor with
        assert mp["float_layers"] < searched["float_layers"] and v.min_sqnr_db == pytest.approx(after["refined_db"], abs=0.01)
        held = max(t["returned"] for t in after["builds"] if t["passed"])
        assert after["returned_to_int8"] == after["candidates"][:held]
        assert all(not t["passed"] for t in after["builds"] if t["returned"] > held)
    else:
        assert after["why"] and mp["float_layers"] == searched["float_layers"]
