"""`import edgekit` and what `edgekit.load` imports, against a bare interpreter start, in fresh processes.

    python benchmarks/bench_import.py [--rounds 15]

Three interleaved contenders, each its own process (median of ``--rounds``,
wall and CPU time of the whole process):

* ``python -c pass``
* ``import edgekit``                     the package itself (the API resolves lazily)
* ``numpy + edgekit.load resolved``      ``import numpy`` then ``edgekit.load``: everything loading a
  package imports before the runtime (manifest model, package reader, cache, pre/postprocessing,
  runner registry), against ``import numpy`` alone

and the modules the second one leaves loaded that a device start should not
pay for (an image library, OpenSSL's hashlib, ML runtimes, the build side).
Prints figures; asserts nothing.  Target: import edgekit ≤ 150 ms wall with
no ML runtime in sys.modules.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

RUNTIMES = ("onnxruntime", "onnx", "openvino", "tensorflow", "ai_edge_litert", "coremltools", "tensorrt", "torch", "numpy")
#: modules a load of a package should not import (decoding images, hashing files and building happen elsewhere)
NOT_ON_LOAD = ("PIL", "hashlib", "_hashlib", "difflib", "cryptography", "onnx", "edgekit.targets", "edgekit.quantize",
               "edgekit._target_details")

CONTENDERS = {
    "python -c pass": "pass",
    "import edgekit": "import edgekit",
    "import numpy": "import numpy",
    "numpy + edgekit.load resolved": "import numpy, edgekit; edgekit.load",
}


def _run(body: str) -> Tuple[float, float]:
    """(wall seconds of the process, CPU seconds of the whole process)."""
    import time

    code = f"import resource; {body}; r = resource.getrusage(resource.RUSAGE_SELF); print(r.ru_utime + r.ru_stime)"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    times: Dict[str, List[Tuple[float, float]]] = {k: [] for k in CONTENDERS}
    order = list(CONTENDERS.items())
    for r in range(args.rounds):
        for name, body in (order if r % 2 == 0 else order[::-1]):
            times[name].append(_run(body))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    for name, (w, c) in med.items():
        print(f"{name:<32} median wall {1e3 * w:7.1f} ms   CPU {1e3 * c:7.1f} ms")
    print(f"import edgekit alone           {1e3 * (med['import edgekit'][0] - med['python -c pass'][0]):7.1f} ms wall over "
          "the bare start  (target ≤ 150 ms)")
    print(f"edgekit.load's imports         {1e3 * (med['numpy + edgekit.load resolved'][1] - med['import numpy'][1]):7.1f} ms"
          " CPU over import numpy")
    probe = ("import sys, numpy, edgekit; edgekit.load; "
             f"print(sorted(m for m in {RUNTIMES + NOT_ON_LOAD!r} if m in sys.modules))")
    env = dict(os.environ)
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env).stdout.strip()
    print(f"heavy modules after edgekit.load resolves: {loaded}  (target: ['numpy'])")


if __name__ == "__main__":
    main()
