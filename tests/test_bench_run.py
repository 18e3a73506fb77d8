"""`edgekit run` on files, folders and globs with --save, and `edgekit bench` that measures (#15 items 3-4)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "models"
FASHION = ROOT / "targets" / "data" / "fashion_mnist" / "val"


def cli(*args, rc=0):
    proc = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, timeout=600)
    if rc is not None:
        assert proc.returncode == rc, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def detect_pkg(tmp_path_factory):
    """The tiny golden YOLOv8 head as a detection package, and a folder of real (Fashion-MNIST) images."""
    import edgekit
    from edgekit import preprocess as pre

    tmp = tmp_path_factory.mktemp("benchrun")
    imgs = tmp / "imgs"
    imgs.mkdir()
    srcs = sorted(FASHION.rglob("*.png"))[:6]
    for i, p in enumerate(srcs):
        with Image.open(p) as im:  # 28x28 grey → 64x48 RGB, so the saved image's size is checked apart from 28x28
            im.convert("RGB").resize((64, 48)).save(imgs / f"img_{i}.png")
    pkg = edgekit.build(GOLDEN / "yolo_head.onnx", target="onnxruntime", precision="fp32", task="detect",
                        preprocess=pre.default_image_steps(128, 128, resize="letterbox"), calibration=imgs,
                        output=tmp / "yolo.edgepkg")
    return pkg, imgs, tmp


def test_run_folders_globs_and_steady_state_latency(detect_pkg):
    pkg, imgs, tmp = detect_pkg
    doc = json.loads(cli("run", pkg, imgs / "img_0.png", imgs, str(imgs / "img_[12].png"), "--json").stdout)
    names = [Path(r["input"]).name for r in doc["results"]]
    assert names == [f"img_{i}.png" for i in range(6)]  # the file, then the folder's others; the glob adds no duplicates
    lat = doc["latency"]
    assert lat["calls"] == 6 and lat["first_infer_ms"] > 0
    assert lat["steady_state"]["calls"] == 5 and lat["steady_state"]["total_median_ms"] >= lat["steady_state"]["infer_median_ms"]
    text = cli("run", pkg, imgs / "img_0.png", "--repeat", "4").stdout
    assert "steady state over 3 calls" in text


def test_run_save_annotated_images_and_npz(detect_pkg):
    pkg, imgs, tmp = detect_pkg
    out_dir = tmp / "annotated"
    doc = json.loads(cli("run", pkg, imgs, "--save", out_dir, "--json").stdout)
    saved = [Path(r["saved"]) for r in doc["results"]]
    assert len(saved) == 6 and all(p.is_file() for p in saved)
    with Image.open(saved[0]) as im:
        assert im.size == (64, 48) and im.mode == "RGB"  # drawn on the original image, not the model input
    one = tmp / "one.png"
    cli("run", pkg, imgs / "img_1.png", "--save", one)
    assert one.is_file()
    npz = tmp / "raw.npz"
    cli("run", pkg, imgs / "img_1.png", "--save", npz)
    assert np.load(npz)["output0"].shape == (1, 7, 320)
    # user errors: one line, exit 2
    err = cli("run", pkg, imgs, "--save", tmp / "x.png", rc=2).stderr
    assert err.startswith("error: ") and "give a folder" in err
    err = cli("run", pkg, str(tmp / "nothing-*.png"), rc=2).stderr
    assert "matches no file" in err


def test_draw_detections_marks_the_box():
    from edgekit.annotate import draw_detections, draw_mask
    from edgekit.postprocess import Detection

    base = Image.new("RGB", (100, 80), (0, 0, 0))
    out = np.asarray(draw_detections(base, [Detection(box=(20.0, 30.0, 60.0, 70.0), score=0.9, class_id=1, label="cat")]))
    assert out[50, 20].any() and out[50, 60].any()  # both vertical edges painted
    assert not out[50, 40].any()  # the inside untouched
    mask = np.zeros((8, 10), np.int32)
    mask[:4] = 2
    tinted = np.asarray(draw_mask(base, mask))  # model-resolution mask scaled to the image
    assert tinted[10, 50].any() and not tinted[70, 50].any()


def test_bench_measures_and_compares(detect_pkg):
    pkg, imgs, tmp = detect_pkg
    doc = json.loads(cli("bench", pkg, pkg, "--iterations", "25", "--warmup", "2", "--image", imgs / "img_0.png",
                         "--json").stdout)
    rows = doc["packages"]
    assert len(rows) == 2
    for r in rows:
        assert r["iterations"] == 25
        # throughput is measured: timed iterations over the loop's wall time, which includes every call
        assert r["throughput_ips"] == pytest.approx(r["iterations"] / r["wall_s"], rel=1e-3)
        assert r["wall_s"] * 1e3 >= 25 * r["min_ms"]
        assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0
        mem = r["memory"]
        assert mem["peak_rss_mib"] is None or mem["peak_rss_mib"] >= (mem["rss_after_load_mib"] or 0) - 1
        e = r["end_to_end"]
        assert e["iterations"] == 25 and set(e["stages_median_ms"]) == {"preprocess", "infer", "postprocess"}
        assert e["throughput_ips"] == pytest.approx(e["iterations"] / e["wall_s"], rel=1e-3)
    single = json.loads(cli("bench", pkg, "--duration", "0.2", "--json").stdout)
    assert single["iterations"] > 0 and single["feed"].startswith("synthetic")
    table = cli("bench", pkg, "-n", "5", "--warmup", "0").stdout
    assert "thr/s" in table and "yolo.edgepkg" in table
    err = cli("bench", pkg, "--image", tmp / "missing.png", rc=2).stderr
    assert err.startswith("error: ") and "--image" in err
