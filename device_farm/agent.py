"""The agentless farm runner: this one file is pushed with every job and run by the device's Python.

It needs nothing installed on the device beyond the edgekit runtime (numpy + the package's runtime),
and refuses to run against another edgekit version than the one it was shipped with (``PINNED``,
rewritten by the host when it pushes the script), so a result always says which code produced it.

Modes::

    python agent.py probe                       # one JSON document: versions, fingerprint, free disk, stale runner
    python agent.py run --package P --out DIR [--scenario single-stream|offline] [--min-duration S]
                        [--min-queries N] [--warmup N] [--loadgen auto|on|off] [--health]
                        [--data SAMPLES.npz] [--fingerprint full|volatile]

``--data``: after the timed run, every sample of the pushed .npz goes through the package once and
the raw outputs land in ``DIR/outputs.npz`` (sha256 in result.json); the host compares them with
fp32.  ``--fingerprint volatile``: only governor, power mode and temperatures are read (the host
holds the rest from this connection's probe), which spares each job the runtime-version scan.
The process ends with ``os._exit`` once result.json is synced, skipping the interpreter teardown.

``run`` benchmarks the package in MLPerf LoadGen terms: SingleStream (one query at a time; latency
percentiles p50/p90/p95/p99/p99.9 over at least ``min_duration`` seconds *and* ``min_queries``
queries, after ``warmup`` untimed queries) or Offline (every query issued at once; throughput).
With ``mlcommons-loadgen`` importable (``mlperf_loadgen``) LoadGen drives the queries and its
detail log supplies the figures; otherwise this file's own implementation produces the same
field names (``result_90.00_percentile_latency_ns`` ...).  Stdout carries only JSON lines:
heartbeats (``{"event": "heartbeat", ...}``) every ``HEARTBEAT_S`` from a thread, so a hung or
stopped process goes quiet, and a final ``{"event": "done", ...}``.  ``DIR/result.json`` is
written to a temporary name, fsynced, then renamed: a reader sees all of it or nothing.

Exit codes: 0 a result was written (status "complete" or "failed" -- the package's fault);
3 the device is not fit (version mismatch, missing runtime); anything else is a crash.

Python 3.9 syntax: this runs on the devices.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

PINNED = "@EDGEKIT_VERSION@"  # the host writes its edgekit version here before pushing
HEARTBEAT_S = 0.2
PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)
EXIT_DEVICE = 3


# ----------------------------------------------------------------- output
class Heartbeat:
    """JSON lines on stdout: a heartbeat every HEARTBEAT_S from a daemon thread, plus events."""

    def __init__(self) -> None:
        self.phase = "start"
        self.queries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def emit(self, doc: Dict[str, Any]) -> None:
        line = json.dumps(doc)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.emit({"event": "heartbeat", "t": time.time(), "phase": self.phase, "queries": self.queries})

    def __enter__(self) -> "Heartbeat":
        self.emit({"event": "heartbeat", "t": time.time(), "phase": self.phase, "queries": 0, "pid": os.getpid()})
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def write_atomic(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """``write(file)`` to a temporary name, fsync, rename: a reader sees all of the file or none of it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # the rename itself survives a power cut only once the directory is synced
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_json_atomic(path: str, doc: Dict[str, Any]) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(doc).encode("utf-8")))


# ----------------------------------------------------------------- fingerprint
def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _dist_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


RUNTIME_DISTS = ("numpy", "onnxruntime", "onnxruntime-gpu", "onnxruntime-qnn", "openvino", "ai-edge-litert",
                 "tflite-runtime", "tensorrt", "coremltools", "mlcommons-loadgen")


def _cpu_model() -> Optional[str]:
    text = _read("/proc/cpuinfo") or ""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "cpu model", "model"):  # x86, then Arm boards' spellings
        if found.get(key):
            return found[key]
    return platform.processor() or None


def _power_mode() -> Optional[str]:
    """Jetson nvpmodel mode when readable (its status file), else None."""
    for p in ("/var/lib/nvpmodel/status",):
        text = _read(p)
        if text:
            return text.splitlines()[0]
    return None


