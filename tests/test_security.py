"""Package security, attack by attack (issue 10): each test is one way a careless user or an attacker
got a device or a build host to lose data, run something else, hang, or crash with a traceback."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, make_package, rewrite_manifest

import edgekit
from edgekit.errors import (
    ConfigError,
    EdgekitError,
    ManifestError,
    PackageError,
    SignatureError,
)
from edgekit.package import (
    MANIFEST,
    SIGNATURE,
    PackageLimits,
    check_output,
    open_package,
    seal_directory,
    sign_package,
)

pytestmark = pytest.mark.device
GM = {m.name: m for m in GOLDEN_MODELS}
ROOT = Path(__file__).resolve().parent.parent
crypto = pytest.importorskip("cryptography", reason="signing needs pip install 'edgekit[sign]'")
from edgekit.signing import PrivateKey, PublicKey, TrustPolicy, keygen  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("EDGEKIT_TRUSTED_KEYS", "EDGEKIT_REQUIRE_SIGNATURE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache" / "packages"


@pytest.fixture()
def zpkg(tmp_path):
    return make_package(tmp_path, GM["conv_bn_relu"], "pkg.edgepkg", labels=["cat", "dog"],
                        preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 1})


@pytest.fixture()
def dpkg(tmp_path):
    return make_package(tmp_path, GM["conv_bn_relu"], "pkgdir", labels=["cat", "dog"],
                        preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 1})


@pytest.fixture()
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return keygen(d / "release"), keygen(d / "other")


def _members(z: Path):
    with zipfile.ZipFile(z) as zf:
        return [(i, zf.read(i)) for i in zf.infolist()]


def _rezip(z: Path, out: Path, members) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info if isinstance(info, zipfile.ZipInfo) else zipfile.ZipInfo(info), data)
    return out


# ----------------------------------------------------------------------------- 1. no data loss
def _webapp(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}')
    (d / "index.html").write_text("<html>precious</html>")
    return d


def test_output_dir_with_a_foreign_manifest_is_refused_and_kept(tmp_path, dpkg):
    app = _webapp(tmp_path / "webapp")
    with pytest.raises(ConfigError, match="existing folder that is not an edgekit package"):
        check_output(app)
    assert (app / "index.html").read_text() == "<html>precious</html>"


def test_output_dot_is_refused(tmp_path, monkeypatch):
    app = _webapp(tmp_path / "project")
    monkeypatch.chdir(app)
    with pytest.raises(ConfigError, match="current folder"):
        check_output(".")
    with pytest.raises(ConfigError, match="current folder"):
        check_output(str(app))
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "manifest.json"]


def test_existing_non_package_file_is_never_overwritten(tmp_path):
    precious = tmp_path / "thesis.zip"
    with zipfile.ZipFile(precious, "w") as zf:
        zf.writestr("chapter1.tex", "...")
    other = tmp_path / "notes.edgepkg"
    other.write_text("not a zip")
    for p in (precious, other):
        before = p.read_bytes()
        with pytest.raises(ConfigError, match="not an edgekit package"):
            check_output(p)
        assert p.read_bytes() == before


def test_existing_package_is_replaced_atomically(tmp_path, zpkg, dpkg):
    for p in (zpkg, dpkg):
        assert check_output(p) == p  # a package may be replaced
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == tmp_path / "empty"  # so may an empty folder
    make_package(tmp_path, GM["conv_bn_relu"], "empty")
    open_package(tmp_path / "empty").close()
    second = make_package(tmp_path, GM["conv_bn_relu"], "pkgdir", postprocess={"task": "raw"})
    assert open_package(second).manifest.labels is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".partial", ".old"))]


def test_existing_folder_named_edgepkg_and_unwritable_output_refused(tmp_path):
    (tmp_path / "model.edgepkg").mkdir()
    with pytest.raises(ConfigError, match="existing folder, but a .edgepkg output is a zip file"):
        check_output(tmp_path / "model.edgepkg")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="cannot write into"):
        check_output(tmp_path / "afile" / "sub" / "out.edgepkg")
    if hasattr(os, "getuid") and os.getuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="cannot write into"):
            check_output(ro / "out.edgepkg")


@pytest.mark.parametrize("mask, zmode, dmode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_written_packages_follow_the_umask(tmp_path, mask, zmode, dmode):
    old = os.umask(mask)
    try:
        z = make_package(tmp_path, GM["conv_bn_relu"], "u.edgepkg")
        d = make_package(tmp_path, GM["conv_bn_relu"], "udir")
    finally:
        os.umask(old)
    assert stat.S_IMODE(z.stat().st_mode) == zmode
    assert stat.S_IMODE(d.stat().st_mode) == dmode
    assert stat.S_IMODE((d / "model" / "model.onnx").stat().st_mode) == zmode


# ----------------------------------------------------------------------------- 2. integrity of the whole package
def test_manifest_tampering_in_a_directory_is_detected(dpkg):
    data = json.loads((dpkg / MANIFEST).read_text())
    data["preprocess"][2]["mean"] = [0.9, 0.9, 0.9]
    (dpkg / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="'manifest.json' was changed"):
        open_package(dpkg)


def test_manifest_tampering_in_a_zip_is_detected(tmp_path, zpkg):
    def edit(info, data):
        if info.filename == MANIFEST:
            doc = json.loads(data)
            doc["postprocess"]["top_k"] = 2
            return json.dumps(doc).encode()
        return data

    bad = _rezip(zpkg, tmp_path / "bad.edgepkg", [(i, edit(i, d)) for i, d in _members(zpkg)])
    with pytest.raises(PackageError, match="'manifest.json'.*(was changed|header says)"):
        open_package(bad)


def test_labels_and_their_hash_changed_together_is_detected(dpkg):
    (dpkg / "labels.txt").write_text("dog\ncat\n")
    rewrite = json.loads((dpkg / MANIFEST).read_text())
    rewrite["files"]["labels.txt"] = hashlib.sha256(b"dog\ncat\n").hexdigest()
    (dpkg / MANIFEST).write_text(json.dumps(rewrite))
    with pytest.raises(PackageError, match="was changed"):
        open_package(dpkg)


def test_flipped_byte_in_labels_is_a_checksum_error_not_a_decode_error(dpkg, tmp_path, zpkg):
    raw = bytearray((dpkg / "labels.txt").read_bytes())
    raw[0] = 0xFF  # not UTF-8
    (dpkg / "labels.txt").write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="'labels.txt' was changed"):
        open_package(dpkg)
    bad = _rezip(zpkg, tmp_path / "l.edgepkg",
                 [(i, b"\xffat\ndog\n" if i.filename == "labels.txt" else d) for i, d in _members(zpkg)])
    with pytest.raises(PackageError, match="'labels.txt' was changed"):
        open_package(bad)


def test_non_utf8_labels_with_a_matching_record_is_one_line(dpkg):
    (dpkg / "labels.txt").write_bytes(b"caf\xe9\n")
    rewrite_manifest(dpkg, lambda d: d["files"].__setitem__("labels.txt", hashlib.sha256(b"caf\xe9\n").hexdigest()))
    with pytest.raises(PackageError, match="labels.txt is not UTF-8"):
        open_package(dpkg)


@pytest.mark.parametrize("name, message", [
    ("model/model.onnx", "appears twice"),
    ("MODEL/model.onnx", "appears twice"),
    ("./model/extra.bin", r"'\.' or '\.\.' path component"),
    ("model\\evil.bin", "backslash"),
    ("/etc/passwd", "absolute"),
    ("C:/x.bin", "drive"),
    ("model/model.onnx/inner", "also a file"),
])
def test_bad_zip_member_names_are_refused(tmp_path, zpkg, name, message):
    members = _members(zpkg) + [(zipfile.ZipInfo(name), b"evil")]
    bad = _rezip(zpkg, tmp_path / "bad.edgepkg", members)
    with pytest.raises(PackageError, match=message):
        open_package(bad)


def test_symlink_member_in_zip_is_refused(tmp_path, zpkg):
    link = zipfile.ZipInfo("model/link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = _rezip(zpkg, tmp_path / "bad.edgepkg", _members(zpkg) + [(link, b"/etc/passwd")])
    with pytest.raises(PackageError, match="symbolic link"):
        open_package(bad)


def test_symlinks_fifos_and_dev_zero_in_directories_are_refused_without_hanging(tmp_path, dpkg):
    model = dpkg / "model" / "model.onnx"
    saved = model.read_bytes()
    model.unlink()
    os.symlink("/dev/zero", model)
    with pytest.raises(PackageError, match="symbolic link"):
        open_package(dpkg)
    model.unlink()
    os.mkfifo(model)
    t0 = time.monotonic()
    with pytest.raises(PackageError, match="not a regular file"):
        open_package(dpkg)
    assert time.monotonic() - t0 < 5
    model.unlink()
    model.write_bytes(saved)
    os.symlink(model, dpkg / "model" / "alias.onnx")
    with pytest.raises(PackageError, match="symbolic link"):
        open_package(dpkg)
    (dpkg / "model" / "alias.onnx").unlink()
    open_package(dpkg)  # intact again


def test_package_path_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe.edgepkg"
    os.mkfifo(fifo)
    with pytest.raises(PackageError, match="not a regular file or folder"):
        open_package(fifo)


def test_unknown_compression_and_encryption_are_refused(tmp_path, zpkg):
    members = _members(zpkg)
    bad = tmp_path / "bz.edgepkg"
    with zipfile.ZipFile(bad, "w") as zf:
        for info, data in members:
            zf.writestr(info.filename, data, compress_type=zipfile.ZIP_BZIP2)
    with pytest.raises(PackageError, match="compression method 12"):
        open_package(bad)


# ----------------------------------------------------------------------------- 3. signatures
def test_sign_verify_and_trusted_load(tmp_path, zpkg, dpkg, keys):
    (priv, pub), (_other, other_pub) = keys
    for pkg in (zpkg, dpkg):
        with pytest.raises(SignatureError, match="not signed"):
            edgekit.load(pkg, trusted_keys=[pub])
        sign_package(pkg, priv).close()
        with edgekit.load(pkg, trusted_keys=[pub]) as m:
            assert m._package.signed_by == PublicKey.load(pub).key_id
        with pytest.raises(SignatureError, match="none of which this device trusts"):
            edgekit.load(pkg, trusted_keys=[other_pub])
        # not required when the caller says so explicitly
        edgekit.load(pkg, trusted_keys=[other_pub], require_signature=False).close()


def test_environment_policy(tmp_path, zpkg, keys, monkeypatch):
    (priv, pub), _ = keys
    monkeypatch.setenv("EDGEKIT_REQUIRE_SIGNATURE", "1")
    with pytest.raises(ConfigError, match="no key is trusted"):
        edgekit.load(zpkg)
    monkeypatch.setenv("EDGEKIT_TRUSTED_KEYS", str(pub))
    with pytest.raises(SignatureError, match="not signed"):
        edgekit.load(zpkg)
    sign_package(zpkg, priv).close()
    edgekit.load(zpkg).close()


def test_tampering_after_signing_breaks_the_signature(tmp_path, dpkg, keys):
    (priv, pub), _ = keys
    sign_package(dpkg, priv).close()
    sig = (dpkg / SIGNATURE).read_bytes()
    rewrite_manifest(dpkg, lambda d: d["postprocess"].__setitem__("top_k", 2))  # re-seals, drops the signature
    (dpkg / SIGNATURE).write_bytes(sig)  # the attacker puts the old signature back
    with pytest.raises(SignatureError, match="does not match the package contents"):
        edgekit.load(dpkg, trusted_keys=[pub])


def test_signed_cached_load_skips_the_crypto_but_not_the_policy(tmp_path, zpkg, keys):
    (priv, pub), (_o, other_pub) = keys
    sign_package(zpkg, priv).close()
    open_package(zpkg, trust=TrustPolicy((PublicKey.load(pub),), True)).close()
    again = open_package(zpkg, trust=TrustPolicy((PublicKey.load(pub),), True))
    assert again.signed_by == PublicKey.load(pub).key_id
    again.close()
    with pytest.raises(SignatureError):
        open_package(zpkg, trust=TrustPolicy((PublicKey.load(other_pub),), True))


def test_keygen_refuses_to_overwrite_and_keys_are_private(tmp_path, keys):
    (priv, pub), _ = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        keygen(priv)
    with pytest.raises(ConfigError, match="not an ed25519 public key|expected a PEM block"):
        PublicKey.load(priv)
    assert PrivateKey.load(priv).public_key() == PublicKey.load(pub).__class__(PublicKey.load(pub).raw, str(priv))


# ----------------------------------------------------------------------------- 4. bounded unpacking
def _bomb(tmp_path: Path, zpkg: Path, size: int, *, lie: int = 0) -> Path:
    """A package whose model member is ``size`` zero bytes, with a valid integrity record for it."""
    d = tmp_path / "bomb-src"
    with zipfile.ZipFile(zpkg) as zf:
        zf.extractall(d)
    model = d / "model" / "model.onnx"
    with open(model, "wb") as f:
        f.truncate(size)  # sparse: costs no disk
    rewrite_manifest(d, lambda m: m["files"].__setitem__("model/model.onnx", _sha_zeros(size)))
    out = tmp_path / "bomb.edgepkg"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(d).as_posix())
    return out


def _sha_zeros(n: int) -> str:
    h = hashlib.sha256()
    block = bytes(1 << 20)
    while n:
        k = min(n, len(block))
        h.update(block[:k])
        n -= k
    return h.hexdigest()


def test_zip_bomb_is_refused_before_anything_large_is_written(tmp_path, zpkg, fresh_cache):
    bomb = _bomb(tmp_path, zpkg, 256 << 20)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(PackageError, match=r"would expand \d+× .* over the limit of 200×"):
        open_package(bomb)
    written = sum(p.stat().st_size for p in fresh_cache.rglob("*") if p.is_file()) if fresh_cache.exists() else 0
    assert written == 0


def test_member_streaming_past_its_declared_size_is_cut_off(tmp_path, zpkg, fresh_cache):
    # the zip headers and the integrity record both say 100 bytes; the deflate stream holds 8 MB
    big = bytes(8 << 20)
    small_sha = hashlib.sha256(big[:100]).hexdigest()
    d = tmp_path / "src"
    with zipfile.ZipFile(zpkg) as zf:
        zf.extractall(d)
    (d / "model" / "model.onnx").write_bytes(big[:100])
    rewrite_manifest(d, lambda m: m["files"].__setitem__("model/model.onnx", small_sha))
    out = tmp_path / "liar.edgepkg"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                rel = p.relative_to(d).as_posix()
                zf.writestr(rel, big if rel == "model/model.onnx" else p.read_bytes())
    raw = bytearray(out.read_bytes())
    # patch the uncompressed size (8 MiB) to 100 in the local header and the central directory
    old, new = (8 << 20).to_bytes(4, "little"), (100).to_bytes(4, "little")
    assert raw.count(old) == 2
    out.write_bytes(bytes(raw).replace(old, new))
    with pytest.raises(PackageError):
        open_package(out)
    leftovers = [p for p in fresh_cache.rglob("*") if p.is_file() and p.stat().st_size > 1000] if fresh_cache.exists() else []
    assert leftovers == []


def test_header_disagreeing_with_the_record_is_refused(tmp_path, zpkg):
    members = [(i, d + b"x" if i.filename == "model/model.onnx" else d) for i, d in _members(zpkg)]
    bad = _rezip(zpkg, tmp_path / "b.edgepkg", members)
    with pytest.raises(PackageError, match="the zip header says .* the integrity record says"):
        open_package(bad)


def test_member_count_and_total_size_limits(tmp_path, zpkg):
    many = _rezip(zpkg, tmp_path / "many.edgepkg", _members(zpkg) + [(f"junk/{i}", b"") for i in range(40)])
    with pytest.raises(PackageError, match="exceed the limit of 20"):
        open_package(many, limits=PackageLimits(max_members=20))
    with pytest.raises(PackageError, match="over the limit of 1000 per member"):
        open_package(zpkg, limits=PackageLimits(max_member_bytes=1000))
    with pytest.raises(ConfigError, match='"max_members" must be a positive integer'):
        PackageLimits(max_members=0)


def test_not_enough_space_is_one_line_before_unpacking(tmp_path, zpkg, monkeypatch):
    # a full (or RAM-backed, small) cache file system, as statvfs reports it
    import edgekit.package as pkg

    monkeypatch.setattr(pkg.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1000))
    with pytest.raises(PackageError, match="unpacking needs \\d+ bytes, but .* has 1000 free"):
        open_package(zpkg)


def test_huge_manifests_deep_json_and_huge_integers_are_refused(tmp_path, dpkg):
    m = dpkg / MANIFEST
    original = m.read_bytes()
    with open(m, "ab") as f:  # 2 GB of "whitespace", sparse: the size alone refuses it
        f.truncate(2 << 30)
    seal_directory_cost = time.monotonic()
    with pytest.raises(PackageError, match="integrity record says|over the limit"):
        open_package(dpkg)
    assert time.monotonic() - seal_directory_cost < 5
    m.write_bytes(original)
    for payload, message in [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64 levels"),
        (b'{"schema": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b" " * (9 << 20) + original, "over the limit of"),
    ]:
        m.write_bytes(payload)
        seal_directory(dpkg)
        with pytest.raises((ManifestError, PackageError), match=message):
            open_package(dpkg)


# ----------------------------------------------------------------------------- 5. no litter
_HOLDER = textwrap.dedent("""
    import sys, time, edgekit
    m = edgekit.load(sys.argv[1])
    print("loaded", flush=True)
    time.sleep(60)
