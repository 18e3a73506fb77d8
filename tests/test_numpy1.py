"""The device side under numpy 1.26 (tflite-runtime and JetPack images pin numpy < 2).

Creates a fresh virtual environment with numpy<2, Pillow, typer, onnxruntime
and pytest from the package registry, and runs the device-marked test files
there against the source tree (``python -m pytest`` puts the repo root first
on sys.path, so ``import edgekit`` is this checkout).  Also checks the
device side parses as Python 3.9.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTS = ["tests/test_preprocess.py", "tests/test_postprocess.py", "tests/test_package.py", "tests/test_runtime.py"]


def test_device_side_parses_as_python_39():
    for path in sorted((ROOT / "edgekit").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        try:
            ast.parse(source, filename=str(path), feature_version=(3, 9))
        except SyntaxError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.relative_to(ROOT)} is not Python 3.9 syntax: {exc}")


def test_device_suite_under_numpy_1_26(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("np126") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["numpy>=1.26,<2", "pillow", "typer", "onnxruntime", "pytest"], check=True, timeout=900)
    version = subprocess.run([str(py), "-c", "import numpy; print(numpy.__version__)"], check=True, capture_output=True, text=True)
    assert version.stdout.startswith("1.26"), version.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", *DEVICE_TESTS],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"device tests failed under numpy 1.26:\n{tail}"
    assert " passed" in tail and "no tests ran" not in tail, tail
