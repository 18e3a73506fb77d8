"""A static HTML report (inline SVG plots, no network assets) plus the same rows as JSON and CSV.

Used by ``edgekit report PKG...`` (packages of one model compared on this host) and by
``edgekit farm report`` (results from the farm's store, per device).  A row is a flat dict:
label, device, target, precision, size_bytes, parity (min SQNR dB, min cosine, weakest part, top-1
agreement, and its source: the farm's accuracy pass on the device when the jobs ran one, else the
package's build verification),
accuracy, load_ms, first_ms, p50/p90/p99 ms, throughput, peak memory and ``latencies_ms``
(the per-query samples behind the distribution plot; left out of the CSV).
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

COLUMNS = ("label", "device", "target", "precision", "size_bytes", "min_sqnr_db", "min_cosine", "weakest_part",
           "top1_agreement", "parity_source", "accuracy", "load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "throughput_ips",
           "queries", "peak_mib", "fingerprint", "loadgen")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------- plots
def _box_plot(rows: Sequence[Dict[str, Any]], width: int = 760) -> str:
    """Latency distribution per row: whiskers p1–p99, box p25–p75, tick at the median, log-free ms axis."""
    data = [(r["label"], np.asarray(r.get("latencies_ms") or [], dtype=float)) for r in rows]
    data = [(n, a) for n, a in data if a.size]
    if not data:
        return "<p>No per-query latencies to plot.</p>"
    left, right, row_h, top = 230, 20, 26, 24
    lo = min(float(np.percentile(a, 1)) for _, a in data)
    hi = max(float(np.percentile(a, 99)) for _, a in data)
    lo, hi = max(0.0, lo * 0.9), hi * 1.05 if hi > 0 else 1.0
    span = hi - lo or 1.0
    x = lambda v: left + (width - left - right) * (v - lo) / span  # noqa: E731
    h = top + row_h * len(data) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="11">']
    for i, (name, a) in enumerate(data):
        y = top + i * row_h + row_h / 2
        p1, p25, p50, p75, p99 = np.percentile(a, [1, 25, 50, 75, 99])
        c = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{html.escape(name[:38])}</text>')
        out.append(f'<line x1="{x(p1):.1f}" x2="{x(p99):.1f}" y1="{y}" y2="{y}" stroke="{c}"/>')
        out.append(f'<rect x="{x(p25):.1f}" y="{y - 7}" width="{max(1.0, x(p75) - x(p25)):.1f}" height="14" '
                   f'fill="{c}" fill-opacity="0.35" stroke="{c}"><title>{html.escape(name)}: p25 {p25:.3f} ms, '
                   f'p50 {p50:.3f} ms, p75 {p75:.3f} ms, p99 {p99:.3f} ms, n={a.size}</title></rect>')
        out.append(f'<line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{y - 8}" y2="{y + 8}" stroke="#000" stroke-width="2"/>')
    axis_y = top + row_h * len(data) + 4
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="#444"/>')
    for k in range(6):
        v = lo + span * k / 5
        out.append(f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle">{v:.3g}</text>')
    out.append(f'<text x="{(left + width) / 2}" y="{axis_y + 26}" text-anchor="middle">latency per query (ms): '
               'whiskers p1–p99, box p25–p75, bar = median</text></svg>')
    return "".join(out)


def _scatter(rows: Sequence[Dict[str, Any]], width: int = 560, height: int = 340) -> str:
    """Parity (min SQNR, dB) against median latency: the trade-off across targets and precisions."""
    pts = [(r["label"], r.get("p50_ms"), r.get("min_sqnr_db"), r.get("parity_source") or "") for r in rows]
    pts = [(n, float(a), float(b), src) for n, a, b, src in pts if a is not None and b is not None
           and math.isfinite(float(a)) and math.isfinite(float(b))]
    if not pts:
        return "<p>No rows with both parity and latency to plot.</p>"
    left, bottom, top, right = 60, 40, 16, 20
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    x0, x1 = 0.0, max(xs) * 1.15 or 1.0
    y0, y1 = min(ys) - 3, max(ys) + 3
    X = lambda v: left + (width - left - right) * (v - x0) / (x1 - x0)  # noqa: E731
    Y = lambda v: height - bottom - (height - bottom - top) * (v - y0) / ((y1 - y0) or 1)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}" stroke="#444"/>',
           f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#444"/>']
    for k in range(5):
        vx, vy = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{X(vx):.1f}" y="{height - bottom + 14}" text-anchor="middle">{vx:.3g}</text>')
        out.append(f'<text x="{left - 6}" y="{Y(vy) + 4:.1f}" text-anchor="end">{vy:.0f}</text>')
    for i, (n, a, b, src) in enumerate(pts):
        c = PALETTE[i % len(PALETTE)]
        out.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="5" fill="{c}"><title>{html.escape(n)}: '
                   f'{a:.3f} ms, {b:.1f} dB ({html.escape(src)})</title></circle>')
        out.append(f'<text x="{X(a) + 7:.1f}" y="{Y(b) - 5:.1f}">{html.escape(n[:28])}</text>')
    out.append(f'<text x="{(left + width) / 2}" y="{height - 8}" text-anchor="middle">median latency (ms)</text>')
    out.append(f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" '
               'text-anchor="middle">min SQNR vs fp32 (dB)</text></svg>')
    return "".join(out)


# ----------------------------------------------------------------- page
def render_html(rows: Sequence[Dict[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            if c == "size_bytes" and v is not None:
                v = f"{v / 1024:.1f} KiB"
            elif c in ("top1_agreement", "accuracy") and isinstance(v, (int, float)):
                v = f"{100 * v:.2f}%"
            cells.append(f"<td>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} th{{background:#f3f3f3}}
td:first-child,td:nth-child(2),td:nth-child(3){{text-align:left}} h2{{margin-top:28px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Latency distributions</h2>{_box_plot(rows)}
<h2>Parity vs latency</h2>{_scatter(rows)}
<h2>Figures</h2><table><tr>{head}</tr>{''.join(body)}</table>
<ul>{note_html}</ul>
<p>The same rows: JSON and CSV next to this file.</p></body></html>
"""