def _temperatures() -> Dict[str, float]:
    temps: Dict[str, float] = {}
    base = "/sys/class/thermal"
    try:
        zones = sorted(os.listdir(base))
    except OSError:
        return temps
    for z in zones:
        if not z.startswith("thermal_zone"):
            continue
        raw = _read(os.path.join(base, z, "temp"))
        kind = _read(os.path.join(base, z, "type")) or z
        try:
            temps[kind] = int(raw) / 1000.0 if raw is not None else None  # type: ignore[assignment]
        except ValueError:
            continue
    return {k: v for k, v in temps.items() if v is not None}


VOLATILE = ("cpu_governor", "power_mode", "temperatures_c")  # re-read for every job; the rest is per connection


def stable_fingerprint() -> Dict[str, Any]:
    """The parts that change only with a reinstall or an upgrade: read once per connection (the probe).
    The runtime versions cost most of it (importlib.metadata scans every site directory)."""
    import edgekit

    return {
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "edgekit": edgekit.__version__,
        "runtimes": {n: v for n in RUNTIME_DISTS for v in [_dist_version(n)] if v},
    }


def volatile_state() -> Dict[str, Any]:
    """What may change between two jobs on one connection (a few sysfs reads)."""
    return {"cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "power_mode": _power_mode(), "temperatures_c": _temperatures()}


def fingerprint_of(stable: Dict[str, Any], volatile: Dict[str, Any]) -> Dict[str, Any]:
    """What makes two latency figures comparable; ``id`` hashes everything but the temperatures."""
    keyed = {k: v for k, v in stable.items() if k not in ("id",) + VOLATILE}
    keyed.update(cpu_governor=volatile.get("cpu_governor"), power_mode=volatile.get("power_mode"))
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": digest, **keyed, "temperatures_c": volatile.get("temperatures_c") or {}}


def fingerprint() -> Dict[str, Any]:
    return fingerprint_of(stable_fingerprint(), volatile_state())


# ----------------------------------------------------------------- LoadGen-shaped results
def percentile_ns(sorted_ns: List[int], p: float) -> int:
    """LoadGen's rule: the sample at index floor(p/100 * n) of the sorted latencies (clamped)."""
    i = min(len(sorted_ns) - 1, int(p / 100.0 * len(sorted_ns)))
    return int(sorted_ns[i])


def pct_key(p: float) -> str:
    return f"result_{p:.2f}_percentile_latency_ns"


def latency_fields(lat_ns: List[int]) -> Dict[str, Any]:
    s = sorted(lat_ns)
    out: Dict[str, Any] = {
        "result_min_latency_ns": int(s[0]),
        "result_max_latency_ns": int(s[-1]),
        "result_mean_latency_ns": int(sum(s) / len(s)),
    }
    for p in PERCENTILES:
        out[pct_key(p)] = percentile_ns(s, p)
    return out


def validity(count: int, dur_ns: int, min_duration_s: float, min_queries: int) -> Dict[str, Any]:
    dur_ok = dur_ns >= int(min_duration_s * 1e9)
    q_ok = count >= min_queries
    return {"result_validity": "VALID" if dur_ok and q_ok else "INVALID", "result_min_duration_met": dur_ok,
            "result_min_queries_met": q_ok, "result_query_count": count, "result_duration_ns": int(dur_ns)}


def own_single_stream(issue: Callable[[], None], *, min_duration_s: float, min_queries: int,
                      hb: Heartbeat) -> Dict[str, Any]:
    """SingleStream without LoadGen: next query as soon as the previous one completes."""
    clock = time.perf_counter_ns
    lat: List[int] = []
    start = clock()
    end_ns = start + int(min_duration_s * 1e9)
    while len(lat) < min_queries or clock() < end_ns:
        t0 = clock()
        issue()
        lat.append(clock() - t0)
        hb.queries = len(lat)
    dur = clock() - start
    doc = validity(len(lat), dur, min_duration_s, min_queries)
    doc["result_qps_with_loadgen_overhead"] = len(lat) / (dur / 1e9) if dur else None
    doc["result_qps_without_loadgen_overhead"] = len(lat) / (sum(lat) / 1e9) if sum(lat) else None
    doc.update(latency_fields(lat))
    doc["latencies_ns"] = lat
    return doc


def own_offline(issue: Callable[[], None], *, min_duration_s: float, min_queries: int,
                hb: Heartbeat) -> Dict[str, Any]:
    """Offline without LoadGen: the whole query set is issued at once and served back to back;
    throughput = samples / (last completion - issue time).  The count is sized like LoadGen's:
    enough queries to fill min_duration at the rate seen in warm-up, and at least min_queries."""
    clock = time.perf_counter_ns
    t0 = clock()
    issue()
    one = max(clock() - t0, 1)
    n = max(min_queries, int(math.ceil(min_duration_s * 1e9 / one)))
    lat: List[int] = []
    start = clock()
    for _ in range(n):
        issue()
        lat.append(clock() - start)  # completion time since the issue of the set, as LoadGen logs it
        hb.queries = len(lat)
    dur = clock() - start
    doc = validity(n, dur, min_duration_s, min_queries)
    doc["result_samples_per_second"] = n / (dur / 1e9) if dur else None
    per = [b - a for a, b in zip([0] + lat[:-1], lat)]
    doc.update(latency_fields(per))
    doc["latencies_ns"] = per
    return doc


def _parse_loadgen_detail(outdir: str) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    with open(os.path.join(outdir, "mlperf_log_detail.txt"), "r", encoding="utf-8") as f:
        for line in f:
            if not line.startswith(":::MLLOG"):
                continue
            rec = json.loads(line[len(":::MLLOG"):])
            fields[rec.get("key")] = rec.get("value")
    return fields


def loadgen_run(lg: Any, issue: Callable[[], None], *, scenario: str, min_duration_s: float,
                min_queries: int, outdir: str, hb: Heartbeat, expected_ns: int) -> Dict[str, Any]:
    """Drive the queries with MLPerf LoadGen (PerformanceOnly) and read its detail log."""
    lat: List[int] = []
    span = [0, 0]  # first issue, latest completion: the timed run as the SUT saw it
    clock = time.perf_counter_ns

    def issue_queries(samples: Any) -> None:
        responses = []
        for s in samples:
            t0 = clock()
            issue()
            t1 = clock()
            lat.append(t1 - t0)
            span[0] = span[0] or t0
            span[1] = t1
            hb.queries = len(lat)
            responses.append(lg.QuerySampleResponse(s.id, 0, 0))
        lg.QuerySamplesComplete(responses)

    settings = lg.TestSettings()
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.min_query_count = int(min_queries)
    if scenario == "offline":
        settings.scenario = lg.TestScenario.Offline
        settings.offline_expected_qps = max(1.0, 1e9 / max(expected_ns, 1))
    else:
        settings.scenario = lg.TestScenario.SingleStream
        settings.single_stream_expected_latency_ns = max(1, int(expected_ns))
    log = lg.LogSettings()
    log.log_output.outdir = outdir
    log.log_output.copy_summary_to_stdout = False  # stdout is JSON lines only
    log.log_output.copy_detail_to_stdout = False
    log.enable_trace = False
    sut = lg.ConstructSUT(issue_queries, lambda: None)
    qsl = lg.ConstructQSL(1024, 1024, lambda idx: None, lambda idx: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    detail = _parse_loadgen_detail(outdir)
    keep = {k: v for k, v in detail.items() if isinstance(k, str) and k.startswith("result_")}
    keep["loadgen_version"] = detail.get("loadgen_version")
    # LoadGen logs no duration; the farm's overhead is measured beyond it, so say how long the queries ran
    keep.setdefault("result_duration_ns", span[1] - span[0] if span[0] else None)
    keep["latencies_ns"] = lat  # as the SUT saw them (the distributions in the report)
    return keep


# ----------------------------------------------------------------- modes
def _import_loadgen(mode: str) -> Any:
    if mode == "off":
        return None
    try:
        import mlperf_loadgen  # type: ignore[import-not-found]

        return mlperf_loadgen
    except ImportError:
        if mode == "on":
            raise
        return None


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None


def kill_stale() -> List[int]:
    """Runners left by a dropped link (a pid file, no result.json, still alive): one job per device."""
    killed: List[int] = []
    try:
        names = os.listdir("jobs")
    except OSError:
        return killed
    import signal

    for name in names:
        d = os.path.join("jobs", name)
        pid_text = _read(os.path.join(d, "pid"))
        if not pid_text or os.path.exists(os.path.join(d, "result.json")) or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        cmdline = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
        if " run " not in f" {cmdline} " or "--out" not in cmdline:
            continue  # the pid was reused by something else (or /proc is absent): leave it alone
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            continue
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or "Z" in (_read(f"/proc/{pid}/stat") or "").split(")")[-1][:3]:
                break
            time.sleep(0.05)
    return killed


def cmd_probe(args: argparse.Namespace) -> int:
    doc: Dict[str, Any] = {"event": "probe", "python": platform.python_version(), "pinned": PINNED,
                           "free_bytes": _free_bytes(".")}
    if args.kill_stale:
        doc["killed_stale_runners"] = kill_stale()
    try:
        import edgekit
    except ImportError as exc:
        doc.update(ok=False, reason=f"edgekit does not import with {sys.executable}: {exc}")
        print(json.dumps(doc))
        return EXIT_DEVICE
    doc["edgekit"] = edgekit.__version__
    doc["fingerprint"] = fingerprint()
    doc["loadgen"] = _dist_version("mlcommons-loadgen") if _import_loadgen("auto") is not None else None
    doc["ok"] = PINNED in ("@EDGEKIT_VERSION@", edgekit.__version__)
    if not doc["ok"]:
        doc["reason"] = f"the device has edgekit {edgekit.__version__}, the farm runs {PINNED}: install edgekit=={PINNED} there"
    print(json.dumps(doc))
    return 0 if doc["ok"] else EXIT_DEVICE


def accuracy_pass(model: Any, data: str, out_dir: str, hb: Heartbeat) -> Dict[str, Any]:
    """Every sample of the pushed ``.npz`` (input name -> samples stacked on axis 0, already in the
    package's input dtypes) through the package once; the raw outputs go to ``OUT/outputs.npz``
    (never pickled) with their sha256 in result.json.  The host compares them with fp32."""
    import numpy as np

    try:
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # the host pushed a valid file: unreadable here is the device's storage
        raise OSError(f"pushed data {data} is unreadable on the device: {exc}") from None
    n = min(len(a) for a in arrays.values()) if arrays else 0
    outs: Dict[str, List[Any]] = {}
    for i in range(n):
        for name, y in model.infer({k: a[i] for k, a in arrays.items()}).items():
            outs.setdefault(name, []).append(np.asarray(y))
        hb.queries = i + 1
    path = os.path.join(out_dir, "outputs.npz")
    write_atomic(path, lambda f: np.savez(f, **{k: np.stack(v) for k, v in outs.items()}))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return {"samples": n, "outputs_file": "outputs.npz", "outputs_sha256": h.hexdigest()}


def _classify(exc: BaseException) -> str:
    """Whose fault: a missing runtime is the device's; anything the package or model raised is the model's."""
    from edgekit.errors import RuntimeMissingError

    return "device" if isinstance(exc, (RuntimeMissingError, MemoryError, OSError)) and \
        not exc.__class__.__module__.startswith("edgekit.package") else "model"


def cmd_run(args: argparse.Namespace) -> int:
    os.makedirs(args.out, exist_ok=True)
    result_path = os.path.join(args.out, "result.json")
    with open(os.path.join(args.out, "pid"), "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    with Heartbeat() as hb:
        import edgekit

        if PINNED not in ("@EDGEKIT_VERSION@", edgekit.__version__):
            hb.emit({"event": "error", "fault": "device",
                     "error": f"device edgekit {edgekit.__version__} != pinned {PINNED}"})
            return EXIT_DEVICE
        from edgekit.bench import PeakMemory, synthetic_feed

        doc: Dict[str, Any] = {"schema": "edgekit.farm.result/1", "edgekit_version": edgekit.__version__,
                               "scenario": args.scenario, "health_check": bool(args.health),
                               "package_sha256": args.sha256, "started": time.time()}
        if args.fingerprint == "volatile":  # the host holds the rest from this connection's probe
            doc["fingerprint_volatile"] = volatile_state()
        else:
            doc["fingerprint"] = fingerprint()
        mem = PeakMemory()
        phase = "load"
        try:
            hb.phase = phase
            t0 = time.perf_counter()
            model = edgekit.load(args.package)
            doc["load_ms"] = (time.perf_counter() - t0) * 1e3
            doc["model"] = {"name": model.manifest.name, "target": model.manifest.target,
                            "precision": getattr(model.manifest.precision, "value", str(model.manifest.precision)),
                            "runtime": model.runner.name}
            feed = synthetic_feed(model.manifest.inputs)
            phase = hb.phase = "first"
            t0 = time.perf_counter_ns()
            model.infer(feed)
            first = time.perf_counter_ns() - t0
            doc["first_inference_ms"] = first / 1e6
            if args.health:
                doc["status"] = "complete"
            else:
                phase = hb.phase = "warmup"
                warm_ns = []
                for _ in range(args.warmup):
                    t0 = time.perf_counter_ns()
                    model.infer(feed)
                    warm_ns.append(time.perf_counter_ns() - t0)
                # LoadGen sizes its query set from the expected latency: the warm-up median, not the first call
                warm = sorted(warm_ns)[len(warm_ns) // 2] if warm_ns else first
                phase = hb.phase = "run"
                lg = _import_loadgen(args.loadgen)
                issue = lambda: model.infer(feed)  # noqa: E731
                if lg is not None:
                    lg_dir = os.path.join(args.out, "loadgen")
                    os.makedirs(lg_dir, exist_ok=True)
                    res = loadgen_run(lg, issue, scenario=args.scenario, min_duration_s=args.min_duration,
                                      min_queries=args.min_queries, outdir=lg_dir, hb=hb, expected_ns=int(warm))
                    doc["loadgen"] = "mlcommons-loadgen " + str(res.pop("loadgen_version", "") or "")
                else:
                    run = own_offline if args.scenario == "offline" else own_single_stream
                    res = run(issue, min_duration_s=args.min_duration, min_queries=args.min_queries, hb=hb)
                    doc["loadgen"] = "edgekit"
                doc["settings"] = {"min_duration_ms": int(args.min_duration * 1000),
                                   "min_query_count": args.min_queries, "warmup_queries": args.warmup}
                doc["results"] = res
                if args.data:
                    phase = hb.phase = "accuracy"
                    doc["accuracy"] = accuracy_pass(model, args.data, args.out, hb)
                doc["status"] = "complete"
            model.close()
        except Exception as exc:  # the package's or model's fault unless it is the device's
            doc.update(status="failed", fault=_classify(exc), phase=phase,
                       error=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000])
        doc["memory"] = {"peak_rss_mib": mem.peak_mib(), "peak_scope": mem.scope}
        doc["finished"] = time.time()
        hb.phase = "write"
        write_json_atomic(result_path, doc)
        hb.emit({"event": "done", "status": doc["status"]})
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="edgekit-farm-agent")
    sub = ap.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--kill-stale", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--package", required=True)
    r.add_argument("--sha256", default=None)
    r.add_argument("--out", required=True)
    r.add_argument("--scenario", choices=("single-stream", "offline"), default="single-stream")
    r.add_argument("--min-duration", type=float, default=1.0)
    r.add_argument("--min-queries", type=int, default=100)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--loadgen", choices=("auto", "on", "off"), default="auto")
    r.add_argument("--health", action="store_true")
    r.add_argument("--data", default=None, help="accuracy pass: .npz of input samples (name -> stacked arrays)")
    r.add_argument("--fingerprint", choices=("full", "volatile"), default="full")
    args = ap.parse_args(argv)
    return cmd_probe(args) if args.mode == "probe" else cmd_run(args)


if __name__ == "__main__":
    code = main()
    # skip the interpreter's teardown (runtime sessions, thread pools, every module's cleanup): ~0.2 s
    # per job here, more on a small board.  Every file the runner wrote is closed and fsynced by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
