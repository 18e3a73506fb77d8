"""The CLI end to end, as a user runs it: real processes, real files, exit codes and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "targets" / "data"
MODEL = DATA / "fashion_mnist_cnn.onnx"
META = DATA / "fashion_mnist_model.json"
LABELS = DATA / "fashion_mnist_labels.txt"
CALIB = DATA / "fashion_mnist" / "calib"
VAL = DATA / "fashion_mnist" / "val"


def cli(*args, check_rc=0):
    proc = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def user_error(proc, *needles):
    """Exit 2, exactly one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def int8_pkg(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "fashion-int8.edgepkg"
    proc = cli("build", MODEL, "--target", "onnxruntime", "--precision", "int8", "--calib", CALIB, "--val", VAL,
               "--preprocess", META, "--task", "classify", "--labels", LABELS, "--max-accuracy-drop", "0.5",
               "-o", out, "--json")
    doc = json.loads(proc.stdout)
    return out, doc


def test_build_json_is_one_document_with_verification(int8_pkg):
    out, doc = int8_pkg
    assert Path(doc["package"]) == out and zipfile.is_zipfile(out)
    v = doc["manifest"]["verification"]
    assert v["samples"] == 1000 and v["labelled_samples"] == 1000
    # the bundled model's int8 figures from the foundation issue
    assert v["top1_agreement"] >= 0.99
    assert v["accuracy_drop_points"] <= 0.5
    assert doc["manifest"]["quantization"]["calibration"]["count"] > 0
    assert doc["manifest"]["precision"] == "int8"


def test_inspect_text_and_json(int8_pkg):
    out, _ = int8_pkg
    doc = json.loads(cli("inspect", out, "--json", "--runtime", "onnxruntime").stdout)
    assert doc["manifest"]["target"]["name"] == "onnxruntime"
    assert doc["runtime"]["providers"] == ["CPUExecutionProvider"]
    text = cli("inspect", out).stdout
    assert "precision=int8" in text and "top-1 agreement" in text and "SQNR" in text


def test_run_images_and_save(int8_pkg, tmp_path):
    out, _ = int8_pkg
    images = sorted((VAL / "9_ankle_boot").glob("*.png"))[:3]
    saved = tmp_path / "outputs.npz"
    doc = json.loads(cli("run", out, *images, "--save", saved, "--json").stdout)
    assert len(doc["results"]) == 3
    assert all(r["task"] == "classify" and r["top"][0]["label"] for r in doc["results"])
    assert sum(r["label"] == "Ankle boot" for r in doc["results"]) >= 2
    with np.load(saved, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["0/logits", "1/logits", "2/logits"]
    text = cli("run", out, images[0]).stdout
    assert "Ankle boot" in text or "ms" in text


def test_run_tensor(int8_pkg, tmp_path):
    out, _ = int8_pkg
    x = np.zeros((1, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    doc = json.loads(cli("run", out, "--tensor", f"input={tmp_path / 'x.npy'}", "--json").stdout)
    assert doc["results"][0]["task"] == "classify"
    user_error(cli("run", out, "--tensor", f"image={tmp_path / 'x.npy'}", check_rc=None), "feeds must be named")


def test_bench_json(int8_pkg):
    out, _ = int8_pkg
    doc = json.loads(cli("bench", out, "--iterations", "30", "--warmup", "3", "--json").stdout)
    assert doc["iterations"] == 30 and doc["median_ms"] > 0 and doc["p99_ms"] >= doc["median_ms"]
    doc = json.loads(cli("bench", out, "--duration", "0.2", "--json").stdout)
    assert doc["iterations"] > 0


def test_targets_json():
    doc = json.loads(cli("targets", "--json").stdout)
    ort = [t for t in doc["targets"] if t["name"] == "onnxruntime"][0]
    assert ort["installed"] and "int8" in ort["precisions"]
    assert any(d["name"] == "raspberry-pi-5" for d in doc["devices"])


def test_device_profile_build(tmp_path):
    out = tmp_path / "pi.edgepkg"
    doc = json.loads(cli("build", MODEL, "--device", "raspberry-pi-5", "--calib", CALIB, "--preprocess", META,
                         "--task", "classify", "--labels", LABELS, "-o", out, "--json").stdout)
    m = doc["manifest"]
    assert m["target"]["device"] == "raspberry-pi-5" and m["precision"] == "int8"
    assert m["target"]["name"] == "tflite" and m["target"]["runtime_options"]["threads"] == 4
    # onnxruntime stays available for the same board
    doc = json.loads(cli("build", MODEL, "--device", "raspberry-pi-5-onnxruntime", "--calib", CALIB,
                         "--preprocess", META, "--task", "classify", "--labels", LABELS, "-o", out, "--json").stdout)
    m = doc["manifest"]
    assert m["target"]["name"] == "onnxruntime" and m["target"]["runtime_options"]["threads"] == 4
    assert m["target"]["details"]["reduce_range"] is False  # Arm keeps all 8 weight bits


def test_image_flags_build_fp16(tmp_path):
    out = tmp_path / "f16.edgepkg"
    doc = json.loads(cli("build", MODEL, "-t", "onnxruntime", "-p", "fp16", "--val", VAL, "--color", "gray",
                         "--size", "28x28", "--interpolation", "area", "--mean", "0.286", "--std", "0.353",
                         "--task", "classify", "--labels", LABELS, "-o", out, "--json").stdout)
    v = doc["manifest"]["verification"]
    assert v["top1_agreement"] >= 0.999 and v["reference_accuracy"] > 0.85
    assert doc["manifest"]["preprocess"][0] == {"op": "color", "mode": "gray"}


def test_quickstart_json(tmp_path):
    doc = json.loads(cli("quickstart", "-o", tmp_path, "--json").stdout)
    rows = {(r["target"], r["precision"]): r for r in doc["packages"]}
    for p in ("fp32", "fp16", "int8"):
        r = rows[("onnxruntime", p)]
        assert "error" not in r, r
        assert Path(r["package"]).is_file() and r["latency_ms"] > 0 and r["samples"] == 1000
    assert rows[("onnxruntime", "fp32")]["top1_agreement"] == 1.0


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing written
def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(MODEL.read_bytes()[:5000])
    out = tmp_path / "x.edgepkg"
    user_error(cli("build", bad, "-t", "onnxruntime", "-o", out, check_rc=None), "bad.onnx")
    assert not out.exists()


def test_missing_and_empty_calibration(tmp_path):
    out = tmp_path / "x.edgepkg"
    user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", tmp_path / "nope",
                   "--preprocess", META, "-o", out, check_rc=None), "does not exist")
    (tmp_path / "empty").mkdir()
    user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", tmp_path / "empty",
                   "--preprocess", META, "-o", out, check_rc=None), "no images found")
    user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "-o", out, check_rc=None), "--calib")
    assert not out.exists()