""")


def test_sigterm_leaves_nothing_that_grows(tmp_path, zpkg, fresh_cache):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(zpkg)], stdout=subprocess.PIPE, env=env, text=True)
        assert p.stdout.readline().strip() == "loaded"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    entries = sorted(x.name for x in fresh_cache.iterdir())
    assert len(entries) == 1 and ".partial-" not in entries[0]


def test_partial_unpack_of_a_killed_process_is_removed(tmp_path, zpkg, fresh_cache):
    edgekit.load(zpkg).close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = fresh_cache / f"{'0' * 64}.partial-{int(dead.stdout)}-abc"
    (stale / "root" / "model").mkdir(parents=True)
    (stale / "root" / "model" / "model.onnx").write_bytes(b"half")
    other = make_package(tmp_path, GM["depthwise_separable"], "other.edgepkg")
    edgekit.load(other).close()  # any unpack sweeps up after killed ones
    assert not stale.exists()


def test_cache_is_size_bounded_lru(tmp_path, fresh_cache, monkeypatch):
    a = make_package(tmp_path, GM["conv_bn_relu"], "a.edgepkg")
    b = make_package(tmp_path, GM["depthwise_separable"], "b.edgepkg")
    monkeypatch.setenv("EDGEKIT_PACKAGE_CACHE_MB", "0")  # keep only the package in use
    first = open_package(a)
    first.close()
    second = open_package(b)
    assert [x.name for x in fresh_cache.iterdir()] == [second.digest]
    second.close()
    monkeypatch.setenv("EDGEKIT_PACKAGE_CACHE_MB", "many")
    with pytest.raises(ConfigError, match="EDGEKIT_PACKAGE_CACHE_MB"):
        open_package(a)


def test_entry_in_use_is_not_evicted(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.setenv("EDGEKIT_PACKAGE_CACHE_MB", "0")
    a = open_package(make_package(tmp_path, GM["conv_bn_relu"], "a.edgepkg"))
    b = open_package(make_package(tmp_path, GM["depthwise_separable"], "b.edgepkg"))
    assert a.root.exists() and b.root.exists()
    a.close()
    b.close()


def test_damaged_cache_entry_is_rebuilt(tmp_path, zpkg):
    first = open_package(zpkg)
    (first.root / "model" / "model.onnx").write_bytes(b"truncated")
    first.close()
    again = open_package(zpkg)  # size differs from the record: unpacked afresh
    assert (again.root / "model" / "model.onnx").stat().st_size > 100
    again.close()


# ----------------------------------------------------------------------------- 6. one line, exit 2
def test_predict_after_close_is_a_clear_error(zpkg):
    m = edgekit.load(zpkg)
    x = np.zeros((32, 32, 3), np.uint8)
    m.predict(x)
    m.close()
    with pytest.raises(EdgekitError, match="was closed; load the package again"):
        m.predict(x)
    m.close()  # idempotent


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          # an explicit PYTHONPATH is kept: test_numpy1 runs this file on an installed-style tree
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(ROOT)))


def _one_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_keygen_sign_verify(tmp_path, zpkg):
    key = tmp_path / "k"
    assert _cli("keygen", key).returncode == 0
    _one_line(_cli("verify", zpkg, "--key", f"{key}.pub"), "not signed")
    assert _cli("sign", zpkg, "--key", key).returncode == 0
    ok = _cli("verify", zpkg, "--key", f"{key}.pub", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["verified"] is True
    _one_line(_cli("keygen", key), "already exists")
    _one_line(_cli("sign", zpkg, "--key", f"{key}.pub"), "expected a PEM block")
    (tmp_path / "webapp").mkdir()
    (tmp_path / "webapp" / "index.html").write_text("x")
    _one_line(_cli("sign", zpkg, "--key", key, "-o", tmp_path / "webapp"), "not an edgekit package")


def test_cli_inspect_damaged_package_is_one_line(tmp_path, zpkg):
    raw = bytearray(zpkg.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    bad = tmp_path / "flip.edgepkg"
    bad.write_bytes(bytes(raw))
    _one_line(_cli("inspect", bad), str(bad))


def test_cli_json_renders_nan_as_null(tmp_path):
    from edgekit.cli import _finite_json

    doc, bad = _finite_json({"score": float("nan"), "x": [np.float32("inf"), 1.5], "a": np.array([np.nan, 2.0])})
    assert bad == 3 and json.loads(json.dumps(doc, allow_nan=False)) == {"score": None, "x": [None, 1.5], "a": [None, 2.0]}


# ----------------------------------------------------------------------------- build side: refused before the build
def test_build_refuses_a_foreign_output_before_building(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    app = _webapp(tmp_path / "webapp")
    model = GM["conv_bn_relu"].path
    t0 = time.monotonic()
    _one_line(_cli("build", model, "--target", "onnxruntime", "-o", app), "not an edgekit package")
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "manifest.json"]
    (tmp_path / "x.edgepkg").mkdir()
    _one_line(_cli("build", model, "--target", "onnxruntime", "-o", tmp_path / "x.edgepkg"), "existing folder")
    precious = tmp_path / "report.zip"
    precious.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip that is not a package
    _one_line(_cli("build", model, "--target", "onnxruntime", "-o", precious), "not an edgekit package")
    assert precious.read_bytes() == b"PK\x05\x06" + bytes(18)
    with pytest.raises(ConfigError, match="not an edgekit package"):
        edgekit.build(model, target="onnxruntime", output=app)
    assert time.monotonic() - t0 < 120


def test_build_with_non_utf8_labels_is_one_line(tmp_path):
    pytest.importorskip("onnx")
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"caf\xe9\nthe\n")
    _one_line(_cli("build", GM["conv_bn_relu"].path, "--target", "onnxruntime", "--task", "classify", "--labels", labels,
                   "-o", tmp_path / "o.edgepkg"), "labels file is not UTF-8")


def test_build_sign_makes_a_signed_package(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    key = tmp_path / "k"
    _cli("keygen", key)
    # a device policy in the build host's environment does not stop the build verifying its own staged package
    monkeypatch.setenv("EDGEKIT_TRUSTED_KEYS", f"{key}.pub")
    out = tmp_path / "signed.edgepkg"
    proc = _cli("build", GM["conv_bn_relu"].path, "--target", "onnxruntime", "--sign", key, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    with edgekit.load(out, trusted_keys=[f"{key}.pub"]) as m:
        assert m._package.signed_by == PublicKey.load(f"{key}.pub").key_id
    _one_line(_cli("build", GM["conv_bn_relu"].path, "--target", "onnxruntime", "--sign", tmp_path / "nokey", "-o", out),
              "no such key file")


# ----------------------------------------------------------------------------- 8. lean device packages
def test_export_snpe_refuses_other_targets_and_non_empty_folders(tmp_path, zpkg):
    _one_line(_cli("export", "snpe", zpkg, tmp_path / "out", "--model", GM["conv_bn_relu"].path),
              "has no SNPE/QAIRT export")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    _one_line(_cli("export", "snpe", zpkg, full, "--model", GM["conv_bn_relu"].path), "not an empty folder")
    assert (full / "keep.txt").read_text() == "x"


def test_concurrent_first_loads_share_one_entry(tmp_path, zpkg, fresh_cache):
    code = "import sys, edgekit; m = edgekit.load(sys.argv[1]); m.close(); print('ok')"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(zpkg)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["ok"] * 4
    assert len([x for x in fresh_cache.iterdir()]) == 1