def write_report(rows: Sequence[Dict[str, Any]], output: Path, *, title: str,
                 notes: Sequence[str] = ()) -> Dict[str, Path]:
    """``output`` (.html) plus ``output.with_suffix('.json')`` and ``.csv``; each written atomically."""
    output = Path(output)
    paths = {"html": output, "json": output.with_suffix(".json"), "csv": output.with_suffix(".csv")}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c) for c in COLUMNS})
    _write_atomic(paths["json"], json.dumps({"title": title, "notes": list(notes), "rows": list(rows)}, indent=1,
                                            default=float))
    _write_atomic(paths["csv"], buf.getvalue())
    _write_atomic(paths["html"], render_html(rows, title=title, notes=notes))
    return paths


# ----------------------------------------------------------------- rows
def _parity(verification: Optional[Dict[str, Any]], source: str) -> Dict[str, Any]:
    """The parity columns from a ParityReport document (a build's verification or a farm accuracy pass)."""
    v = verification or {}
    return {"min_sqnr_db": v.get("min_sqnr_db"), "min_cosine": v.get("min_cosine"), "weakest_part": v.get("weakest"),
            "top1_agreement": v.get("top1_agreement"), "accuracy": v.get("candidate_accuracy"),
            "parity_source": source if v else None,
            "parts": [{"name": p.get("name"), "sqnr_db": p.get("sqnr_db"), "cosine": p.get("cosine"),
                       "max_abs": p.get("max_abs")} for p in (v.get("parts") or [])]}


def latency_row(lat_ms: np.ndarray) -> Dict[str, Any]:
    if lat_ms.size == 0:
        return {}
    p50, p90, p99, p999 = (float(x) for x in np.percentile(lat_ms, [50, 90, 99, 99.9]))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "p999_ms": p999, "queries": int(lat_ms.size)}


