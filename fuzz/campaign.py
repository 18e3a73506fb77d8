"""A seeded random-mutation campaign over the package loader, with outcomes counted by class.

    python fuzz/campaign.py --flips 3000 --manifests 3000 [--seed 0] [--json]

Reproduces the issue's measurements (random byte flips in a package; mutated
manifests through ``open_package`` and ``edgekit inspect``) and prints how
many iterations ended in success, in each ``EdgekitError`` subclass, in any
other exception (a bug) and in a hang (over ``--hang-s`` seconds).  The goal
is 0 non-edgekit exceptions and 0 hangs.  Needs no extra library; the
coverage-guided counterpart is ``fuzz/fuzz_package.py`` (atheris).
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _classify(fn, hang_s: float, counts: collections.Counter, bugs: list) -> None:
    from edgekit.errors import EdgekitError

    t0 = time.monotonic()
    try:
        fn()
        outcome = "ok"
    except EdgekitError as exc:
        outcome = f"EdgekitError/{type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - counting bugs is the point
        outcome = f"BUG/{type(exc).__name__}"
        if len(bugs) < 5:
            bugs.append(traceback.format_exc())
    if time.monotonic() - t0 > hang_s:
        outcome = "HANG"
    counts[outcome] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=1000)
    ap.add_argument("--manifests", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgekit-campaign-"))
    os.environ["EDGEKIT_CACHE_DIR"] = str(work / "cache")
    from models.meta import GOLDEN_MODELS
    from pkgtools import image_steps, make_package
    from typer.testing import CliRunner

    from edgekit.cli import app
    from edgekit.package import MANIFEST, open_package, seal_directory

    gm = {m.name: m for m in GOLDEN_MODELS}["conv_bn_relu"]
    kw = dict(labels=["a", "b", "c"], preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 2})
    seed_zip = make_package(work, gm, "seed.edgepkg", **kw)
    seed_dir = make_package(work, gm, "seed-dir", **kw)
    rng = random.Random(args.seed)
    report = {}

    # 1. byte flips in a zip package (fresh cache each time: a cached twin would mask the flip)
    counts: collections.Counter = collections.Counter()
    bugs: list = []
    raw = seed_zip.read_bytes()
    target = work / "flipped.edgepkg"
    for _ in range(args.flips):
        b = bytearray(raw)
        for _k in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
        target.write_bytes(bytes(b))
        shutil.rmtree(work / "cache", ignore_errors=True)
        _classify(lambda: open_package(target).close(), args.hang_s, counts, bugs)
    report["byte_flips"] = {"iterations": args.flips, "outcomes": dict(counts.most_common()), "bug_samples": bugs}

    # 2. mutated manifests (sealed so the checksums pass): load, then `inspect` text and --json
    counts = collections.Counter()
    inspect_counts: collections.Counter = collections.Counter()
    bugs = []
    original = json.loads((seed_dir / MANIFEST).read_text())
    values = [None, True, 0, -1, 1.5, 10 ** 30, float("nan"), "", "x", [], [1], {}, {"a": 1}, "float32", "nchw", 1e308]

    def paths(doc, prefix=()):
        yield prefix
        if isinstance(doc, dict):
            for k, v in doc.items():
                yield from paths(v, prefix + (k,))
        elif isinstance(doc, list):
            for i, v in enumerate(doc):
                yield from paths(v, prefix + (i,))

    all_paths = [p for p in paths(original) if p and p[0] != "files"]
    runner = CliRunner()
    for _ in range(args.manifests):
        doc = copy.deepcopy(original)
        for _k in range(rng.randint(1, 3)):
            path = rng.choice(all_paths)
            node = doc
            try:
                for k in path[:-1]:
                    node = node[k]
                if rng.random() < 0.15 and isinstance(node, dict):
                    del node[path[-1]]
                else:
                    node[path[-1]] = copy.deepcopy(rng.choice(values))
            except (KeyError, IndexError, TypeError):
                pass
        (seed_dir / MANIFEST).write_text(json.dumps(doc))
        seal_directory(seed_dir)
        loaded = []

        def load_it():
            open_package(seed_dir).close()
            loaded.append(True)

        _classify(load_it, args.hang_s, counts, bugs)
        if loaded:
            for extra in ([], ["--json"]):
                def inspect_it():
                    res = runner.invoke(app, ["inspect", str(seed_dir), *extra])
                    if res.exception is not None and not isinstance(res.exception, SystemExit):
                        raise res.exception
                _classify(inspect_it, args.hang_s, inspect_counts, bugs)
    report["manifests"] = {"iterations": args.manifests, "load_outcomes": dict(counts.most_common()),
                           "inspect_runs_on_loaded": dict(inspect_counts.most_common()), "bug_samples": bugs}
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, r in report.items():
            print(f"{name}: {r['iterations']} iterations")
            for k, v in r.items():
                if isinstance(v, dict):
                    print(f"  {k}: " + ", ".join(f"{a} {b}" for a, b in v.items()))
            for s in r["bug_samples"]:
                print(textwrap_indent(s))
    bad = sum(v for r in report.values() for d in r.values() if isinstance(d, dict) for k, v in d.items()
              if k.startswith(("BUG", "HANG")))
    return 1 if bad else 0


def textwrap_indent(s: str) -> str:
    return "".join("    " + line for line in s.splitlines(True))


if __name__ == "__main__":
    sys.exit(main())
