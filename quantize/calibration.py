"""Calibration feeds: what int8 builds calibrate on and what verification runs.

A :class:`CalibrationSet` is a plain list of feeds (input name → array with
batch dim 1), optionally with labels.  :func:`load_feeds` makes one from

* a folder of images (recursive; ``.jpg .jpeg .png .bmp .webp .tif .tiff``), run through
  the shared :class:`edgekit.preprocess.Preprocessor` — the same code the
  device runs, so calibration sees what the device will see.  When every
  image lies in a class subfolder, labels come from the folders;
* a ``.npz`` file whose keys are the model input names, each array with a
  leading sample axis;
* a ``.npy`` file (single-input models), leading sample axis;
* a single image file;
* any iterable of feeds (dicts name → array, or arrays for single-input
  models), or a mapping name → stacked arrays (what ``np.load(npz)`` gives).

Nothing here falls back to random data, and nothing unpickles
(``np.load(..., allow_pickle=False)``).  Every error is a one-line
:class:`CalibrationError` that says how to fix it.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import CalibrationError, EdgekitError
from edgekit.manifest import TensorSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # TIFF: 16-bit and float frames too
_INDEX_PREFIX = re.compile(r"^(\d+)[_\-](.+)$")

Feed = Dict[str, np.ndarray]


@dataclass
class CalibrationSet:
    """Feeds (batch dim 1, already in the model's input dtype) and optional labels.

    ``classes``: when the labels came from class subfolders, the class names in
    label order (``class_names`` if given, else the folder names; with
    ``<index>_name`` folders, ``classes[i]`` is the folder of label ``i``).
    """

    feeds: List[Feed]
    labels: Optional[List[int]] = None
    source: str = ""
    classes: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.feeds):
            raise CalibrationError(
                f"calibration data {self.source or ''}: {len(self.labels)} labels for {len(self.feeds)} samples; "
                "give one label per sample"
            )

    def __len__(self) -> int:
        return len(self.feeds)

    def __iter__(self) -> Iterator[Feed]:
        return iter(self.feeds)

    @property
    def input_names(self) -> List[str]:
        return list(self.feeds[0]) if self.feeds else []

    def summary(self) -> Dict[str, Any]:
        """JSON-ready description: count, source and per-input statistics."""
        stats: Dict[str, Any] = {}
        for name in self.input_names:
            # float64 accumulation: mean of many float16/uint8 values stays exact enough
            arrays = [np.asarray(f[name]) for f in self.feeds]
            lo = min(float(a.min()) for a in arrays)
            hi = max(float(a.max()) for a in arrays)
            total = sum(float(a.sum(dtype=np.float64)) for a in arrays)
            count = sum(a.size for a in arrays)
            stats[name] = {
                "shape": list(arrays[0].shape),
                "dtype": str(arrays[0].dtype),
                "min": lo,
                "max": hi,
                "mean": total / count if count else 0.0,
            }
        out: Dict[str, Any] = {"count": len(self.feeds), "source": self.source, "inputs": stats}
        out["labelled"] = self.labels is not None
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    def subset(self, indices: Sequence[int], source: Optional[str] = None) -> "CalibrationSet":
        return CalibrationSet(
            feeds=[self.feeds[i] for i in indices],
            labels=[self.labels[i] for i in indices] if self.labels is not None else None,
            source=source if source is not None else self.source,
            classes=self.classes,
        )

    def for_recipe(self, num_samples: int) -> "CalibrationSet":
        """The samples an int8 build calibrates on: at most ``num_samples``, spread
        evenly over the set (every class folder contributes); fewer is a warning."""
        n = len(self)
        if n < num_samples:
            warnings.warn(
                f"int8 calibration uses {n} sample(s), fewer than the recipe's num_samples={num_samples}; "
                "activation ranges may be off — give more data with --calib",
                UserWarning,
                stacklevel=3,
            )
            return self
        if n > num_samples:
            return self.subset(sorted({(k * n) // num_samples for k in range(num_samples)}))
        return self

    @staticmethod
    def required(calibration: Optional["CalibrationSet"], num_samples: int) -> Tuple["CalibrationSet", int]:
        """(the samples an int8 build calibrates on, how many were given); none is an error."""
        if calibration is None or len(calibration) == 0:
            raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
        return calibration.for_recipe(num_samples), len(calibration)

    def split(self, n_holdout: int) -> Tuple["CalibrationSet", "CalibrationSet"]:
        """(calibration, held-out) with ``n_holdout`` samples held out for verification.

        The held-out samples are spread evenly over the set (sample ``k*N//n``),
        so with class folders every class is represented in both parts.
        Deterministic.  ``n_holdout <= 0`` gives an empty held-out set.
        """
        n = len(self.feeds)
        if n_holdout <= 0:
            return self, self.subset([], source=f"{self.source} (held-out: none)")
        if n_holdout >= n:
            raise CalibrationError(
                f"cannot hold out {n_holdout} of {n} samples from {self.source or 'the calibration data'} "
                "and still calibrate; give more samples or hold out fewer"
            )
        held = sorted({(k * n) // n_holdout for k in range(n_holdout)})
        held_set = set(held)
        kept = [i for i in range(n) if i not in held_set]
        return (
            self.subset(kept, source=f"{self.source} (calibration part, {len(kept)})"),
            self.subset(held, source=f"{self.source} (held-out part, {len(held)})"),
        )


class CalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over a :class:`CalibrationSet`.

    onnxruntime's ``CalibrationDataReader`` recognises any class with a
    callable ``get_next`` (its ``__subclasshook__``), so this module does not
    import onnxruntime; ``isinstance(reader, CalibrationDataReader)`` holds.
    """

    def __init__(self, calibration: CalibrationSet) -> None:
        self._feeds = list(calibration.feeds)
        self._start = 0
        self._end = len(self._feeds)
        self._pos = 0

    def get_next(self) -> Optional[Feed]:
        if self._pos >= self._end:
            return None
        feed = self._feeds[self._pos]
        self._pos += 1
        return feed

    def rewind(self) -> None:
        self._pos = self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Used by onnxruntime when it calibrates in strides."""
        self._start = max(0, start_index)
        self._end = min(len(self._feeds), end_index)
        self._pos = self._start

    def __len__(self) -> int:
        return len(self._feeds)

    def __iter__(self) -> "CalibrationReader":
        return self

    def __next__(self) -> Feed:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def _fmt_shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _dims_match(got: Sequence[int], want: Sequence[int]) -> bool:
    # non-positive dims in the spec are wildcards (a dim the model leaves dynamic)
    return len(got) == len(want) and all(w is None or w <= 0 or g == w for g, w in zip(got, want))


def _sample(array: Any, spec: TensorSpec, where: str) -> np.ndarray:
    """One sample, checked against the input's shape and cast to its dtype."""
    a = np.asarray(array)
    want = tuple(spec.shape)
    if not _dims_match(a.shape, want):
        if want and want[0] == 1 and _dims_match((1,) + a.shape, want):
            a = a[np.newaxis]  # a sample given without its batch dim
        else:
            raise CalibrationError(
                f"{where}: input {spec.name!r} expects shape {_fmt_shape(want)}, got {_fmt_shape(a.shape)}; "
                "make each sample match the model input (one sample, batch 1)"
            )
    if a.dtype.kind == "O":
        raise CalibrationError(f"{where}: input {spec.name!r} got an object array; give numeric arrays")
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        raise CalibrationError(f"{where}: input {spec.name!r} contains NaN or infinity; clean the calibration data")
    return np.ascontiguousarray(a.astype(spec.dtype, copy=False))


def _stacked(array: np.ndarray, spec: TensorSpec, where: str) -> List[np.ndarray]:
    """Split an array with a leading sample axis: [N, *shape[1:]] or [N, *shape]."""
    a = np.asarray(array)
    want = tuple(spec.shape)
    if a.ndim == len(want) + 1 and _dims_match(a.shape[1:], want):
        return [_sample(a[i], spec, where) for i in range(a.shape[0])]
    if a.ndim == len(want) and len(want) >= 1 and _dims_match(a.shape[1:], want[1:]):
        return [_sample(a[i : i + 1], spec, where) for i in range(a.shape[0])]
    raise CalibrationError(
        f"{where}: input {spec.name!r} expects samples of shape {_fmt_shape(want)} stacked on a leading axis "
        f"([N, {', '.join(str(d) for d in want[1:])}] or [N, {', '.join(str(d) for d in want)}]), "
        f"got {_fmt_shape(a.shape)}; reshape the array"
    )


def _evenly(n_total: int, limit: Optional[int]) -> List[int]:
    if limit is None or limit >= n_total:
        return list(range(n_total))
    return sorted({(k * n_total) // limit for k in range(limit)})


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CalibrationError(f'"limit" must be a positive integer or None, but got {limit!r}')


def _from_arrays(
    arrays: Mapping[str, Any], inputs: Sequence[TensorSpec], where: str, limit: Optional[int]
) -> CalibrationSet:
    expected = [s.name for s in inputs]
    found = list(arrays.keys())
    if sorted(expected) != sorted(found):
        example = ", ".join(f"{n!r}: array" for n in expected)
        raise CalibrationError(
            f"{where}: arrays are named {found} but the model inputs are {expected}; "
            f"save one array per input under its name, e.g. np.savez(path, **{{{example}}})"
        )
    per_input: Dict[str, List[np.ndarray]] = {}
    for spec in inputs:
        try:
            data = arrays[spec.name]
            data = np.asarray(data)
        except ValueError as err:  # an object array in an npz refuses to load without pickle
            raise CalibrationError(f"{where}: array {spec.name!r} cannot be read without pickle ({err}); "
                                   "save plain numeric arrays") from None
        per_input[spec.name] = _stacked(data, spec, where)
    counts = {name: len(v) for name, v in per_input.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{where}: inputs have different sample counts {counts}; give every input N samples")
    n = next(iter(counts.values()))
    if n == 0:
        raise CalibrationError(f"{where}: holds 0 samples; give at least one sample per input")
    idx = list(range(n))[: limit if limit is not None else n]
    feeds = [{spec.name: per_input[spec.name][i] for spec in inputs} for i in idx]
    return CalibrationSet(feeds=feeds, source=where)


def _load_npz(path: Path, inputs: Sequence[TensorSpec], limit: Optional[int]) -> CalibrationSet:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError, ValueError ...
        raise CalibrationError(f"{path}: cannot read the .npz file ({err}); re-save it with np.savez") from None
    if isinstance(npz, np.ndarray):
        raise CalibrationError(f"{path}: holds a single .npy array, not an .npz archive; rename it to .npy "
                               "or save it with np.savez(path, **{input_name: array})")
    arrays: Dict[str, np.ndarray] = {}
    try:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as err:
                raise CalibrationError(
                    f"{path}: array {key!r} needs pickle to load ({err}); save plain numeric arrays"
                ) from None
            except Exception as err:
                raise CalibrationError(f"{path}: array {key!r} is unreadable ({err}); re-save the file") from None
    finally:
        npz.close()
    return _from_arrays(arrays, inputs, str(path), limit)


def _load_npy(path: Path, inputs: Sequence[TensorSpec], limit: Optional[int]) -> CalibrationSet:
    if len(inputs) != 1:
        names = [s.name for s in inputs]
        raise CalibrationError(
            f"{path}: a .npy file feeds one input, but the model has {len(inputs)} ({names}); "
            "use an .npz with one array per input name"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise CalibrationError(f"{path}: needs pickle to load ({err}); save a plain numeric array") from None
    except Exception as err:
        raise CalibrationError(f"{path}: cannot read the .npy file ({err}); re-save it with np.save") from None
    return _from_arrays({inputs[0].name: array}, inputs, str(path), limit)


def _class_index(folder: str, class_names: Optional[Sequence[str]], sorted_folders: Sequence[str],
                 root: Path) -> int:
    if class_names is not None:
        names = list(class_names)
        if folder in names:
            return names.index(folder)
        m = _INDEX_PREFIX.match(folder)
        if m:
            idx = int(m.group(1))
            if idx < len(names):
                return idx
        raise CalibrationError(
            f"{root}: class folder {folder!r} matches none of the {len(names)} labels "
            f"(by exact name or an '<index>_name' prefix); rename the folder or fix the labels"
        )
    return sorted_folders.index(folder)


_NAMED_SKIPS = 12  # undecodable files named one by one in the warning


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name


def _skip_text(path: Path, why: str, root: Path) -> str:
    """'a/b.jpg is not an image Pillow can decode (...)': the reason without its path and fix hint."""
    reason = why.split("; ")[0].replace(str(path), "").strip()
    return f"{_rel(path, root)} {reason}" if reason.startswith("is ") else f"{_rel(path, root)}: {reason}"


def _load_image_folder(root: Path, *args: Any) -> CalibrationSet:
    """Every image below ``root`` (sorted, so every class folder contributes); ``args`` as :func:`_load_images`."""
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise CalibrationError(
            f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); "
            "point --calib at a folder of images, or give a .npz/.npy file of input tensors"
        )
    return _load_images(files, root, *args)


def _load_images(
    files: Sequence[Path],
    root: Path,
    inputs: Sequence[TensorSpec],
    preprocessor: Any,
    limit: Optional[int],
    class_names: Optional[Sequence[str]],
    progress: Optional[Callable[[int, int], None]] = None,
) -> CalibrationSet:
    if len(inputs) != 1:
        names = [s.name for s in inputs]
        raise CalibrationError(
            f"{root}: images can feed a single-input model only, but this model has {len(inputs)} inputs "
            f"({names}); give an .npz with one array per input name"
        )
    if preprocessor is None:
        raise CalibrationError(
            f"{root}: images need preprocessing steps to become tensors; "
            "pass --size/--mean/--std (or --preprocess FILE.json, or preprocess=[...])"
        )
    if getattr(preprocessor, "is_image", True) is False:
        raise CalibrationError(
            f"{root}: images given, but the preprocessing has no color/resize step, so it takes tensors; "
            "add image steps (--size HxW) or give a .npz/.npy file of input tensors"
        )
    spec = inputs[0]

    # Labels only when every image sits in a class subfolder (root/<class>/...).
    rel = [p.relative_to(root).parts if root.is_dir() else (p.name,) for p in files]
    labelled = root.is_dir() and all(len(parts) >= 2 for parts in rel)
    classes: Optional[List[str]] = None
    folder_index: Dict[str, int] = {}
    if labelled:
        folders = sorted({parts[0] for parts in rel})
        if class_names is None and all(_INDEX_PREFIX.match(f) for f in folders):
            # "0_tshirt", "1_trouser", ..., "10_x": the number is the label, not the sort order
            folder_index = {f: int(_INDEX_PREFIX.match(f).group(1)) for f in folders}  # type: ignore[union-attr]
            # classes[i] is the folder of label i ("" where no folder has that index)
            classes = [""] * (max(folder_index.values()) + 1)
            for f, i in folder_index.items():
                classes[i] = f
        else:
            folder_index = {f: _class_index(f, class_names, folders, root) for f in folders}
            classes = list(class_names) if class_names is not None else folders

    chosen = [files[i] for i in _evenly(len(files), limit)]
    feeds: List[Feed] = []
    labels: List[int] = []
    skipped: List[Tuple[Path, str]] = []
    for done, path in enumerate(chosen, 1):
        if progress is not None:
            progress(done, len(chosen))
        try:
            tensor = preprocessor(path).tensor
        except (EdgekitError, OSError, ValueError, SyntaxError) as err:
            # PIL raises UnidentifiedImageError (an OSError) / SyntaxError for non-images
            skipped.append((path, str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        feeds.append({spec.name: _sample(tensor, spec, str(path))})
        if labelled:
            labels.append(folder_index[path.relative_to(root).parts[0]])
    if not feeds:
        first = skipped[0] if skipped else (root, "no files")
        raise CalibrationError(
            f"{root}: none of the {len(chosen)} image file(s) could be read (first: {first[0].name}: {first[1]}); "
            "give a folder of valid images"
        )
    if skipped:
        # every failed file by name (a dozen at most), and what is left: "verified on 4 samples"
        # must not read as if the folder's 5 images had all been used
        shown = "; ".join(_skip_text(p, why, root) for p, why in skipped[:_NAMED_SKIPS])
        more = f"; and {len(skipped) - _NAMED_SKIPS} more" if len(skipped) > _NAMED_SKIPS else ""
        warnings.warn(
            f"{root}: skipped {len(skipped)} file(s) that could not be decoded, kept {len(feeds)} of "
            f"{len(chosen)} image(s): {shown}{more}",
            UserWarning,
            stacklevel=3,
        )
    desc = f"{root} ({len(feeds)} images" + (f", {len(classes or [])} classes" if labelled else "")
    desc += f", {len(skipped)} undecodable skipped)" if skipped else ")"
    return CalibrationSet(feeds=feeds, labels=labels if labelled else None, source=desc, classes=classes)


def _from_iterable(items: Iterable[Any], inputs: Sequence[TensorSpec], limit: Optional[int]) -> CalibrationSet:
    expected = [s.name for s in inputs]
    specs = {s.name: s for s in inputs}
    feeds: List[Feed] = []
    for i, item in enumerate(items):
        if limit is not None and len(feeds) >= limit:
            break
        where = f"calibration feed [{i}]"
        if isinstance(item, Mapping):
            if sorted(item.keys()) != sorted(expected):
                raise CalibrationError(
                    f"{where}: has inputs {list(item.keys())} but the model inputs are {expected}; "
                    "give one array per model input name"
                )
            feeds.append({name: _sample(item[name], specs[name], where) for name in expected})
        elif isinstance(item, (np.ndarray, list, tuple)) or np.isscalar(item):
            if len(inputs) != 1:
                raise CalibrationError(
                    f"{where}: a bare array can feed a single-input model only, but the model has inputs "
                    f"{expected}; give dicts name → array"
                )
            feeds.append({expected[0]: _sample(item, inputs[0], where)})
        else:
            raise CalibrationError(
                f"{where}: expected a dict of input name → array (or an array), got {type(item).__name__}"
            )
    if not feeds:
        raise CalibrationError("calibration data is empty: the iterable gave no feeds; give at least one sample")
    return CalibrationSet(feeds=feeds, source=f"iterable ({len(feeds)} feeds)")


def load_feeds(
    source: Any,
    inputs: Sequence[TensorSpec],
    preprocessor: Any = None,
    *,
    limit: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CalibrationSet:
    """Load calibration (or validation) data for a model with ``inputs``.

    ``source``: a folder of images, an image file, a ``.npz``/``.npy`` file, a
    :class:`CalibrationSet`, a mapping name → stacked arrays, an ndarray with
    a leading sample axis (single input), or an iterable of feeds.
    ``preprocessor``: an :class:`edgekit.preprocess.Preprocessor` (images only).
    ``limit``: at most this many samples (for folders: spread evenly over the
    sorted files so every class folder contributes).  ``class_names``: the
    model's labels, to map class folders to label indices.  ``progress(done,
    total)`` is called as images are decoded and preprocessed.
    """
    _check_limit(limit)
    inputs = list(inputs)
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate")
    if isinstance(source, CalibrationSet):
        return source if limit is None else source.subset(_evenly(len(source), limit))
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise CalibrationError(
                f"calibration data {str(source)!r} does not exist; "
                "pass a folder of images, a .npz (one array per input name) or a .npy file"
            )
        if path.is_dir():
            return _load_image_folder(path, inputs, preprocessor, limit, class_names, progress)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _load_npz(path, inputs, limit)
        if suffix == ".npy":
            return _load_npy(path, inputs, limit)
        if suffix in IMAGE_EXTENSIONS:
            return _load_images([path], path, inputs, preprocessor, limit, None, progress)
        raise CalibrationError(
            f"{path}: unsupported calibration file type {suffix or '(none)'!r}; "
            f"give a folder of images, an image ({', '.join(IMAGE_EXTENSIONS)}), a .npz or a .npy file"
        )
    if isinstance(source, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationError(
                f"a single array can feed a single-input model only, but the model has inputs "
                f"{[s.name for s in inputs]}; give a dict name → stacked array"
            )
        return _from_arrays({inputs[0].name: source}, inputs, "array", limit)
    if isinstance(source, Mapping):
        return _from_arrays(source, inputs, "arrays", limit)
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise CalibrationError(
            f"calibration data of type {type(source).__name__} is not understood; give a folder, "
            "a .npz/.npy path, or an iterable of dicts input name → array"
        )
    return _from_iterable(source, inputs, limit)
