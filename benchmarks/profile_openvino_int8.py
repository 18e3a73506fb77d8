"""Where an openvino int8 package's time goes, per layer, against NNCF's default int8 of the same model.

    python benchmarks/profile_openvino_int8.py PKG.edgepkg --model ppocrv4-det [--runs 30] [--top 15]

Compiles the package's IR as the runner does (LATENCY hint, the float-parts
precision the package was verified in) and the anchor (``nncf.quantize``
defaults on ``openvino.convert_model`` of the source ONNX, compiled bare, as
``bench_int8_anchors.py`` builds it), both with ``PERF_COUNT``, runs them
interleaved, and sums OpenVINO's per-node ``real_time`` by category: weighted
layers by the precision of their kernel (``brgconv_avx512_amx_I8`` → int8,
``..._BF16`` → bf16, ``..._FP32`` → f32), Reorder, Convert, FakeQuantize left
unfused, reference kernels (``ref_*``), and the rest by precision.  Medians per
node over ``--runs`` inferences, so other processes on the host count less.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "samples" / "real_models"))

#: node types whose kernels carry weights (the runtime model's names)
WEIGHTED = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "ConvolutionBackpropData", "FullyConnected",
                      "MatMul", "Gemm"})


def _precision_of(exec_type: str) -> str:
    e = exec_type.upper()
    for tag, name in (("I8", "int8"), ("U8", "int8"), ("BF16", "bf16"), ("F16", "f16"), ("FP32", "f32"),
                      ("F32", "f32")):
        if e.endswith("_" + tag) or f"_{tag}_" in e:
            return name
    return "?"


def category(node_type: str, exec_type: str) -> str:
    """One bucket per kind of cost the profile can show."""
    if exec_type.lower().startswith("ref") or "_ref_" in exec_type.lower():
        return f"reference kernel ({node_type})"
    if node_type == "Reorder":
        return "Reorder"
    if node_type == "Convert":
        return "Convert"
    if node_type == "FakeQuantize":
        return "FakeQuantize (unfused)"
    if node_type in WEIGHTED:
        return f"{node_type} {_precision_of(exec_type)}"
    return f"other {_precision_of(exec_type)}"


def profile(compiled: Mapping[str, Any], feeds: Mapping[str, Mapping[str, np.ndarray]],
            runs: int) -> Dict[str, List[Dict[str, Any]]]:
    """Per model, per node: type, exec type, median real_time (µs) over ``runs`` inferences, the models
    interleaved run by run so that other processes on the host weigh on each alike."""
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    for k, r in requests.items():
        r.infer(dict(feeds[k]))
    times: Dict[str, Dict[str, List[float]]] = {k: defaultdict(list) for k in compiled}
    meta: Dict[str, Dict[str, Tuple[str, str]]] = {k: {} for k in compiled}
    for _ in range(runs):
        for k, request in requests.items():
            request.infer(dict(feeds[k]))
            for info in request.get_profiling_info():
                if str(info.status).endswith("EXECUTED"):
                    times[k][info.node_name].append(info.real_time.total_seconds() * 1e6)
                    meta[k][info.node_name] = (info.node_type, info.exec_type)
    return {k: [{"node": n, "type": meta[k][n][0], "exec": meta[k][n][1], "us": statistics.median(t)}
                for n, t in times[k].items()] for k in compiled}


def summarize(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = defaultdict(lambda: {"us": 0.0, "count": 0})
    for r in rows:
        c = out[category(r["type"], r["exec"])]
        c["us"] += r["us"]
        c["count"] += 1
    return dict(out)


def _package_ir(pkg: Path, tmp: Path) -> Tuple[Path, str]:
    with zipfile.ZipFile(pkg) as z:
        z.extract("model/model.xml", tmp)
        z.extract("model/model.bin", tmp)
        manifest = json.loads(z.read("manifest.json"))
    parts = manifest["target"]["details"].get("float_parts") or "f32"
    return tmp / "model" / "model.xml", parts


def main(argv: Any = None) -> int:
    import warnings

    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--model", required=True, help="the real-model suite name the package was built from")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--calib-dir", type=Path, default=Path("/tmp/edgekit-bench-anchors/calibration"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--static-anchor", action="store_true",
                    help="reshape the anchor to the feed's shapes (the benchmark compiles it as converted)")
    a = ap.parse_args(argv)

    import logging

    import nncf
    import onnx
    import openvino as ov

    import fetch as _fetch  # noqa: E402
    import suite  # noqa: E402
    from bench_int8_anchors import _prepare, _source_feed

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = next(m for m, _ in suite.int8_cases([a.model], ["openvino"]))
    calib = suite.CalibrationCache(a.calib_dir)
    data = _prepare(model, "openvino", calib)[0]
    feeds = [dict(f) for f in data.calibration.feeds]
    source = _fetch.fetch_one(model.name)
    proto = onnx.load(str(source), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in inits]
    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="edgekit-prof-") as tmp:
        xml, parts = _package_ir(a.package, Path(tmp))
        pkg = core.compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": parts,
                                                   "PERF_COUNT": True})
        q = nncf.quantize(ov.convert_model(str(source)), nncf.Dataset([_source_feed(f, inputs) for f in feeds]))
        x = feeds[0]
        if a.static_anchor:  # shape-agnostic execution adds per-node shape work the profile counts as node time
            q.reshape({name: v.shape for name, v in _source_feed(x, inputs).items()})
        anchor = core.compile_model(q, "CPU", {"PERF_COUNT": True})
        res = profile({"package": pkg, "anchor": anchor}, {"package": x, "anchor": _source_feed(x, inputs)}, a.runs)
    load = os.getloadavg()[0]
    report: Dict[str, Any] = {"model": a.model, "float_parts": parts, "load_avg": round(load, 2)}
    for name, rows in res.items():
        s = summarize(rows)
        total = sum(v["us"] for v in s.values())
        report[name] = {"total_us": round(total, 1), "categories": {k: {"us": round(v["us"], 1), "count": v["count"]}
                                                                    for k, v in sorted(s.items(), key=lambda kv: -kv[1]["us"])},
                        "top": sorted(rows, key=lambda r: -r["us"])[:a.top], "nodes": rows}
    print(f"{a.model}: package float parts {parts}, load {load:.2f}")
    for name in ("package", "anchor"):
        print(f"  {name}: {report[name]['total_us'] / 1e3:.2f} ms summed over nodes")
        for k, v in report[name]["categories"].items():
            print(f"    {k:<34} {v['us'] / 1e3:7.3f} ms  ({v['count']} nodes)")
    for name in ("package", "anchor"):
        print(f"  {name} top nodes:")
        for r in report[name]["top"][:a.top]:
            print(f"    {r['us'] / 1e3:6.3f} ms  {r['type']:<16} {r['exec']:<32} {r['node'][:70]}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