def farm_rows(results: Sequence[Dict[str, Any]], manifests: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """One row per (package, device fingerprint) from the store's COMPLETE results, samples pooled."""
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in results:
        if (r["result"].get("status") != "complete") or r["result"].get("health_check"):
            continue
        groups.setdefault((r["sha256"], r["device"], r["fingerprint"]), []).append(r)
    rows = []
    for (sha, device, fp), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        first = rs[0]
        lat = np.concatenate([np.asarray((x["result"].get("results") or {}).get("latencies_ns") or [], float) / 1e6
                              for x in rs])
        res = [x["result"].get("results") or {} for x in rs]
        thr = [x.get("result_samples_per_second") or x.get("result_qps_with_loadgen_overhead") for x in res]
        thr = [t for t in thr if t]
        row = {"label": f"{Path(first['package']).stem} @ {device}", "device": device, "target": first["target"],
               "precision": first["precision"], "sha256": sha, "fingerprint": fp, "loadgen": first["loadgen"],
               "jobs": len(rs), "load_ms": float(np.median([x["result"].get("load_ms") or np.nan for x in rs])),
               "first_ms": float(np.median([x["result"].get("first_inference_ms") or np.nan for x in rs])),
               "throughput_ips": float(np.median(thr)) if thr else None,
               "peak_mib": max((x["result"].get("memory") or {}).get("peak_rss_mib") or 0 for x in rs) or None,
               "size_bytes": Path(first["package"]).stat().st_size if Path(first["package"]).exists() else None,
               "loadgen_fields": {k: v for k, v in res[-1].items() if k != "latencies_ns"},
               **latency_row(lat), "latencies_ms": [round(float(v), 6) for v in lat]}
        measured = [x["result"]["parity"] for x in rs if x["result"].get("parity")]
        if measured:  # the accuracy pass on the device itself: its weakest job
            worst = min(measured, key=lambda v: v.get("min_sqnr_db") if v.get("min_sqnr_db") is not None else math.inf)
            row.update(_parity(worst, f"on the device: {worst.get('samples')} samples vs fp32 onnxruntime"))
        elif manifests and sha in manifests:
            row.update(_parity(manifests[sha].get("verification"), "build verification (on the build host)"))
        rows.append(row)
    return rows


class _Counter:
    queries = 0


def package_rows(packages: Sequence[Path], *, min_duration_s: float = 1.0, min_queries: int = 100,
                 warmup: int = 10) -> List[Dict[str, Any]]:
    """``edgekit report``: each package loaded and timed on this host, SingleStream, one after another."""
    import time

    import edgekit
    from edgekit.bench import PeakMemory, synthetic_feed
    from edgekit.package import open_package

    from .agent import own_single_stream

    rows = []
    for pkg in packages:
        opened = open_package(pkg)
        try:
            manifest = opened.manifest.to_json()
        finally:
            opened.close()
        mem = PeakMemory()
        t0 = time.perf_counter()
        model = edgekit.load(pkg)
        load_ms = (time.perf_counter() - t0) * 1e3
        try:
            feed = synthetic_feed(model.manifest.inputs)
            t0 = time.perf_counter()
            model.infer(feed)
            first_ms = (time.perf_counter() - t0) * 1e3
            for _ in range(warmup):
                model.infer(feed)
            res = own_single_stream(lambda: model.infer(feed), min_duration_s=min_duration_s,
                                    min_queries=min_queries, hb=_Counter())  # type: ignore[arg-type]
            runner = model.runner.name
        finally:
            model.close()
        lat = np.asarray(res.pop("latencies_ns"), dtype=float) / 1e6
        size = sum(f.stat().st_size for f in Path(pkg).rglob("*") if f.is_file()) if Path(pkg).is_dir() \
            else Path(pkg).stat().st_size
        tgt = manifest.get("target") or {}
        row = {"label": f"{Path(pkg).stem}", "device": "this host", "target": tgt.get("name"),
               "precision": manifest.get("precision"), "runtime": runner, "package": str(pkg), "size_bytes": size,
               "load_ms": load_ms, "first_ms": first_ms,
               "throughput_ips": res.get("result_qps_with_loadgen_overhead"), "peak_mib": mem.peak_mib(),
               "loadgen": "edgekit", "loadgen_fields": res,
               **_parity(manifest.get("verification"), "build verification (on the build host)"),
               **latency_row(lat), "latencies_ms": [round(float(v), 6) for v in lat]}
        rows.append(row)
    return rows
