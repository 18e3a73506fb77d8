"""`edgekit build --build-option KEY=VALUE` (-B): target build options from the command line.

Values are JSON when they parse (numbers, booleans, lists), else text; the
target's OptionSchema checks them, so a misspelt key or a bad value is one
``error:`` line before anything is built.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.cli import _key_values  # noqa: E402
from edgekit.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "targets" / "data"
MODEL = DATA / "fashion_mnist_cnn.onnx"
META = DATA / "fashion_mnist_model.json"
CALIB = DATA / "fashion_mnist" / "calib"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_error_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_values_are_json_when_they_parse_else_text():
    got = _key_values(["io_dtype=int8", "n=16", "x=0.5", "flag=true", "sizes=[\"320x320\", \"224x224\"]",
                       "empty=", "eq=a=b", " spaced = 3"], "--build-option")
    assert got == {"io_dtype": "int8", "n": 16, "x": 0.5, "flag": True, "sizes": ["320x320", "224x224"],
                   "empty": "", "eq": "a=b", "spaced": 3}
    assert type(got["n"]) is int and got["flag"] is True
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _key_values(["io_dtype"], "--build-option")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _key_values(["=int8"], "--build-option")
    with pytest.raises(ConfigError, match="given twice"):
        _key_values(["io_dtype=int8", "io_dtype=uint8"], "--build-option")


def _build(tmp_path, target, *options, precision="int8"):
    out = tmp_path / f"{target}.edgepkg"
    args = ["build", MODEL, "--target", target, "--precision", precision, "--calib", CALIB, "--preprocess", META,
            "--task", "classify", "-o", out, "--json"]
    for opt in options:
        args += ["-B", opt]
    return cli(*args), out


def test_unknown_key_names_the_closest_match_and_builds_nothing(tmp_path):
    proc, out = _build(tmp_path, "coreml", "compresion=w8")
    line = one_error_line(proc, '"compresion"', 'did you mean "compression"', "coreml")
    assert "known options" in line and not out.exists()


def test_bad_value_is_refused_by_the_schema(tmp_path):
    proc, out = _build(tmp_path, "coreml", "image_input=maybe")
    one_error_line(proc, "image_input", "maybe")
    proc, out = _build(tmp_path, "coreml", "compression=w9")
    one_error_line(proc, "compression", "w9")
    proc, out = _build(tmp_path, "coreml", "image_input")
    one_error_line(proc, "KEY=VALUE")
    assert not out.exists()


def test_tflite_integer_io_from_the_command_line(tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed (pip install "
                        "'edgekit[tflite]')")
    proc, out = _build(tmp_path, "tflite", "io_dtype=int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)["manifest"]
    (inp,) = manifest["inputs"]
    assert inp["dtype"] == "int8" and inp["quantization"]["scale"] > 0
    assert manifest["target"]["details"]["io_dtype"] == "int8"
    assert manifest["preprocess"][-1]["dtype"] == "int8"


def test_coreml_options_reach_the_build(tmp_path):
    pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'edgekit[coreml]')")
    proc, out = _build(tmp_path, "coreml", "compression=palettize8", "deployment_target=ios17",
                       "image_input=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)["manifest"]
    details = manifest["target"]["details"]
    assert details["compression"] == "palettize8" and details["deployment_target"] == "ios17", details
    # the bundled model's preprocessing is a plain scale/bias, so only the option keeps it a tensor input
    assert details["input_type"] == "tensor" and "build option" in details["tensor_input_reason"], details
