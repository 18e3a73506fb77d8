"""The device side under numpy 1.26 (tflite-runtime and JetPack images pin numpy < 2).

Creates a fresh virtual environment with numpy<2, Pillow, typer, onnxruntime,
cryptography (the ``sign`` extra: a device checks signatures) and pytest from
the package registry, and runs the device-marked test files there against this
checkout laid out as the installed package is: ``edgekit/`` with ``targets/``,
``quantize/`` and ``device_farm/`` as its subpackages (a folder of links, put on
PYTHONPATH; PYTHONSAFEPATH keeps the repo root itself off sys.path, also in the
``python -m edgekit`` subprocesses the CLI tests start).  No build-side library
(onnx, openvino, ...) is installed there: tests that need one skip.  Also checks
the device side parses as Python 3.9.
"""
from __future__ import annotations

import ast
import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTS = ["tests/test_preprocess.py", "tests/test_postprocess.py", "tests/test_package.py", "tests/test_runtime.py",
                "tests/test_manifest.py", "tests/test_runner_inputs.py", "tests/test_options.py",
                "tests/test_security.py"]
# tests/test_layout.py stays out: it builds its models with onnx and calibrates with edgekit.quantize


def _installed_layout(site: Path) -> Path:
    """``site/edgekit`` linking to this checkout's files the way the wheel installs them (pyproject package-dir)."""
    pkg = site / "edgekit"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "edgekit").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for sub in ("targets", "quantize", "device_farm"):
        (pkg / sub).symlink_to(ROOT / sub)
    return site


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
    subprocess.run(pip + ["numpy>=1.26,<2", "pillow", "typer", "onnxruntime", "cryptography>=41", "pytest"],
                   check=True, timeout=900)
    version = subprocess.run([str(py), "-c", "import numpy; print(numpy.__version__)"], check=True, capture_output=True, text=True)
    assert version.stdout.startswith("1.26"), version.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(_installed_layout(tmp_path_factory.mktemp("np126-site"))), PYTHONSAFEPATH="1",
               PYTHONDONTWRITEBYTECODE="1")
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
