"""Defaults read from the metadata that exporters write into an ONNX model (``metadata_props``).

Ultralytics exports carry ``names`` (a Python dict literal ``{0: 'person', …}``),
``imgsz`` (``[640, 640]``), ``stride``, ``task`` (``detect`` / ``classify`` /
``segment`` / ``pose`` / ``obb``) and ``author: Ultralytics``; PaddleOCR /
RapidAI exports carry ``character`` (class names or a CTC dictionary, one per
line).  They become *defaults*: whatever the user gives wins, so a YOLO export
builds without typing its class names or input size.

The literals are parsed with :func:`ast.literal_eval` (data only, never code).
"""
from __future__ import annotations

import ast
import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

#: Ultralytics task names → edgekit postprocessing tasks (pose/obb have no decoder here: raw)
_ULTRALYTICS_TASKS = {"detect": "detect", "classify": "classify", "segment": "segment"}


class Exporter(str, enum.Enum):
    ULTRALYTICS = "ultralytics"
    PADDLE = "paddle"


@dataclass(frozen=True)
class ExporterMeta:
    """What the exporter said about the model; every field optional."""

    exporter: Optional[Exporter] = None
    labels: Optional[Tuple[str, ...]] = None
    imgsz: Optional[Tuple[int, int]] = None
    stride: Optional[int] = None
    task: Optional[str] = None
    #: metadata keys that were read, for the build report
    keys: Tuple[str, ...] = ()
    #: metadata that was present but could not be understood (key: reason)
    ignored: Tuple[str, ...] = ()

    @property
    def letterbox(self) -> bool:
        """Ultralytics detectors are trained and exported for letterboxed input (pad 114)."""
        return self.exporter is Exporter.ULTRALYTICS and self.task in ("detect", "segment")

    def to_json(self) -> Dict[str, Any]:
        return {
            "exporter": self.exporter.value if self.exporter else None,
            "labels": len(self.labels) if self.labels else None,
            "imgsz": list(self.imgsz) if self.imgsz else None,
            "stride": self.stride,
            "task": self.task,
            "keys": list(self.keys),
            "ignored": list(self.ignored),
        }


def _names(text: str) -> Tuple[str, ...]:
    value = ast.literal_eval(text)
    if isinstance(value, dict):
        keys = sorted(value)
        if keys != list(range(len(keys))):
            raise ValueError(f"class ids are not 0..{len(keys) - 1}")
        return tuple(str(value[k]) for k in keys)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ValueError(f"expected a dict or list, got {type(value).__name__}")


def _imgsz(text: str) -> Tuple[int, int]:
    value = ast.literal_eval(text)
    if isinstance(value, int):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f"expected [height, width], got {text!r}")
    return int(value[0]), int(value[1])


def read_metadata(props: Mapping[str, str]) -> ExporterMeta:
    """Interpret a model's ``metadata_props`` (key → value)."""
    keys, ignored = [], []
    fields: Dict[str, Any] = {}
    if "ultralytics" in props.get("author", "").lower() or ("names" in props and "imgsz" in props):
        fields["exporter"] = Exporter.ULTRALYTICS
        for key, parse, name in (("names", _names, "labels"), ("imgsz", _imgsz, "imgsz"), ("stride", int, "stride")):
            if key in props:
                try:
                    fields[name] = parse(props[key])
                    keys.append(key)
                except (ValueError, SyntaxError, TypeError) as exc:
                    ignored.append(f"{key}: {exc}")
        task = props.get("task")
        if task is not None:
            keys.append("task")
            fields["task"] = _ULTRALYTICS_TASKS.get(task, "raw")
    elif "character" in props:
        fields["exporter"] = Exporter.PADDLE
        fields["labels"] = tuple(props["character"].split("\n"))
        keys.append("character")
    return ExporterMeta(keys=tuple(keys), ignored=tuple(ignored), **fields)


def read_model(proto: Any) -> ExporterMeta:
    """:func:`read_metadata` of an ``onnx.ModelProto``."""
    return read_metadata({p.key: p.value for p in proto.metadata_props})


def class_count(task: str, output_shapes: Sequence[Sequence[Any]]) -> Optional[int]:
    """Classes the model's first output holds for ``task``, when its shape says so."""
    if not output_shapes:
        return None
    shape = [d if isinstance(d, int) and d > 0 else None for d in output_shapes[0]]
    if task == "classify" and shape and shape[-1]:
        return shape[-1]
    if task == "detect" and len(shape) == 3 and shape[1] and shape[2]:
        # YOLOv8 [1, 4+C, N] (channels fewer than anchors) or YOLOv5/X [1, N, 5+C]
        return shape[1] - 4 if shape[1] < shape[2] else shape[2] - 5
    return None


def default_labels(meta: ExporterMeta, task: str, output_shapes: Sequence[Sequence[Any]]) -> Optional[Tuple[str, ...]]:
    """The exporter's class names, when they fit the model's class count for ``task``.

    A PaddleOCR recognizer's ``character`` is a CTC dictionary (blank and space
    added at run time), not class names: its count does not match and it is
    not used.
    """
    if not meta.labels or task not in ("classify", "detect", "segment"):
        return None
    n = class_count(task, output_shapes)
    if n is not None and n != len(meta.labels):
        return None
    return meta.labels


def apply_defaults(req: Any, proto: Any) -> Any:
    """``req`` (a pipeline ``BuildRequest``) with labels / size taken from the exporter where the user gave none."""
    from edgekit import postprocess as _post

    meta = read_model(proto)
    if meta.exporter is None:
        return req
    changes: Dict[str, Any] = {}
    inits = {i.name for i in proto.graph.initializer}
    outs = [[d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    task = _post.config_to_json(req.postprocess)["task"]
    if req.labels is None:
        labels = default_labels(meta, task, outs)
        if labels:
            changes["labels"] = labels
    if req.size is None and req.input_shapes is None and meta.imgsz is not None:
        inputs = [i for i in proto.graph.input if i.name not in inits]
        dynamic = any(not d.HasField("dim_value") for i in inputs for d in i.type.tensor_type.shape.dim[1:])
        if dynamic:
            changes["size"] = meta.imgsz
    size = changes.get("size", req.size)
    if size is not None and meta.stride and any(v % meta.stride for v in size):
        # Ultralytics itself rounds imgsz up to a multiple of the stride: a size off it shifts the grids
        import warnings

        up = tuple(-(-v // meta.stride) * meta.stride for v in size)
        warnings.warn(f"input size {size[0]}x{size[1]} is not a multiple of the export's stride {meta.stride}; "
                      f"the detector was trained on multiples of it: use --size {up[0]}x{up[1]}")
    return dataclasses.replace(req, **changes) if changes else req
