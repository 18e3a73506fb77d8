"""Train the bundled Fashion-MNIST CNN and write edgekit's default model and data.

This produces everything under ``targets/data/`` that ``edgekit quickstart``
ships inside the wheel:

* ``fashion_mnist_cnn.onnx``   -- the trained CNN, written with ``onnx.helper``
  directly from the torch weights (no ``torch.onnx.export``: no exporter
  dependencies, and we control exactly which nodes appear). BatchNormalization
  stays a real BN node carrying the running statistics so that the
  canonicalizer's BN folding is exercised on the default model.
* ``fashion_mnist_labels.txt`` -- the 10 class names, one per line.
* ``fashion_mnist_model.json`` -- preprocessing steps, task, input/output
  names, training recipe and the *measured* accuracies.
* ``fashion_mnist/calib/<k_name>/*.png`` -- 300 TRAIN images (30 per class).
* ``fashion_mnist/val/<k_name>/*.png``   -- 1,000 TEST images (100 per class).

Usage::

    python samples/fashion_mnist/train.py                 # train + export everything
    python samples/fashion_mnist/train.py --export-only   # only the image subsets + labels
    python samples/fashion_mnist/train.py --data DIR      # idx .gz files somewhere else

The data comes from the Debian package ``dataset-fashion-mnist`` (MIT licence,
Zalando Research). Files are read with ``gzip`` + ``numpy`` only; nothing is
downloaded and nothing is unpickled.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT_DIR = REPO_ROOT / "targets" / "data"

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Index-prefixed, sanitized names so that a sorted directory listing gives the
# label order (0..9) -- class-folder datasets are labelled by sorted folder name.
CLASS_FOLDERS = (
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
)

# Normalization used in training and stored in the preprocessing steps:
# y = (x * SCALE - MEAN) / STD with x the 0..255 pixel. These are the
# Fashion-MNIST train-split pixel mean/std (checked against the data at run time).
SCALE = 1.0 / 255.0
MEAN = 0.2860
STD = 0.3530

SEED = 20240601
CALIB_PER_CLASS = 30
VAL_PER_CLASS = 100

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.17 (the version edgekit supports)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzip'd IDX file (the MNIST format): big-endian header, uint8 data."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: IDX magic {magic:#x}, expected {expected_magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def load_fashion_mnist(data_dir: Path) -> dict[str, np.ndarray]:
    """Return train/test images (N, 28, 28) uint8 and labels (N,) uint8."""
    missing = [name for name in FILES.values() if not (data_dir / name).is_file()]
    if missing:
        raise SystemExit(
            f"Fashion-MNIST not found in {data_dir} (missing: {', '.join(missing)}).\n"
            "Install it with `apt-get install dataset-fashion-mnist` "
            f"(files land in {DEFAULT_DATA_DIR}), or point --data at a folder "
            "holding the four idx .gz files."
        )
    out = {
        "train_images": _read_idx(data_dir / FILES["train_images"], 0x0803),
        "train_labels": _read_idx(data_dir / FILES["train_labels"], 0x0801),
        "test_images": _read_idx(data_dir / FILES["test_images"], 0x0803),
        "test_labels": _read_idx(data_dir / FILES["test_labels"], 0x0801),
    }
    if out["train_images"].shape != (60000, 28, 28) or out["test_images"].shape != (10000, 28, 28):
        raise SystemExit(
            f"unexpected Fashion-MNIST shapes: train {out['train_images'].shape}, "
            f"test {out['test_images'].shape}"
        )
    return out


def normalize(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), exactly the manifest's steps."""
    x = images_u8.astype(np.float32)[:, None, :, :]
    return ((x * np.float32(SCALE) - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def preprocess_steps() -> list[dict[str, Any]]:
    return [
        {"op": "color", "mode": "gray"},
        {"op": "resize", "size": [28, 28], "mode": "stretch", "interpolation": "area"},
        {"op": "normalize", "mean": [MEAN], "std": [STD], "scale": SCALE},
        {"op": "layout", "order": "nchw"},
        {"op": "dtype", "dtype": "float32"},
    ]


# ---------------------------------------------------------------------------
# Image subsets (calibration / validation)
# ---------------------------------------------------------------------------


def select_subset(labels: np.ndarray, per_class: int, seed: int) -> list[np.ndarray]:
    """Seeded, per-class selection; returns sorted dataset indices per class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == k)
        pick = rng.choice(idx, size=per_class, replace=False)
        chosen.append(np.sort(pick))
    return chosen


def write_subset(
    root: Path, images: np.ndarray, picks: list[np.ndarray], split: str
) -> tuple[int, int]:
    """Write class folders of 28x28 grayscale PNGs; returns (files, bytes)."""
    from PIL import Image

    if root.exists():
        shutil.rmtree(root)
    n_files = n_bytes = 0
    for k, idx in enumerate(picks):
        folder = root / CLASS_FOLDERS[k]
        folder.mkdir(parents=True)
        for i in idx:
            # File names keep the index in the original split, for traceability.
            path = folder / f"{split}_{int(i):05d}.png"
            Image.fromarray(np.ascontiguousarray(images[i])).save(path, format="PNG", optimize=True)
            n_files += 1
            n_bytes += path.stat().st_size
    return n_files, n_bytes


def export_subsets(data: dict[str, np.ndarray], out_dir: Path) -> dict[str, Any]:
    """Regenerate labels.txt and the calib/val image folders deterministically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fashion_mnist_labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    calib_picks = select_subset(data["train_labels"], CALIB_PER_CLASS, SEED)
    val_picks = select_subset(data["test_labels"], VAL_PER_CLASS, SEED + 1)
    sub = out_dir / "fashion_mnist"
    nc, bc = write_subset(sub / "calib", data["train_images"], calib_picks, "train")
    nv, bv = write_subset(sub / "val", data["test_images"], val_picks, "test")
    print(f"calib: {nc} PNGs, {bc} bytes; val: {nv} PNGs, {bv} bytes (total {bc + bv} bytes)")
    return {
        "calib_indices": calib_picks,
        "val_indices": val_picks,
        "calib_files": nc,
        "val_files": nv,
        "image_bytes": bc + bv,
    }


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def build_torch_model():  # type: ignore[no-untyped-def]
    import torch.nn as nn

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return layers

    return nn.Sequential(
        *block(1, 16, pool=True),  # 28 -> 14
        *block(16, 32, pool=True),  # 14 -> 7
        *block(32, 64, pool=False),  # 7x7x64
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 7 * 7, 10),
    )


def torch_to_onnx(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Write the trained nn.Sequential as ONNX with onnx.helper (BN kept as BN)."""
    import onnx
    import torch.nn as nn
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    inits = []
    cur = INPUT_NAME
    n = 0

    def arr(t) -> np.ndarray:  # type: ignore[no-untyped-def]
        return t.detach().cpu().numpy().astype(np.float32)

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    modules = list(model)
    for i, m in enumerate(modules):
        is_last = i == len(modules) - 1
        out = OUTPUT_NAME if is_last else f"t{i}"
        if isinstance(m, nn.Conv2d):
            n += 1
            ins = [cur, init(f"conv{n}.weight", arr(m.weight))]
            if m.bias is not None:
                ins.append(init(f"conv{n}.bias", arr(m.bias)))
            nodes.append(
                helper.make_node(
                    "Conv",
                    ins,
                    [out],
                    name=f"conv{n}",
                    kernel_shape=list(m.kernel_size),
                    strides=list(m.stride),
                    pads=[m.padding[0], m.padding[1], m.padding[0], m.padding[1]],
                    dilations=list(m.dilation),
                    group=m.groups,
                )
            )
        elif isinstance(m, nn.BatchNorm2d):
            nodes.append(
                helper.make_node(
                    "BatchNormalization",
                    [
                        cur,
                        init(f"bn{n}.scale", arr(m.weight)),
                        init(f"bn{n}.bias", arr(m.bias)),
                        init(f"bn{n}.mean", arr(m.running_mean)),
                        init(f"bn{n}.var", arr(m.running_var)),
                    ],
                    [out],
                    name=f"bn{n}",
                    epsilon=float(m.eps),
                )
            )
        elif isinstance(m, nn.ReLU):
            nodes.append(helper.make_node("Relu", [cur], [out], name=f"relu{n}"))
        elif isinstance(m, nn.MaxPool2d):
            nodes.append(
                helper.make_node("MaxPool", [cur], [out], name=f"pool{n}", kernel_shape=[2, 2], strides=[2, 2])
            )
        elif isinstance(m, nn.Flatten):
            nodes.append(helper.make_node("Flatten", [cur], [out], name="flatten", axis=1))
        elif isinstance(m, nn.Dropout):
            continue  # identity at inference
        elif isinstance(m, nn.Linear):
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [cur, init("fc.weight", arr(m.weight)), init("fc.bias", arr(m.bias))],
                    [out],
                    name="fc",
                    transB=1,
                )
            )
        else:
            raise TypeError(f"no ONNX mapping for {type(m).__name__}")
        cur = out
    if cur != OUTPUT_NAME:
        raise RuntimeError("the last module did not produce the output")

    graph = helper.make_graph(
        nodes,
        "fashion_mnist_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgekit-samples",
        producer_version="fashion_mnist/train.py",
        doc_string="Fashion-MNIST CNN (conv16-conv32-conv64 with BN, FC 10). "
        f"Input: gray 28x28, (x/255 - {MEAN}) / {STD}, NCHW float32. Output: logits.",
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx_model, str(path))


def train(data: dict[str, np.ndarray], epochs: int, batch_size: int, lr: float):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)

    x_train = torch.from_numpy(normalize(data["train_images"]))
    y_train = torch.from_numpy(data["train_labels"].astype(np.int64))
    model = build_torch_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.from_numpy(rng.permutation(len(x_train)))
        total_loss = 0.0
        correct = 0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            # Augmentation: random horizontal flip of half the batch.
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        test_acc = torch_accuracy(model, data["test_images"], data["test_labels"])
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total_loss / len(x_train):.4f} "
            f"train acc {correct / len(x_train):.4f} test acc {test_acc:.4f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    model.eval()
    return model


def torch_logits(model, images_u8: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    model.eval()
    x = torch.from_numpy(normalize(images_u8))
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), 1000):
            outs.append(model(x[s : s + 1000]).numpy())
    return np.concatenate(outs)


def torch_accuracy(model, images_u8: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    pred = torch_logits(model, images_u8).argmax(1)
    return float((pred == labels).mean())


def onnx_logits(path: Path, images_u8: np.ndarray) -> np.ndarray:
    """Run the written ONNX model one image at a time (its batch is fixed at 1)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = normalize(images_u8)
    return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0] for i in range(len(x))])


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="folder with the idx .gz files")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (targets/data)")
    p.add_argument("--export-only", action="store_true", help="only regenerate labels + image subsets")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)

    data = load_fashion_mnist(args.data)
    train_mean = float(data["train_images"].mean() / 255.0)
    train_std = float(data["train_images"].std() / 255.0)
    print(f"train pixel mean {train_mean:.4f} std {train_std:.4f} (using {MEAN} / {STD})")

    subsets = export_subsets(data, args.out)
    if args.export_only:
        return 0

    t0 = time.time()
    model = train(data, args.epochs, args.batch_size, args.lr)
    train_seconds = time.time() - t0

    onnx_path = args.out / "fashion_mnist_cnn.onnx"
    torch_to_onnx(model, onnx_path)

    test_x, test_y = data["test_images"], data["test_labels"]
    t_logits = torch_logits(model, test_x)
    o_logits = onnx_logits(onnx_path, test_x)
    max_diff = float(np.abs(t_logits - o_logits).max())
    t_pred, o_pred = t_logits.argmax(1), o_logits.argmax(1)
    same = int((t_pred == o_pred).sum())
    torch_acc = float((t_pred == test_y).mean())
    ort_acc = float((o_pred == test_y).mean())
    val_idx = np.concatenate(subsets["val_indices"])
    val_acc = float((o_pred[val_idx] == test_y[val_idx]).mean())
    calib_idx = np.concatenate(subsets["calib_indices"])
    calib_acc = float(
        (onnx_logits(onnx_path, data["train_images"][calib_idx]).argmax(1) == data["train_labels"][calib_idx]).mean()
    )
    print(f"torch test acc {torch_acc:.4f}; onnxruntime test acc {ort_acc:.4f}")
    print(f"torch vs onnxruntime: max |diff| {max_diff:.2e}, same top-1 on {same}/{len(test_y)}")
    print(f"onnxruntime acc on val subset ({len(val_idx)}): {val_acc:.4f}; on calib subset: {calib_acc:.4f}")
    if max_diff > 1e-3 or same != len(test_y):
        print("ERROR: the ONNX model does not match torch", file=sys.stderr)
        return 1

    meta = {
        "name": "fashion_mnist_cnn",
        "model": onnx_path.name,
        "labels": "fashion_mnist_labels.txt",
        "task": "classify",
        "inputs": [{"name": INPUT_NAME, "shape": [1, 1, 28, 28], "dtype": "float32", "layout": "nchw"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [1, 10], "dtype": "float32", "kind": "logits"}],
        "preprocess": preprocess_steps(),
        "class_names": list(CLASS_NAMES),
        "class_folders": list(CLASS_FOLDERS),
        "class_folders_convention": "'<label index>_<lowercase name, non-alphanumerics as _>'; "
        "sorted folder order equals label order",
        "calibration": {
            "path": "fashion_mnist/calib",
            "split": "train",
            "per_class": CALIB_PER_CLASS,
            "images": subsets["calib_files"],
            "seed": SEED,
        },
        "validation": {
            "path": "fashion_mnist/val",
            "split": "test",
            "per_class": VAL_PER_CLASS,
            "images": subsets["val_files"],
            "seed": SEED + 1,
        },
        "training": {
            "script": "samples/fashion_mnist/train.py",
            "framework": "torch " + __import__("torch").__version__ + " (CPU, 2 threads)",
            "architecture": "conv3x3(16)-BN-ReLU-maxpool2, conv3x3(32)-BN-ReLU-maxpool2, "
            "conv3x3(64)-BN-ReLU, flatten, dropout 0.3, FC 3136->10",
            "optimizer": f"AdamW lr {args.lr} (one-cycle), weight decay 5e-4, label smoothing 0.05",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "augmentation": "random horizontal flip",
            "seed": SEED,
            "train_seconds": round(train_seconds, 1),
        },
        "accuracy": {
            "fp32_test_torch": round(torch_acc, 4),
            "fp32_test_onnxruntime": round(ort_acc, 4),
            "fp32_val_subset_onnxruntime": round(val_acc, 4),
            "fp32_calib_subset_onnxruntime": round(calib_acc, 4),
            "test_images": int(len(test_y)),
            "torch_vs_onnxruntime_max_abs_diff": float(f"{max_diff:.3g}"),
        },
        "data_source": "Fashion-MNIST (MIT licence, Zalando Research), Debian package dataset-fashion-mnist",
    }
    (args.out / "fashion_mnist_model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and fashion_mnist_model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
