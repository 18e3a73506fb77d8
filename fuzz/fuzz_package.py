"""Coverage-guided fuzzing of the package loader with atheris (libFuzzer for Python).

Run on purpose, not in CI (see fuzz/README.md)::

    pip install 'edgekit[fuzz]'
    python fuzz/fuzz_package.py -atheris_runs=200000 -timeout=10 [CORPUS_DIR]
    python fuzz/fuzz_package.py --mode manifest -max_total_time=600

``--mode zip`` (default) feeds each input as a whole ``.edgepkg`` file; the
corpus is seeded with real packages, so libFuzzer mutates zip structure,
headers, the integrity record and the members.  ``--mode manifest`` feeds
the input as ``manifest.json`` of a directory package whose integrity record
is re-sealed, so the mutations reach the manifest parser and ``inspect``.

An input that raises anything other than an ``EdgekitError`` is a crash
(libFuzzer saves it as ``crash-<sha1>``); one that runs past ``-timeout``
seconds is a hang.  Reproduce with ``python fuzz/fuzz_package.py crash-...``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MODE = "zip"
if "--mode" in sys.argv:
    i = sys.argv.index("--mode")
    MODE = sys.argv[i + 1]
    del sys.argv[i:i + 2]
if MODE not in ("zip", "manifest"):
    raise SystemExit(f'"--mode" must be one of {{zip, manifest}}, but got {MODE!r}')

WORK = Path(tempfile.mkdtemp(prefix="edgekit-atheris-"))
os.environ["EDGEKIT_CACHE_DIR"] = str(WORK / "cache")

with atheris.instrument_imports():
    import edgekit.manifest  # noqa: F401
    import edgekit.package
    import edgekit.postprocess  # noqa: F401
    import edgekit.preprocess  # noqa: F401
    import edgekit.signing  # noqa: F401
    from edgekit.errors import EdgekitError

from models.meta import GOLDEN_MODELS  # noqa: E402
from pkgtools import image_steps, make_package  # noqa: E402

_GM = {m.name: m for m in GOLDEN_MODELS}["conv_bn_relu"]
_KW = dict(labels=["a", "b", "c"], preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 2})
SEED_ZIP = make_package(WORK, _GM, "seed.edgepkg", **_KW)
SEED_DIR = make_package(WORK, _GM, "seed-dir", **_KW)
TARGET = WORK / "input.edgepkg"
#: outcomes by class, printed every REPORT_EVERY inputs (libFuzzer's own exit skips Python's atexit)
COUNTS: dict = {}
REPORT_EVERY = 5000


def _seed_corpus() -> None:
    """Give libFuzzer real packages to start from when the corpus folder is empty."""
    dirs = [a for a in sys.argv[1:] if not a.startswith("-") and os.path.isdir(a)]
    if dirs and not os.listdir(dirs[0]):
        if MODE == "zip":
            shutil.copy(SEED_ZIP, Path(dirs[0]) / "seed.edgepkg")
        else:
            shutil.copy(SEED_DIR / "manifest.json", Path(dirs[0]) / "manifest.json")


def test_one(data: bytes) -> None:
    shutil.rmtree(WORK / "cache", ignore_errors=True)  # a cached twin would mask the mutation
    if MODE == "zip":
        TARGET.write_bytes(data)
        path = TARGET
    else:
        (SEED_DIR / "manifest.json").write_bytes(data)
        edgekit.package.seal_directory(SEED_DIR)
        path = SEED_DIR
    try:
        edgekit.package.open_package(path).close()
        outcome = "ok"
    except EdgekitError as exc:
        outcome = type(exc).__name__
    COUNTS[outcome] = COUNTS.get(outcome, 0) + 1
    n = sum(COUNTS.values())
    if n % REPORT_EVERY == 0:
        print(f"edgekit outcomes after {n} inputs: {dict(sorted(COUNTS.items()))}", file=sys.stderr, flush=True)


def main() -> None:
    _seed_corpus()
    atheris.Setup(sys.argv, test_one)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
