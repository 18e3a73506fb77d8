"""Cold-start cost of a package on a device, against a bare onnxruntime session, in fresh processes.

    python benchmarks/bench_load.py [--rounds 15] [--model cnn-0.2MB|mlp-12MB] [--json]

Devices restart services often, so what counts is a *fresh process*: imports,
opening the package, the session and the first inference.  Each contender
runs as its own subprocess, rounds interleaved (order reversed every other
round), and reports the median of the time measured inside the process from
the first line of the script to the end of the first inference:

* ``bare``            ``import onnxruntime`` + ``InferenceSession(model.onnx)`` + first ``run``
* ``edgekit cached``  ``import edgekit`` + ``edgekit.load(pkg)`` (unpack cache warm) + first ``infer``
* ``edgekit first``   the same with an empty cache (unpack + verify every file)
* ``signed cached``   ``edgekit.load(pkg, trusted_keys=[KEY.pub])``, cache warm (verified once)
* ``signed first``    the same with an empty cache: imports ``cryptography`` and verifies ed25519

Beside the wall time, each process reports its CPU time over the same span
(``time.process_time``, all threads): what the start costs the device, and a
figure that stays steady when other work shares the host's cores, where wall
times swing.  Ratios against ``bare`` are printed per package (a 0.2 MB CNN and a 12 MB
MLP, both built here); goals: edgekit cached ≤ 1.3×, signature verification
≤ 5 % of the load.  Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent

BARE = """
import time; t0 = time.perf_counter(); c0 = time.process_time()
import sys
import numpy as np
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
s.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)})
print(time.perf_counter() - t0, time.process_time() - c0)
"""

EDGEKIT = """
import time; t0 = time.perf_counter(); c0 = time.process_time()
import sys
import numpy as np
import edgekit
keys = [sys.argv[2]] if len(sys.argv) > 2 else None
m = edgekit.load(sys.argv[1], trusted_keys=keys)
t = m.manifest.inputs[0]
m.infer({t.name: np.zeros(t.shape, t.dtype)})
print(time.perf_counter() - t0, time.process_time() - c0)
"""


PHASES = """
import time; t0 = time.perf_counter()
import sys, json
import numpy as np
import onnxruntime
t1 = time.perf_counter()
import edgekit.model
from edgekit.package import open_package
from edgekit.signing import PublicKey, TrustPolicy
t2 = time.perf_counter()
policy = TrustPolicy((PublicKey.load(sys.argv[3]),), True)
p = open_package(sys.argv[1]); p.close()
t3 = time.perf_counter()
s = open_package(sys.argv[2], trust=policy); s.close()  # cache warm: the verified signature is remembered
t4 = time.perf_counter()
from cryptography.hazmat.primitives.asymmetric import ed25519  # what a first load of a signed package adds
t5 = time.perf_counter()
from edgekit.package import INTEGRITY
from edgekit.signing import message, parse_signatures
import zipfile
with zipfile.ZipFile(sys.argv[2]) as zf:
    rec = zf.read(INTEGRITY); sig = json.loads(zf.read("signature.json"))
_kid, raw, _t = parse_signatures(sig, "bench")[0]
t6 = time.perf_counter()
assert policy.keys[0].verify(raw, message(rec))
t7 = time.perf_counter()
from edgekit.runners import RUNNERS
p = open_package(sys.argv[1])
cls = RUNNERS.get(p.manifest.runtime)
t8 = time.perf_counter()
r = cls(p.root, p.manifest)
t = p.manifest.inputs[0]
r.infer({t.name: np.zeros(t.shape, t.dtype)})
t9 = time.perf_counter()
print(json.dumps({"numpy+onnxruntime import": t1 - t0, "edgekit import": t2 - t1, "open (cached)": t3 - t2,
                  "open signed (cached, no crypto)": t4 - t3, "cryptography import": t5 - t4,
                  "ed25519 verify": t7 - t6, "runner lookup": t8 - t7, "session + first infer": t9 - t8}))