def test_npz_names_must_match(tmp_path):
    np.savez(tmp_path / "feeds.npz", image=np.zeros((4, 1, 1, 28, 28), np.float32))
    out = tmp_path / "x.edgepkg"
    line = user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", tmp_path / "feeds.npz",
                          "-o", out, check_rc=None))
    assert "input" in line and "image" in line
    assert not out.exists()


def test_unsupported_op_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("FancyOp", ["x"], ["y"], name="my_fancy_node", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "custom.onnx")
    user_error(cli("build", tmp_path / "custom.onnx", "-t", "onnxruntime", "-o", tmp_path / "c.edgepkg", check_rc=None),
               "my_fancy_node", "FancyOp")


def test_gate_failure_leaves_no_package(tmp_path):
    out = tmp_path / "gated.edgepkg"
    line = user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", CALIB, "--preprocess", META,
                          "--task", "classify", "--min-sqnr", "150", "-o", out, check_rc=None), "SQNR")
    assert "--min-sqnr" in line
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    proc = cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", CALIB, "--preprocess", META,
               "--task", "classify", "--min-sqnr", "150", "--allow-gate-failure", "-o", out, "--json")
    assert json.loads(proc.stdout)["manifest"]["verification"]["passed"] is False and out.exists()


def test_option_errors(tmp_path):
    user_error(cli("build", MODEL, "-t", "onnxruntime", "--size", "big", check_rc=None), "--size")
    user_error(cli("build", MODEL, "-t", "onnxruntime", "-p", "int3", check_rc=None), "precision")
    user_error(cli("build", MODEL, "-t", "nosuch", check_rc=None), "known targets")
    user_error(cli("build", MODEL, "--device", "toaster", check_rc=None), "known devices")
    user_error(cli("build", MODEL, check_rc=None), "--target")
    user_error(cli("build", tmp_path / "missing.onnx", "-t", "onnxruntime", check_rc=None), "missing.onnx")
    user_error(cli("inspect", tmp_path / "nope.edgepkg", check_rc=None), "no such package")
    doc = json.loads(cli("inspect", tmp_path / "nope.edgepkg", "--json", check_rc=2).stdout)
    assert "no such package" in doc["error"]


def test_non_image_input_to_run(int8_pkg, tmp_path):
    out, _ = int8_pkg
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    user_error(cli("run", out, txt, check_rc=None), "notes.txt")


def test_debug_shows_traceback(tmp_path):
    proc = cli("--debug", "inspect", tmp_path / "nope.edgepkg", check_rc=None)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_readme_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0].startswith("pip install ") and "[all]" in lines[0] and lines[0].endswith("edgekit quickstart")
    assert lines[1].startswith("pip install ") and "[test]" in lines[1] and "pytest" in lines[1]
    # .ci/run picks the second line out of the README with this grep
    picked = subprocess.run(["grep", "-m1", r"^pip install .*\[test\]", "README.md"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    assert picked == lines[1]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_recipe_file_in_package_reproduces_the_build(int8_pkg, tmp_path):
    out, doc = int8_pkg
    assert doc["manifest"]["recipe"] == "recipe.json"
    with zipfile.ZipFile(out) as zf:
        recipe = json.loads(zf.read("recipe.json"))
    assert recipe == doc["manifest"]["quantization"]["recipe"]
    (tmp_path / "recipe.json").write_text(json.dumps({**recipe, "method": "percentile", "exclude_op_types": ["Gemm"]}))
    again = json.loads(cli("build", MODEL, "-t", "onnxruntime", "-p", "int8", "--calib", CALIB, "--preprocess", META,
                           "--recipe", tmp_path / "recipe.json", "-o", tmp_path / "r.edgepkg", "--json").stdout)
    q = again["manifest"]["quantization"]
    assert q["recipe"]["method"] == "percentile" and q["excluded_count"] == 1
