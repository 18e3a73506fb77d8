"""int8 packages against each runtime's own default int8 of the same model (the anchors), side by side.

    python benchmarks/bench_int8_anchors.py                        # every real model × onnxruntime, openvino
    python benchmarks/bench_int8_anchors.py --models ppocrv4-det --targets openvino --json out.json

For every real model of the suite and each target, in one process:

* the edgekit int8 package (default settings: default floor, automatic mixed
  precision) and the edgekit fp32 package, loaded with ``edgekit.load`` and run
  with ``Model.infer`` (the fp32 package runs pinned to f32 on OpenVINO);
* the anchor, what a user gets from the runtime's own tools with defaults:
  openvino — ``nncf.quantize`` with its default preset on
  ``openvino.convert_model`` of the source ONNX, compiled bare
  (``core.compile_model(model, "CPU")``, no hint); onnxruntime —
  ``onnxruntime.quantization.quantize_static`` with its defaults on the source
  ONNX, run bare in an ``InferenceSession``.  Both are calibrated on the same
  calibration tensors the package was.

Accuracy: SQNR of the weakest checked part (task-aware, as verification judges
it) against the fp32 source on onnxruntime, on the build's held-out
verification inputs — the same inputs for both.  Speed: median latency of
interleaved rounds (``_timing.interleaved``), so every contender sees the same
machine load; ``int8/anchor`` ≤ 1.0 and ``int8/fp32`` ≤ 0.8 are the goals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "samples" / "real_models"))

import fetch as _fetch  # noqa: E402
import suite  # noqa: E402
from _timing import interleaved  # noqa: E402

Feeds = List[Dict[str, np.ndarray]]
RunFn = Callable[[Dict[str, np.ndarray]], List[np.ndarray]]


def _prepare(model: Any, target: str, calib: "suite.CalibrationCache") -> Any:
    """The build's own calibration and held-out verification tensors, and its scorer."""
    from edgekit.targets import int8_stage, stages

    kw = suite.build_kwargs(model, calib.get(model.calibration))
    req = stages.resolve_request(_fetch.fetch_one(model.name), target=target, precision="int8", **kw)
    src = stages.load(req)
    canon = stages.canonicalize_stage(req, src)
    checked = stages.check(req, canon)
    data = stages.calibrate(req, canon, checked)
    return data, int8_stage._scorer(checked, canon), lambda ref, cand: _decoded(ref, cand, checked, canon)


def _decoded(ref: Feeds, cand: Feeds, checked: Any, canon: Any) -> Any:
    """Recall / precision of the decoded boxes against fp32's (detectors, text detectors), else None."""
    from edgekit.quantize.parity import compare_outputs

    d = compare_outputs(ref, cand, task=checked.spec.task, postprocess=canon.postprocess).detection
    return None if d is None else {"recall": round(d.recall, 3), "precision": round(d.precision, 3),
                                   "reference_boxes": d.reference_detections}


def _as_package_outputs(out: Sequence[np.ndarray], source_names: Sequence[str],
                        names: Sequence[str]) -> Dict[str, np.ndarray]:
    """A source-model result under the package's output names: by name when they agree, else by position."""
    got = dict(zip(source_names, out))
    if all(n in got for n in names):
        return {n: np.asarray(got[n], dtype=np.float32) for n in names}
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, out)}


def _source_feed(feed: Mapping[str, np.ndarray], source_inputs: Sequence[str]) -> Dict[str, np.ndarray]:
    """The canonical feed under the source's input names (canonicalization may rename; order is kept)."""
    if all(n in feed for n in source_inputs):
        return {n: feed[n] for n in source_inputs}
    return {n: v for n, v in zip(source_inputs, feed.values())}


