"""Sample apps run as a user runs them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "targets" / "data"


@pytest.fixture(scope="module")
def fp32_pkg(tmp_path_factory):
    import edgekit
    from edgekit.targets.quickstart import bundled_model

    b = bundled_model()
    out = tmp_path_factory.mktemp("samples") / "fashion.edgepkg"
    return edgekit.build(b["model"], target="onnxruntime", precision="fp32", preprocess=b["preprocess"],
                         task="classify", labels=b["labels"], output=out)


def test_classify_folder_sample(fp32_pkg):
    script = ROOT / "samples" / "classify_folder" / "classify_folder.py"
    val = DATA / "fashion_mnist" / "val"
    proc = subprocess.run([sys.executable, str(script), str(fp32_pkg), str(val), "--quiet"],
                          capture_output=True, text=True, timeout=300, check=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("accuracy")][0]
    accuracy = float(line.split()[1].rstrip("%"))
    # the bundled model's fp32 accuracy on these 1,000 images is 91.9 %
    assert 88.0 <= accuracy <= 96.0, proc.stdout
    assert "1000 images" in proc.stdout


def test_classify_folder_sample_imports_no_build_side(fp32_pkg):
    code = (
        "import runpy, sys; sys.argv=['x', %r, %r, '--quiet']; "
        "runpy.run_path(%r, run_name='__main__')" % (str(fp32_pkg), str(DATA / "fashion_mnist" / "calib" / "0_tshirt_top"),
                                                     str(ROOT / "samples" / "classify_folder" / "classify_folder.py"))
    )
    probe = code.replace("runpy.run_path", "sys.exit = lambda *a: None; runpy.run_path") + \
        "; print('BUILD', [m for m in ('onnx', 'edgekit.targets', 'edgekit.quantize') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "BUILD []" in proc.stdout, proc.stdout + proc.stderr
