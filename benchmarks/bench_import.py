"""`import edgekit` wall time, against a bare interpreter start, in fresh processes.

Prints figures; asserts nothing.  Target: import edgekit ≤ 150 ms wall with no
ML runtime in sys.modules.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNTIMES = ("onnxruntime", "onnx", "openvino", "tensorflow", "ai_edge_litert", "coremltools", "tensorrt", "torch", "numpy")


def wall(code: str, n: int) -> list:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return times


def main(n: int = 15) -> None:
    bare = wall("pass", n)
    imp = wall("import edgekit", n)
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys, edgekit; print(sorted(m for m in {RUNTIMES!r} if m in sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"python -c pass            median {1e3 * statistics.median(bare):7.1f} ms")
    print(f"python -c 'import edgekit' median {1e3 * statistics.median(imp):7.1f} ms  (target ≤ 150 ms)")
    print(f"import edgekit alone       median {1e3 * (statistics.median(imp) - statistics.median(bare)):7.1f} ms over the bare start")
    print(f"heavy modules after import: {probe}  (target: [])")


if __name__ == "__main__":
    main()