def _ort_anchor(source: Path, calib: Feeds, inputs: Sequence[str], work: Path) -> RunFn:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([_source_feed(f, inputs) for f in calib])

        def get_next(self) -> Any:
            return next(self.it, None)

    out = work / "anchor-ort-int8.onnx"
    quantize_static(str(source), str(out), Reader())  # every default: QDQ, int8 activations and weights, minmax
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def _ov_anchor(source: Path, calib: Feeds, inputs: Sequence[str]) -> RunFn:
    import logging

    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)
    ov_model = ov.convert_model(str(source))
    q = nncf.quantize(ov_model, nncf.Dataset([_source_feed(f, inputs) for f in calib]))  # default preset
    compiled = ov.Core().compile_model(q, "CPU")  # bare: no hint, OpenVINO's own precision choice
    request = compiled.create_infer_request()
    outs = compiled.outputs

    def run(feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        # the fastest bare path, as the package's runner does it: inputs wrapped without a copy, outputs
        # copied out once (infer(feed) alone copies both, and a 1 MB output twice cost rec's anchor 0.8 ms)
        res = request.infer(feed, share_inputs=True, share_outputs=True)
        return [np.array(res[o]) for o in outs]

    return run


def _fp32_reference(source: Path) -> RunFn:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def _cpu_timed(into: List[float], fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` that also appends its process CPU time to ``into``: other engineers share this host."""
    def call() -> None:
        c0 = time.process_time()
        fn()
        into.append(time.process_time() - c0)
    return call


def row(model: Any, target: str, out_dir: Path, calib: "suite.CalibrationCache", rounds: int,
        build_options: Mapping[str, str] = {}, repeat: int = 1) -> Dict[str, Any]:  # noqa: B006 - read only
    import onnx

    import edgekit
    from edgekit.targets.pipeline import build_package

    r: Dict[str, Any] = {"model": model.name, "target": target}
    source = _fetch.fetch_one(model.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, score, decoded = _prepare(model, target, calib)
        calib_feeds = [dict(f) for f in data.calibration.feeds]
        held_out = [dict(f) for f in (data.verification or data.calibration).feeds]
        pkgs = {}
        t0 = time.perf_counter()
        for precision in ("int8", "fp32"):
            res = build_package(source, target=target, precision=precision, name=model.name, allow_gate_failure=True,
                                output=out_dir / f"{model.name}-{target}-{precision}.edgepkg",
                                **{**suite.build_kwargs(model, calib.get(model.calibration)),
                                   **({"build_options": dict(build_options)} if build_options else {})})
            pkgs[precision] = res
        r["build_seconds"] = round(time.perf_counter() - t0, 1)
        mp = (pkgs["int8"].manifest.get("quantization") or {}).get("mixed_precision") or {}
        r.update(float_layers=mp.get("float_layers", 0), quantizable_layers=mp.get("quantizable_layers"),
                 int8_mac_share=mp.get("int8_mac_share", 1.0 if not mp else None),
                 first_build_db=(mp.get("attempts") or [{"sqnr_db": None}])[0]["sqnr_db"],
                 weakest=pkgs["int8"].manifest["verification"].get("weakest"),
                 detection=pkgs["int8"].manifest["verification"].get("detection"),
                 speed_check=(pkgs["int8"].manifest.get("quantization") or {}).get("speed"),
                 package_verified_db=pkgs["int8"].manifest["verification"]["min_sqnr_db"],
                 package_passed=pkgs["int8"].manifest["verification"]["passed"])
        src_proto = onnx.load(str(source), load_external_data=False)
        inits = {t.name for t in src_proto.graph.initializer}
        inputs = [i.name for i in src_proto.graph.input if i.name not in inits]
        outputs = [o.name for o in src_proto.graph.output]
        with tempfile.TemporaryDirectory(prefix="edgekit-anchor-") as tmp:
            t0 = time.perf_counter()
            anchor = _ov_anchor(source, calib_feeds, inputs) if target == "openvino" else \
                _ort_anchor(source, calib_feeds, inputs, Path(tmp))
            r["anchor_seconds"] = round(time.perf_counter() - t0, 1)
            ref_run = _fp32_reference(source)
            with edgekit.load(pkgs["int8"].path, require_signature=False) as m8, \
                    edgekit.load(pkgs["fp32"].path, require_signature=False) as m32:
                names = list(m8.infer(held_out[0]).keys())
                ref = [_as_package_outputs(ref_run(_source_feed(f, inputs)), outputs, names) for f in held_out]
                ours = [{k: np.asarray(v, dtype=np.float32) for k, v in m8.infer(f).items()} for f in held_out]
                theirs = [_as_package_outputs(anchor(_source_feed(f, inputs)), outputs, names) for f in held_out]
                r["sqnr_db"] = round(score(ref, ours), 2)
                r["anchor_sqnr_db"] = round(score(ref, theirs), 2)
                r["boxes"], r["anchor_boxes"] = decoded(ref, ours), decoded(ref, theirs)
                x = held_out[0]
                xs = _source_feed(x, inputs)
                blocks = []
                for _ in range(repeat):  # independent interleaved blocks: their spread is the noise
                    cpu: Dict[str, List[float]] = {"int8": [], "fp32": [], "anchor": []}
                    t = interleaved({"int8": _cpu_timed(cpu["int8"], lambda: m8.infer(x)),
                                     "fp32": _cpu_timed(cpu["fp32"], lambda: m32.infer(x)),
                                     "anchor": _cpu_timed(cpu["anchor"], lambda: anchor(xs))}, rounds=rounds, inner=3)
                    blocks.append((t, {k: float(np.median(v)) for k, v in cpu.items()}))
                load = os.getloadavg()[0]
    t = {k: float(np.median([b[0][k] for b in blocks])) for k in blocks[0][0]}
    c = {k: float(np.median([b[1][k] for b in blocks])) for k in blocks[0][1]}
    if repeat > 1:  # every block's ratios: one block's figure can be the host's, not the package's
        r["int8_vs_anchor_blocks"] = [round(b[0]["int8"] / b[0]["anchor"], 3) for b in blocks]
        r["int8_vs_anchor_cpu_blocks"] = [round(b[1]["int8"] / b[1]["anchor"], 3) for b in blocks]
    r.update(int8_ms=round(t["int8"] * 1e3, 3), fp32_ms=round(t["fp32"] * 1e3, 3),
             anchor_ms=round(t["anchor"] * 1e3, 3),
             int8_vs_fp32=round(t["int8"] / t["fp32"], 3), int8_vs_anchor=round(t["int8"] / t["anchor"], 3),
             int8_cpu_ms=round(c["int8"] * 1e3, 3), fp32_cpu_ms=round(c["fp32"] * 1e3, 3),
             anchor_cpu_ms=round(c["anchor"] * 1e3, 3), int8_vs_fp32_cpu=round(c["int8"] / c["fp32"], 3),
             int8_vs_anchor_cpu=round(c["int8"] / c["anchor"], 3), load_avg=round(load, 2),
             float_parts=pkgs["int8"].manifest["target"]["details"].get("float_parts"))
    if repeat > 1:  # the headline is the median block: each block is one interleaved comparison
        r["int8_vs_anchor"] = round(float(np.median(r["int8_vs_anchor_blocks"])), 3)
        r["int8_vs_anchor_cpu"] = round(float(np.median(r["int8_vs_anchor_cpu_blocks"])), 3)
    return r


def fmt(r: Dict[str, Any]) -> str:
    head = f"{r['model']:<20} {r['target']:<12}"
    if "error" in r:
        return f"{head} FAILED {r['error']}"
    share = r.get("int8_mac_share")
    first = r.get("first_build_db")
    return (f"{head} verified {first if first is not None else r['package_verified_db']:.1f} → "
            f"{r['package_verified_db']:.1f} dB {'pass' if r['package_passed'] else 'MISS'} | "
            f"held-out int8 {r['sqnr_db']:6.1f} dB vs anchor {r['anchor_sqnr_db']:6.1f} dB | "
            f"int8 {r['int8_ms']:.2f} ms, anchor {r['anchor_ms']:.2f} ms (×{r['int8_vs_anchor']:.2f}), "
            f"fp32 {r['fp32_ms']:.2f} ms (int8/fp32 ×{r['int8_vs_fp32']:.2f}) | CPU time int8/anchor "
            f"×{r['int8_vs_anchor_cpu']:.2f}, int8/fp32 ×{r['int8_vs_fp32_cpu']:.2f}, load {r['load_avg']} | "
            f"{r['float_layers']}/{r.get('quantizable_layers') or '-'} float"
            + (f", {100 * share:.1f}% MACs int8" if share is not None else "")
            + (f" | boxes vs fp32 ({r['boxes']['reference_boxes']}): recall/precision int8 {r['boxes']['recall']:.3f}/"
               f"{r['boxes']['precision']:.3f}, anchor {r['anchor_boxes']['recall']:.3f}/{r['anchor_boxes']['precision']:.3f}"
               if r.get("boxes") else "")
            + (f" | blocks int8/anchor CPU {r['int8_vs_anchor_cpu_blocks']}, wall {r['int8_vs_anchor_blocks']}"
               if r.get("int8_vs_anchor_blocks") else ""))


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--targets", nargs="*", default=["onnxruntime", "openvino"])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/edgekit-bench-anchors"))
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--repeat", type=int, default=1,
                    help="independent timing blocks of --rounds each; the figures are their medians, and every "
                         "block's ratio is printed")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--build-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a target build option for the packages (e.g. int8_overflow_fix=nncf); repeatable")
    a = ap.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    calib = suite.CalibrationCache(a.out_dir / "calibration")
    rows: List[Dict[str, Any]] = []
    for m, t in suite.int8_cases(a.models, a.targets):
        try:
            r = row(m, t, a.out_dir, calib, a.rounds, dict(o.split("=", 1) for o in a.build_option), a.repeat)
        except Exception as exc:  # noqa: BLE001 - one failed row must not lose the others
            r = {"model": m.name, "target": t, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        rows.append(r)
        print(fmt(r), flush=True)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
