"""`edgekit report PKG... -o report.html`: one static page (inline SVG, no network assets) plus JSON and CSV."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_report_compares_packages(tmp_path: Path) -> None:
    from test_farm import _build

    a = _build(tmp_path / "conv-fp32.edgepkg", "fp32")
    b = _build(tmp_path / "conv-int8.edgepkg", "int8")
    out = tmp_path / "out" / "report.html"
    proc = subprocess.run([sys.executable, "-m", "edgekit", "report", str(a), str(b), "-o", str(out),
                           "--min-duration", "0.1", "--min-queries", "30", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["label"]: r for r in doc["rows"]}
    assert set(rows) == {"conv-fp32", "conv-int8"}
    assert rows["conv-int8"]["precision"] == "int8" and rows["conv-fp32"]["precision"] == "fp32"
    assert rows["conv-int8"]["size_bytes"] < rows["conv-fp32"]["size_bytes"]
    assert rows["conv-int8"]["min_sqnr_db"] < rows["conv-fp32"]["min_sqnr_db"]  # int8 is the lossier one
    for r in rows.values():
        assert r["queries"] >= 30 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["load_ms"] > 0
    page = out.read_text()
    assert page.count("<svg") == 2 and "conv-int8" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    full = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert all(len(r["latencies_ms"]) == r["queries"] for r in full)
    with open(out.with_suffix(".csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == ["conv-fp32", "conv-int8"] and float(table[0]["p90_ms"]) > 0


def test_report_missing_package_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgekit", "report", str(tmp_path / "nope.edgepkg"), "-o",
                           str(tmp_path / "r.html")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.edgepkg'}: no such package; give .edgepkg files or package directories"]
    assert not (tmp_path / "r.html").exists()
