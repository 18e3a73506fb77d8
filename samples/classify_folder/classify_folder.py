"""Classify every image in a folder with an edgekit package, using only the device-side API.

    python samples/classify_folder/classify_folder.py model.edgepkg images/ [--top 3] [--threads 2]

When the folder holds one subfolder per class (named like the labels, or
``<index>_<name>`` as in the bundled Fashion-MNIST data), it also reports
accuracy and a confusion summary.  Needs only numpy, Pillow and the package's
runtime: no build-side library is imported.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import edgekit

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def expected_index(path: Path, root: Path, labels: Optional[List[str]]) -> Optional[int]:
    rel = path.relative_to(root).parts
    if len(rel) < 2:
        return None
    folder = rel[0]
    m = re.match(r"^(\d+)_", folder)
    if m:
        return int(m.group(1))
    if labels and folder in labels:
        return labels.index(folder)
    return None


def classify_folder(package: Path, folder: Path, top: int = 1, threads: Optional[int] = None) -> Dict[str, object]:
    # `threads` is the same option on every runner (onnxruntime, openvino, qnn), checked by its schema
    options = {"threads": threads} if threads is not None else {}
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"{folder}: no images found")
    correct = labelled = 0
    confusions: Counter = Counter()
    rows = []
    start = time.perf_counter()
    with edgekit.load(package, **options) as model:
        labels = list(model.labels) if model.labels else None
        for path in images:
            result = model.predict(path)
            rows.append((path, result))
            want = expected_index(path, folder, labels)
            if want is not None:
                labelled += 1
                if result.index == want:
                    correct += 1
                else:
                    confusions[(labels[want] if labels else want, result.label or result.index)] += 1
    elapsed = time.perf_counter() - start
    return {
        "rows": rows,
        "images": len(images),
        "labelled": labelled,
        "accuracy": correct / labelled if labelled else None,
        "confusions": confusions.most_common(5),
        "ms_per_image": 1e3 * elapsed / len(images),
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--top", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quiet", action="store_true", help="Only the summary.")
    args = ap.parse_args(argv)
    try:
        report = classify_folder(args.package, args.folder, args.top, args.threads)
    except edgekit.EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for path, r in report["rows"]:
            tops = ", ".join(f"{c.label or c.index} {c.score:.2f}" for c in r.top[: args.top])
            print(f"{path.relative_to(args.folder)}: {tops}")
    print(f"{report['images']} images, {report['ms_per_image']:.2f} ms/image (decode + preprocess + infer)")
    if report["accuracy"] is not None:
        print(f"accuracy {100 * report['accuracy']:.2f}% on {report['labelled']} labelled images")
        for (want, got), n in report["confusions"]:
            print(f"  {want} → {got}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
