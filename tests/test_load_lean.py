"""A device start stays lean: loading a cached package imports no image library, no OpenSSL hashlib, no
per-target details it does not read; and the small-input sha256 agrees with hashlib."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit._digest import sha256_hex
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, make_package

pytest.importorskip("onnxruntime")

#: what a service start does: import, load (cache warm), one inference; prints the modules edgekit pulled in
#: beyond what numpy and onnxruntime import themselves (those vary by version and are not edgekit's doing)
_START = """
import sys, json
import numpy as np
import onnxruntime
before = set(sys.modules)
import edgekit
m = edgekit.load(sys.argv[1])
t = m.manifest.inputs[0]
m.infer({t.name: np.zeros(t.shape, t.dtype)})
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _start(pkg: Path, env: dict) -> set:
    out = subprocess.run([sys.executable, "-c", _START, str(pkg)], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cached_load_imports_only_what_loading_needs(tmp_path: Path) -> None:
    gm = next(g for g in GOLDEN_MODELS if len(g.inputs) == 1 and len(g.inputs[0].shape) == 4)
    _n, c, h, w = gm.inputs[0].shape
    steps = image_steps(h, w) if c == 3 else None  # a package with image preprocessing still needs no Pillow to load
    pkg = make_package(tmp_path, gm, preprocess=steps)
    env = dict(os.environ, EDGEKIT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("EDGEKIT_TRUSTED_KEYS", None)
    env.pop("EDGEKIT_REQUIRE_SIGNATURE", None)
    _start(pkg, env)  # first load: unpacks (hashes the files with hashlib)
    modules = _start(pkg, env)  # a restart: the cache is warm; the modules it added
    assert "edgekit.model" in modules and "edgekit.runners.onnxruntime" in modules
    unexpected = {"PIL", "PIL.Image", "_hashlib", "hashlib", "difflib", "edgekit._target_details", "edgekit.targets",
                  "edgekit.quantize", "cryptography", "onnx"} & modules
    assert not unexpected, f"a cached load imported {sorted(unexpected)}"


def test_pillow_still_decodes_images_on_first_use(tmp_path: Path) -> None:
    from PIL import Image

    from edgekit.preprocess import Preprocessor, steps_from_json

    img = tmp_path / "x.png"
    Image.fromarray(np.arange(60 * 40 * 3, dtype=np.uint8).reshape(40, 60, 3)).save(img)
    pre = Preprocessor(steps_from_json(image_steps(16, 24)))
    a = pre(str(img)).tensor
    b = pre(Image.open(img)).tensor
    assert a.shape == (1, 3, 16, 24) and np.array_equal(a, b)


@pytest.mark.parametrize("size", [0, 1, 55, 56, 64, 1000, 70_000])
def test_sha256_hex_matches_hashlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
