"""Property tests (hypothesis): whatever bytes, manifests, preprocessing specs or zip layouts a device is
handed, the outcome is success or one EdgekitError — never another exception, never a hang.

The long-running, coverage-guided counterpart is the atheris harness in ``fuzz/`` (run on purpose).
"""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need pip install hypothesis (in edgekit[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402
from pkgtools import image_steps, make_package, manifest_for  # noqa: E402

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.manifest import parse_manifest  # noqa: E402
from edgekit.package import MANIFEST, open_package, seal_directory  # noqa: E402
from edgekit.preprocess import Preprocessor, steps_from_json  # noqa: E402

pytestmark = pytest.mark.device
GM = {m.name: m for m in GOLDEN_MODELS}
FAST = settings(max_examples=int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "60")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    os.environ["EDGEKIT_CACHE_DIR"] = str(d / "cache")
    yield d
    os.environ.pop("EDGEKIT_CACHE_DIR", None)


@pytest.fixture(scope="module")
def seed_zip(workdir):
    return make_package(workdir, GM["conv_bn_relu"], "seed.edgepkg", labels=["a", "b", "c"],
                        preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 2})


def _fresh_cache(workdir: Path) -> None:
    shutil.rmtree(workdir / "cache", ignore_errors=True)  # else a cached twin would mask the mutation


def _open(path: Path) -> str:
    try:
        open_package(path).close()
    except EdgekitError:
        return "error"
    return "ok"


# ----------------------------------------------------------------------------- byte flips in a zip
@FAST
@given(data=st.data())
def test_byte_flips_in_a_zip(workdir, seed_zip, data):
    raw = bytearray(seed_zip.read_bytes())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), min_size=1, max_size=6))
    for pos, x in flips:
        raw[pos] ^= x
    out = workdir / "flipped.edgepkg"
    out.write_bytes(bytes(raw))
    _fresh_cache(workdir)
    _open(out)  # anything but EdgekitError propagates and fails the test


@FAST
@given(cut=st.integers(0, 10_000))
def test_truncation(workdir, seed_zip, cut):
    raw = seed_zip.read_bytes()
    out = workdir / "cut.edgepkg"
    out.write_bytes(raw[: max(0, len(raw) - 1 - cut)])
    _fresh_cache(workdir)
    assert _open(out) == "error"


# ----------------------------------------------------------------------------- zip structure
_names = st.one_of(
    st.sampled_from(["manifest.json", "integrity.json", "signature.json", "labels.txt", "model/model.onnx",
                     "model/", "model", "./model/x", "model//x", "MODEL/model.onnx", "a\\b", "../x", "/abs",
                     "c:/x", "x\x00y", "model/model.onnx/x", ".", ""]),
    st.text(min_size=1, max_size=12),
)


@FAST
@given(extra=st.lists(st.tuples(_names, st.binary(max_size=64)), max_size=5), drop=st.sets(st.integers(0, 4), max_size=2))
def test_zip_structure(workdir, seed_zip, extra, drop):
    with zipfile.ZipFile(seed_zip) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    members = [m for k, m in enumerate(members) if k not in drop] + extra
    out = workdir / "structure.edgepkg"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names: that is the point
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in members:
                try:
                    zf.writestr(name, data)
                except (ValueError, UnicodeEncodeError, IndexError):
                    pass  # a name zipfile itself cannot write
    _fresh_cache(workdir)
    _open(out)


# ----------------------------------------------------------------------------- manifests
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


BASE = manifest_for(GM["conv_bn_relu"], preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 2})
BASE["files"] = {"model/model.onnx": "0" * 64}
PATHS = [p for p in _paths(BASE) if p]


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), _json | st.just("__delete__")), min_size=1, max_size=4))
def test_mutated_manifests_parse_or_fail_with_one_error(edits):
    doc = copy.deepcopy(BASE)
    for path, value in edits:
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            if value == "__delete__":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        parse_manifest(doc, ("a", "b", "c"))
    except EdgekitError:
        pass


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), _json), min_size=1, max_size=3))
def test_inspect_never_crashes_on_a_package_that_loads(workdir, edits):
    """`edgekit inspect` renders every manifest the loader accepts (text and --json)."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    d = workdir / "inspect-pkg"
    if not d.exists():
        make_package(workdir, GM["conv_bn_relu"], "inspect-pkg", labels=["a", "b", "c"],
                     preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 2})
    original = getattr(test_inspect_never_crashes_on_a_package_that_loads, "_original", None)
    if original is None:
        original = (d / MANIFEST).read_text()
        test_inspect_never_crashes_on_a_package_that_loads._original = original  # type: ignore[attr-defined]
    doc = json.loads(original)
    for path, value in edits:
        if path[0] == "files":
            continue
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    (d / MANIFEST).write_text(json.dumps(doc))
    seal_directory(d)
    try:
        open_package(d).close()
    except EdgekitError:
        return
    for args in (["inspect", str(d)], ["inspect", str(d), "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code in (0, 2), (args, result.output, result.exception)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception


# ----------------------------------------------------------------------------- preprocessing specs
_step = st.fixed_dictionaries(
    {"op": st.sampled_from(["color", "resize", "normalize", "layout", "dtype", "bogus"]) | _json},
    optional={
        "mode": st.sampled_from(["rgb", "bgr", "gray", "stretch", "letterbox", "crop", "x"]) | _json,
        "size": st.lists(st.integers(-2, 40), max_size=3) | _json,
        "interpolation": st.sampled_from(["nearest", "bilinear", "bicubic", "area"]) | _json,
        "pad_value": st.integers(-5, 300) | _json,
        "mean": st.lists(st.floats(-2, 2), max_size=4) | _json,
        "std": st.lists(st.floats(-1, 2), max_size=4) | _json,
        "scale": st.floats(allow_nan=True) | _json,
        "order": st.sampled_from(["nchw", "nhwc", "x"]) | _json,
        "dtype": st.sampled_from(["float32", "float16", "uint8", "int8", "x"]) | _json,
    },
)


@FAST
@given(steps=st.lists(_step, max_size=6), shape=st.tuples(st.integers(1, 40), st.integers(1, 40)))
def test_preprocessing_specs_parse_and_run_or_fail_with_one_error(steps, shape):
    try:
        parsed = steps_from_json(steps, where="preprocess")
        pre = Preprocessor(parsed)
        img = np.random.default_rng(0).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        pre(img)
        buf = io.BytesIO()
        np.save(buf, np.zeros((1, 3, 4, 4), np.float32))
        pre(buf.getvalue())
    except EdgekitError:
        pass
