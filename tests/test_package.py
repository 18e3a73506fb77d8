"""Package format: manifest validation, checksums, zip and directory forms, atomic writes."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from edgekit.errors import ManifestError, PackageError
from edgekit.package import open_package, seal_directory, write_package
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, make_package, manifest_for, rewrite_manifest

pytestmark = pytest.mark.device

GM = {m.name: m for m in GOLDEN_MODELS}
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "edgekit" / "schema" / "manifest.schema.json"


@pytest.fixture()
def pkg_dir(tmp_path):
    return make_package(tmp_path, GM["conv_bn_relu"], "pkg", labels=[str(i) for i in range(10)],
                        preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 3})


def test_zip_and_directory_round_trip(tmp_path, pkg_dir):
    z = make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg", preprocess=image_steps(32, 32))
    assert zipfile.is_zipfile(z)
    for path in (z, pkg_dir):
        opened = open_package(path)
        try:
            m = opened.manifest
            assert m.name == "conv_bn_relu" and m.runtime == "onnxruntime" and m.precision == "fp32"
            assert m.inputs[0].shape == (1, 3, 32, 32)
            assert len(m.preprocess) == 5
            assert (opened.root / m.entry).is_file()
        finally:
            opened.close()
    assert open_package(pkg_dir).manifest.labels == tuple(str(i) for i in range(10))


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test unpacks into its own content-addressed cache."""
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "packages"


def test_zip_unpacks_once_into_the_cache_and_is_reused(tmp_path, fresh_cache):
    z = make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg")
    opened = open_package(z)
    root = opened.root
    assert root.is_relative_to(fresh_cache) and root.parent.name == opened.digest
    opened.close()
    assert root.exists()  # kept for the next load
    copy = tmp_path / "renamed.edgepkg"
    shutil.copy(z, copy)
    again = open_package(copy)  # same contents under another name: same entry, no second unpack
    assert again.root == root
    again.close()
    assert [p.name for p in fresh_cache.iterdir()] == [opened.digest]


def test_changed_file_is_named(pkg_dir):
    with open(pkg_dir / "model" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageError, match=r"'model/model.onnx' was changed"):
        open_package(pkg_dir)


def test_missing_file_is_named(pkg_dir):
    os.remove(pkg_dir / "labels.txt")
    with pytest.raises(PackageError, match=r"'labels.txt' listed in the integrity record is missing"):
        open_package(pkg_dir)


def test_extra_file_is_named(pkg_dir):
    (pkg_dir / "model" / "evil.so").write_bytes(b"x")
    with pytest.raises(PackageError, match=r"'model/evil.so' is not listed"):
        open_package(pkg_dir)


def test_extra_file_in_zip_is_named(tmp_path):
    z = make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("model/extra.bin", b"x")
    with pytest.raises(PackageError, match=r"'model/extra.bin' is not listed"):
        open_package(z)


def test_changed_file_in_zip(tmp_path):
    z = make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg")
    src = zipfile.ZipFile(z)
    out = tmp_path / "tampered.edgepkg"
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model/model.onnx":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(info, data)
    src.close()
    with pytest.raises(PackageError, match="was changed"):
        open_package(out)


def test_truncated_zip(tmp_path):
    z = make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg")
    data = z.read_bytes()
    bad = tmp_path / "truncated.edgepkg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="not a zip archive|damaged zip"):
        open_package(bad)


def test_unsafe_zip_member(tmp_path):
    bad = tmp_path / "bad.edgepkg"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../escape.txt", "x")
    with pytest.raises(PackageError, match=r"'../escape.txt' has an empty, '.' or '..' path component"):
        open_package(bad)


def test_missing_package_and_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="no such package"):
        open_package(tmp_path / "nope.edgepkg")
    (tmp_path / "dir").mkdir()
    with pytest.raises(PackageError, match="no manifest.json"):
        open_package(tmp_path / "dir")
    (tmp_path / "x.edgepkg").write_text("hello")
    with pytest.raises(PackageError, match="not a zip archive"):
        open_package(tmp_path / "x.edgepkg")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["preprocess"][2].__setitem__("mean", [0.5]), r"manifest.preprocess\[2\].mean: expected 3 numbers, got 1"),
        (lambda d: d["inputs"][0]["shape"].__setitem__(1, -1), r"manifest.inputs\[0\].shape\[1\]: expected a positive integer, got -1"),
        (lambda d: d.__setitem__("schema", "edgekit.manifest/9"), r"manifest.schema: this edgekit reads"),
        (lambda d: d.pop("outputs"), r"manifest.outputs: required field is missing"),
        (lambda d: d.__setitem__("precision", "int4"), r"manifest.precision: must be one of"),
        (lambda d: d["inputs"][0].__setitem__("dtype", "float128"), r"manifest.inputs\[0\].dtype: must be one of"),
        (lambda d: d["postprocess"].__setitem__("task", "dance"), r"manifest.postprocess.task"),
        (lambda d: d["source"].__setitem__("sha256", "abc"), r"manifest.source.sha256: expected 64 lowercase hex digits"),
        (lambda d: d["artifact"].__setitem__("entry", "model/other.onnx"), r"manifest.artifact.entry: 'model/other.onnx' is not listed"),
    ],
)
def test_manifest_errors_name_the_field(pkg_dir, edit, message):
    rewrite_manifest(pkg_dir, edit)
    with pytest.raises(ManifestError, match=message):
        open_package(pkg_dir)


def test_manifest_not_json(pkg_dir):
    (pkg_dir / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="'manifest.json' was changed"):
        open_package(pkg_dir)
    seal_directory(pkg_dir)
    with pytest.raises(ManifestError, match="not valid JSON"):
        open_package(pkg_dir)


def test_failed_write_leaves_nothing(tmp_path):
    gm = GM["conv_bn_relu"]
    stage = tmp_path / "stage"
    (stage / "model").mkdir(parents=True)
    shutil.copy(gm.path, stage / "model" / "model.onnx")
    manifest = manifest_for(gm, preprocess=image_steps(32, 32))
    manifest["preprocess"][2]["std"] = []  # invalid: must not be written
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name in ("bad.edgepkg", "bad_dir"):
        with pytest.raises(ManifestError):
            write_package(stage, manifest, out_dir / name)
    assert list(out_dir.iterdir()) == []


def test_overwrite_is_atomic_and_complete(tmp_path):
    gm = GM["conv_bn_relu"]
    first = make_package(tmp_path, gm, "same.edgepkg")
    before = first.read_bytes()
    second = make_package(tmp_path, gm, "same.edgepkg", postprocess={"task": "classify"})
    assert second == first and second.read_bytes() != before
    assert open_package(second).manifest.postprocess.__class__.__name__ == "ClassifyConfig"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_manifest_matches_json_schema(pkg_dir):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    data = json.loads((pkg_dir / "manifest.json").read_text())
    jsonschema.validate(data, schema)
    data["precision"] = "int4"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