"""


def _run(code: str, args: List[str], env: Dict[str, str]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of the process) from the script's first line to its first inference."""
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _models(work: Path) -> Dict[str, Path]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    small = ROOT / "targets" / "data" / "fashion_mnist_cnn.onnx"
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((784, 3072)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3072, 128)).astype(np.float32) * 0.01, "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp12mb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    big = work / "mlp12mb.onnx"
    onnx.save(model, big)
    return {"cnn-0.2MB": small, "mlp-12MB": big}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--model", action="append", choices=("cnn-0.2MB", "mlp-12MB"),
                    help="measure only this package (repeatable; default both)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import edgekit
    from edgekit.package import sign_package
    from edgekit.signing import keygen

    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-load-"))
    try:
        priv, pub = keygen(work / "key")
        # byte-compiled like an installed package (pip writes .pyc files; site-packages' onnxruntime has them):
        # with PYTHONDONTWRITEBYTECODE set, edgekit's own modules would be recompiled in every fresh process
        env = dict(os.environ, EDGEKIT_CACHE_DIR=str(work / "cache"), PYTHONPATH=str(ROOT),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPYCACHEPREFIX=str(work / "pyc"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("EDGEKIT_TRUSTED_KEYS", None)
        env.pop("EDGEKIT_REQUIRE_SIGNATURE", None)
        cold_env = dict(env)
        report = {}
        for label, onnx_path in _models(work).items():
            if args.model and label not in args.model:
                continue
            plain = edgekit.build(onnx_path, target="onnxruntime", output=work / f"{label}.edgepkg")
            signed = work / f"{label}-signed.edgepkg"
            shutil.copy(plain, signed)
            sign_package(signed, priv).close()
            bare_model = work / f"{label}-bare.onnx"
            import zipfile

            with zipfile.ZipFile(plain) as zf:  # the very file the package runs
                entry = json.loads(zf.read("manifest.json"))["artifact"]["entry"]
                bare_model.write_bytes(zf.read(entry))

            def cold(pkg: Path, keys: List[str]) -> Tuple[float, float]:
                shutil.rmtree(work / "cache", ignore_errors=True)
                return _run(EDGEKIT, [str(pkg), *keys], cold_env)

            contenders = {
                "bare": lambda: _run(BARE, [str(bare_model)], env),
                "edgekit cached": lambda: _run(EDGEKIT, [str(plain)], env),
                "edgekit first": lambda: cold(plain, []),
                "signed cached": lambda: _run(EDGEKIT, [str(signed), str(pub)], env),
                "signed first": lambda: cold(signed, [str(pub)]),
            }
            _run(EDGEKIT, [str(plain)], env)  # warm the cache and the OS file cache
            _run(EDGEKIT, [str(signed), str(pub)], env)
            times: Dict[str, List[Tuple[float, float]]] = {k: [] for k in contenders}
            order = list(contenders.items())
            for r in range(args.rounds):
                for name, fn in (order if r % 2 == 0 else order[::-1]):
                    times[name].append(fn())
                # the cold contenders emptied the cache: warm it again for the cached ones
                _run(EDGEKIT, [str(plain)], env)
                _run(EDGEKIT, [str(signed), str(pub)], env)
            med = {k: statistics.median(w for w, _c in v) for k, v in times.items()}
            # CPU time of the process: what the start costs the device, steadier than wall time on a shared host
            cpu = {k: statistics.median(c for _w, c in v) for k, v in times.items()}
            phases: Dict[str, List[float]] = {}
            for _ in range(args.rounds):
                out = subprocess.run([sys.executable, "-c", PHASES, str(plain), str(signed), str(pub)], check=True,
                                     capture_output=True, text=True, env=env).stdout
                for k, v in json.loads(out.strip().splitlines()[-1]).items():
                    phases.setdefault(k, []).append(v)
            ph = {k: statistics.median(v) for k, v in phases.items()}
            report[label] = {
                "package_bytes": plain.stat().st_size,
                "median_ms": {k: round(v * 1e3, 1) for k, v in med.items()},
                "ratio_vs_bare": {k: round(v / med["bare"], 2) for k, v in med.items()},
                "cpu_median_ms": {k: round(v * 1e3, 1) for k, v in cpu.items()},
                "cpu_ratio_vs_bare": {k: round(v / cpu["bare"], 2) for k, v in cpu.items()},
                "signature_share_cached": round((med["signed cached"] - med["edgekit cached"]) / med["signed cached"], 3),
                "signature_share_first": round((med["signed first"] - med["edgekit first"]) / med["signed first"], 3),
                "phases_ms": {k: round(v * 1e3, 2) for k, v in ph.items()},
                # the crypto a signed first load adds (import + one ed25519 verify), against that load's own time
                "verify_cost_share_first": round((ph["cryptography import"] + ph["ed25519 verify"]) / med["signed first"], 3),
                "verify_cost_share_cached": round(max(0.0, ph["open signed (cached, no crypto)"] - ph["open (cached)"])
                                                  / med["signed cached"], 4),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for label, r in report.items():
        print(f"{label} ({r['package_bytes'] / 1e6:.1f} MB package), fresh process to first inference, median of {args.rounds}:")
        for k, v in r["median_ms"].items():
            print(f"  {k:<15} {v:8.1f} ms   {r['ratio_vs_bare'][k]:5.2f}× bare    CPU {r['cpu_median_ms'][k]:8.1f} ms   "
                  f"{r['cpu_ratio_vs_bare'][k]:5.2f}× bare")
        print(f"  signed − unsigned (process level, noisy): {100 * r['signature_share_cached']:+.1f}% of a cached load, "
              f"{100 * r['signature_share_first']:+.1f}% of a first load")
        print(f"  signature verification measured in process: {100 * r['verify_cost_share_cached']:.2f}% of a cached load "
              f"(no crypto: the verified signature is remembered per digest), "
              f"{100 * r['verify_cost_share_first']:.1f}% of a first load (cryptography import + one ed25519 verify; goal ≤ 5%)")
        print("  phases (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases_ms"].items()))


if __name__ == "__main__":
    main()
