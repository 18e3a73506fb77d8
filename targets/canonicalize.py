"""Shared ONNX canonicalization: every target builds from the same fixed-shape,
folded fp32 graph.

``load_onnx`` reads a model and turns every way that can fail into one
:class:`ModelError` naming the file and the fix.  Models below opset 13 are
*converted* with ``onnx.version_converter`` (and the conversion is recorded
in ``CanonicalModel.notes``) rather than refused: the converter handles the
common old exports (opset 9–12 CNNs) and refusing would only push the user to
run the same converter by hand.  A conversion that fails is a ModelError
with the manual fix.

``canonicalize`` then

1. fixes dynamic dims: the batch dim becomes 1, ``input_shapes`` win over
   everything, ``size=(H, W)`` fills the spatial dims of 4-D image inputs
   (NCHW vs NHWC guessed from where the 1- or 3-channel dim is); what stays
   symbolic is listed in ``dynamic_dims`` so ``check`` can refuse it with the fix;
2. runs ONNX shape inference, then onnxruntime's BASIC graph optimizations
   (constant folding, Identity/Dropout elimination, Conv+BatchNorm/Add/Mul
   folding — all of which leave standard ONNX ops) via
   ``optimized_model_filepath``, and reloads the result.  When onnxruntime
   cannot load the model because an op has no kernel (custom domains, ops ORT
   lacks) folding is skipped with a note, so that ``Target.check`` can list
   those nodes by name; any other load failure is a ModelError;
3. describes inputs/outputs as :class:`TensorSpec` (dims that stay unknown
   are ``-1``; the pipeline refuses dynamic *inputs*, while outputs may stay
   data-dependent, e.g. after NonZero).
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit.errors import ConfigError, ModelError
from edgekit.layout import infer_layout, resolve_layout
from edgekit.manifest import DTYPES, TensorSpec
from edgekit.package import sha256_file
from edgekit.preprocess import Layout, LayoutOrder

MIN_OPSET = 13
#: protobuf's hard limit; bigger models must keep weights in external data files
_PROTO_LIMIT = 2**31 - 1
_DEFAULT_DOMAINS = ("", "ai.onnx")

ModelSource = Union[str, os.PathLike, bytes, bytearray, "onnx.ModelProto"]  # noqa: F821


def _onnx() -> Any:
    import onnx  # build side only; imported lazily so `import edgekit.targets` stays cheap

    return onnx


@dataclass
class CanonicalModel:
    """The fixed-shape, folded fp32 model every target starts from."""

    model: Any  # onnx.ModelProto
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    opset: int
    notes: Tuple[str, ...] = ()
    dynamic_dims: Tuple[str, ...] = ()

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the model (external data next to it when above the 2 GB protobuf limit)."""
        return save_onnx(self.model, path)


def save_onnx(model: Any, path: Union[str, os.PathLike]) -> Path:
    onnx = _onnx()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    size = model_size(model)
    if size > _PROTO_LIMIT - (64 << 20):
        onnx.save_model(model, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=p.name + ".data")
    elif size > _STREAM_BYTES and not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        # onnx.save_model serializes the whole model into one buffer and copies it into bytes: twice the
        # weights on top of the model; written a tensor at a time it is the same file for ~one tensor's memory
        with open(p, "wb") as f:
            _write_streamed(model, f)
    else:
        onnx.save_model(model, str(p))
    return p


def model_size(model: Any) -> int:
    """About ``model.ByteSize()`` (to within a MiB), without its cost: protobuf's upb backend computes ByteSize by
    serializing the whole model, i.e. one more transient copy of the weights; here one tensor or node at a time."""
    g = model.graph
    return (sum(t.ByteSize() for t in g.initializer) + sum(n.ByteSize() for n in g.node)
            + sum(t.ByteSize() for t in g.sparse_initializer) + sum(fn.ByteSize() for fn in model.functions) + (1 << 20))


#: models above this are written a tensor at a time (save_onnx)
_STREAM_BYTES = 32 << 20


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def _is_repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)  # newer protobuf; older ones only have ``label``
    return bool(rep) if rep is not None else fd.label == fd.LABEL_REPEATED


def _fields(msg: Any, lo: int, hi: int) -> Any:
    """A message of ``msg``'s type holding only its fields numbered in [lo, hi) (copies; small ones here)."""
    part = type(msg)()
    for fd, val in msg.ListFields():
        if lo <= fd.number < hi:
            if _is_repeated(fd):
                getattr(part, fd.name).extend(val)
            elif fd.type == fd.TYPE_MESSAGE:
                getattr(part, fd.name).CopyFrom(val)
            else:
                setattr(part, fd.name, val)
    return part


def _write_streamed(model: Any, f: Any) -> None:
    """``model.SerializeToString()`` written piece by piece, the same bytes: protobuf writes fields in field-number
    order and a length-delimited field is its tag, its length and its payload, so the model is the fields before
    ``graph``, the graph (the fields before ``initializer``, each initializer, the rest) and the fields after."""
    graph_no = model.DESCRIPTOR.fields_by_name["graph"].number
    init_no = model.graph.DESCRIPTOR.fields_by_name["initializer"].number
    f.write(_fields(model, 0, graph_no).SerializeToString())
    if model.HasField("graph"):
        g = model.graph
        head = _fields(g, 0, init_no).SerializeToString()
        tail = _fields(g, init_no + 1, 1 << 29).SerializeToString()
        tag = _varint((init_no << 3) | 2)
        sizes = [t.ByteSize() for t in g.initializer]
        total = len(head) + len(tail) + sum(len(tag) + len(_varint(n)) + n for n in sizes)
        f.write(_varint((graph_no << 3) | 2) + _varint(total) + head)
        for t, n in zip(g.initializer, sizes):
            f.write(tag + _varint(n))
            f.write(t.SerializeToString())
        f.write(tail)
    f.write(_fields(model, graph_no + 1, 1 << 29).SerializeToString())


def opset_of(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    return 0


def onnx_sha256(source: Union[str, os.PathLike, bytes, bytearray, Any]) -> str:
    """sha256 of the model file's bytes (as ``sha256sum model.onnx``; external data not included).

    A ModelProto is hashed in its deterministic serialization.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            return sha256_file(source)
        except FileNotFoundError:
            raise ModelError(f"model file {Path(source)} does not exist; check the path") from None
    if isinstance(source, (bytes, bytearray)):
        return hashlib.sha256(source).hexdigest()
    if hasattr(source, "SerializeToString"):
        return hashlib.sha256(source.SerializeToString(deterministic=True)).hexdigest()
    raise ConfigError(f"cannot hash a {type(source).__name__}; give a path, bytes or an onnx.ModelProto")


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def _file_passes_checker(onnx: Any, path: Path) -> bool:
    """True when ``onnx.checker`` accepts the file as it is on disk; False on any failure (then the model is
    loaded and checked in memory, which names the problem)."""
    try:
        if path.stat().st_size >= _PROTO_LIMIT:
            return False
        onnx.checker.check_model(str(path))
        return True
    except Exception:  # noqa: BLE001 - the in-memory check below reports what is wrong
        return False


def load_onnx(source: ModelSource) -> Any:
    """Read an ONNX model (path, bytes or ModelProto) and check it.

    External data is loaded from next to the file.  Opset < 13 is converted to
    13 (see the module docstring); the conversion is recorded in the model's
    metadata (``edgekit.converted_from_opset``) and surfaced by
    :func:`canonicalize` as a note.
    """
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    what: str
    checked = False
    if isinstance(source, onnx.ModelProto):
        model, what = source, "the given ModelProto"
    elif isinstance(source, (bytes, bytearray)):
        what = "the given model bytes"
        try:
            model = onnx.load_from_string(bytes(source))
        except (DecodeError, RuntimeError, ValueError) as err:
            raise ModelError(
                f"{what} are not a valid ONNX model ({err}); the file may be truncated — re-export the model"
            ) from None
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        what = str(p)
        if not p.exists():
            raise ModelError(f"model file {p} does not exist; check the path")
        if p.is_dir():
            raise ModelError(f"{p} is a folder; give the path of the .onnx file")
        # checked from the file before loading: onnx.load holds the file's bytes and the parsed model at once,
        # and the checker, run after it, would parse a third copy (a failure is reported below, as before)
        checked = _file_passes_checker(onnx, p)
        try:
            model = onnx.load(str(p), load_external_data=True)
        except (DecodeError, RuntimeError, ValueError) as err:
            raise ModelError(
                f"{p} is not a valid ONNX model ({err}); it may be truncated or not ONNX — re-export the model"
            ) from None
        except onnx.checker.ValidationError as err:  # raised for an external data file that is missing
            raise ModelError(
                f"{p}: its external weights cannot be read ({str(err).strip().splitlines()[0]}); keep the .onnx "
                "file and its data file(s) in the same folder"
            ) from None
        except FileNotFoundError as err:
            missing = err.filename or str(err)
            raise ModelError(
                f"{p}: external weight file {missing} is missing; keep the .onnx file and its data file(s) "
                "in the same folder"
            ) from None
        except OSError as err:
            raise ModelError(f"cannot read {p}: {err}") from None
    else:
        raise ConfigError(f"cannot load a model from a {type(source).__name__}; give a path, bytes or onnx.ModelProto")

    if not model.HasField("graph") or not model.graph.output:
        raise ModelError(f"{what} has no graph or no outputs; it may be truncated — re-export the model")
    try:
        if not checked and model_size(model) < _PROTO_LIMIT:
            # bytes are checked as given: check_model(proto) would serialize one more copy of the weights
            onnx.checker.check_model(bytes(source) if isinstance(source, (bytes, bytearray)) else model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise ModelError(f"{what} fails the ONNX checker: {first}; re-export the model") from None

    opset = opset_of(model)
    if opset == 0:
        raise ModelError(f"{what} imports no default-domain ONNX opset; re-export it as a standard ONNX model")
    if opset < MIN_OPSET:
        try:
            converted = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as err:  # the converter raises bare RuntimeErrors / C++ exceptions
            raise ModelError(
                f"{what} uses opset {opset} and could not be converted to opset {MIN_OPSET} ({err}); "
                f"re-export it with opset >= {MIN_OPSET} (torch.onnx.export(..., opset_version=17))"
            ) from None
        entry = converted.metadata_props.add()
        entry.key, entry.value = "edgekit.converted_from_opset", str(opset)
        model = converted
    return model


# ---------------------------------------------------------------------------
# canonicalize
# ---------------------------------------------------------------------------

def _real_inputs(graph: Any) -> List[Any]:
    inits = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in inits]


def _dims(vi: Any) -> List[Union[int, str, None]]:
    """Static dims as ints, symbolic ones as their name (or None when unnamed)."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: List[Union[int, str, None]] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def guess_layout(shape: Sequence[Any]) -> Optional[str]:
    """'nchw' / 'nhwc' for a 4-D image-like shape: the one rule the CLI and the build API
    use too (:func:`edgekit.layout.infer_layout`)."""
    order = infer_layout(shape)
    return None if order is None else order.value


def _fix_input_dims(
    model: Any,
    input_shapes: Optional[Mapping[str, Sequence[int]]],
    size: Optional[Tuple[int, int]],
    notes: List[str],
    layout: Optional[str] = None,
) -> Tuple[List[str], Dict[str, Optional[str]]]:
    graph = model.graph
    inputs = _real_inputs(graph)
    names = [vi.name for vi in inputs]
    shapes = dict(input_shapes or {})
    for name in shapes:
        if name not in names:
            raise ConfigError(f"input_shapes names {name!r}, but the model inputs are {names}")
    if size is not None:
        if (
            len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in size)
        ):
            raise ConfigError(f'"size" must be (height, width) positive integers, but got {size!r}')
    dynamic: List[str] = []
    layouts: Dict[str, Optional[str]] = {}
    for vi in inputs:
        dims = _dims(vi)
        tt = vi.type.tensor_type
        if vi.name in shapes:
            want = [int(v) for v in shapes[vi.name]]
            if any(v <= 0 for v in want):
                raise ConfigError(f"input_shapes[{vi.name!r}] must be positive integers, but got {list(shapes[vi.name])}")
            if dims and len(dims) != len(want):
                raise ConfigError(
                    f"input_shapes[{vi.name!r}] has rank {len(want)} but the model input has rank {len(dims)} "
                    f"({dims}); give {len(dims)} dims"
                )
            for i, (have, new) in enumerate(zip(dims, want)):
                if isinstance(have, int) and have != new:
                    notes.append(f"input {vi.name!r} dim {i}: overriding the model's static {have} with {new}")
            new_dims: List[Union[int, str, None]] = list(want)
        else:
            new_dims = list(dims)
            if new_dims and not isinstance(new_dims[0], int):
                notes.append(f"input {vi.name!r}: dynamic batch dim {new_dims[0]!r} fixed to 1")
                # said out loud, not only noted in the manifest: the package takes one sample per call
                warnings.warn(
                    f"input {vi.name!r}: the dynamic batch dim {new_dims[0]!r} is fixed to 1; the package is "
                    "built, verified and run with batch 1 (give input_shapes for another batch size)",
                    UserWarning,
                    stacklevel=3,
                )
                new_dims[0] = 1
            if size is not None and len(new_dims) == 4:
                order, assumed = resolve_layout(new_dims, layout, vi.name)  # --layout, where the shape allows
                if assumed:  # both channel candidates symbolic: PyTorch exports are channel-first
                    notes.append(f"input {vi.name!r}: layout not evident from {dims}; assuming NCHW for --size")
                hw = (2, 3) if order is LayoutOrder.NCHW else (1, 2)
                for axis, value in zip(hw, size):
                    have = new_dims[axis]
                    if isinstance(have, int):
                        if have != int(value):
                            raise ConfigError(
                                f"input {vi.name!r} is fixed at {new_dims[hw[0]]}x{new_dims[hw[1]]} (HxW) but "
                                f"size asks for {size[0]}x{size[1]}; drop --size or re-export with dynamic H/W"
                            )
                    else:
                        new_dims[axis] = int(value)
        if layout is not None and len(new_dims) == 4:
            layouts[vi.name] = resolve_layout(new_dims, layout, vi.name)[0].value
        else:
            layouts[vi.name] = guess_layout(new_dims)
        if not tt.HasField("shape"):
            if vi.name not in shapes:
                dynamic.append(f"{vi.name}: unknown rank")
                continue
        tt.shape.ClearField("dim")
        for i, d in enumerate(new_dims):
            dim = tt.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                if d:
                    dim.dim_param = d
                dynamic.append(f"{vi.name}[{i}]" + (f" ({d!r})" if d else ""))
    return dynamic, layouts


def _dtype_name(elem_type: int, what: str) -> str:
    onnx = _onnx()
    try:
        name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        name = onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"
    if name not in DTYPES:
        raise ModelError(
            f"{what} has element type {name}, which edgekit packages cannot carry "
            f"(supported: {', '.join(DTYPES)}); re-export the model with float32 inputs/outputs"
        )
    return name


def _spec(vi: Any, what: str, layout: Optional[str]) -> TensorSpec:
    dims = _dims(vi)
    shape = tuple(d if isinstance(d, int) else -1 for d in dims)
    return TensorSpec(name=vi.name, shape=shape, dtype=_dtype_name(vi.type.tensor_type.elem_type, what), layout=layout)


_UNLOADABLE_OP_MARKERS = (
    "is not a registered function/op",
    "No Op registered for",
    "Could not find an implementation for",
    "not_implemented",
    "NOT_IMPLEMENTED",
)


def _ort_basic_optimize(model: Any, workdir: Path, notes: List[str]) -> Any:
    """Constant folding + BN/Add/Mul folding with onnxruntime's BASIC level; returns the reloaded model."""
    onnx = _onnx()
    try:
        import onnxruntime as ort
    except ImportError:
        notes.append("constant/BatchNorm folding skipped: onnxruntime is not installed (pip install 'edgekit[build]')")
        return model
    src = workdir / "input.onnx"
    dst = workdir / "basic.onnx"
    save_onnx(model, src)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    # the weights stay in basic.onnx.data: shape inference then runs on the light graph (infer_shapes would
    # otherwise serialize and parse the weights four times); canonicalize reads them back once at the end
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "basic.onnx.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    # the session only writes the optimized graph: packed GEMM weights would be one more copy of them, unused
    so.add_session_config_entry("session.disable_prepacking", "1")
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception as err:
        msg = str(err)
        if any(m in msg for m in _UNLOADABLE_OP_MARKERS):
            short = msg.split(":", 3)[-1].strip() if msg.count(":") >= 3 else msg
            notes.append(f"constant/BatchNorm folding skipped: onnxruntime cannot load the model ({short})")
            return model
        raise ModelError(
            f"onnxruntime cannot load the model: {msg.strip().splitlines()[0]}; "
            "fix the export (check it with onnx.checker.check_model(model, full_check=True)) and re-export"
        ) from None
    optimized = onnx.load(str(dst), load_external_data=False)
    # ORT records its own producer; keep the exporter's metadata for provenance
    optimized.producer_name, optimized.producer_version = model.producer_name, model.producer_version
    del optimized.metadata_props[:]
    optimized.metadata_props.extend(model.metadata_props)
    # ORT's writer imports every domain it knows (ai.onnx.ml, training, ...); keep the ones in use
    used = _used_domains(optimized.graph) | {d.domain for d in model.opset_import}
    keep = [imp for imp in optimized.opset_import if imp.domain in used or imp.domain in _DEFAULT_DOMAINS]
    del optimized.opset_import[:]
    optimized.opset_import.extend(keep)
    return optimized


def _used_domains(graph: Any) -> set:
    out = set()
    for node in graph.node:
        out.add(node.domain or "")
        for attr in node.attribute:
            if attr.HasField("g"):
                out |= _used_domains(attr.g)
            for sub in attr.graphs:
                out |= _used_domains(sub)
    return out


def _name_nodes(graph: Any) -> int:
    """Give every unnamed top-level node a unique name; returns how many were named."""
    taken = {n.name for n in graph.node if n.name}
    count = 0
    for i, n in enumerate(graph.node):
        if n.name:
            continue
        name, k = f"{n.op_type}_{i}", 0
        while name in taken:
            k += 1
            name = f"{n.op_type}_{i}_{k}"
        n.name = name
        taken.add(name)
        count += 1
    return count


def _unfolded_batchnorms(model: Any) -> List[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    left = []
    for n in model.graph.node:
        if n.op_type == "BatchNormalization" and n.input and n.input[0] in producer:
            p = producer[n.input[0]]
            if p.op_type in ("Conv", "ConvTranspose"):
                left.append(f"{n.name or n.output[0]} after {p.op_type} {p.name or p.output[0]}")
    return left


def canonicalize(
    model: ModelSource,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    size: Optional[Tuple[int, int]] = None,
    *,
    optimize: bool = True,
    layout: Optional[str] = None,
    rewrites: Sequence[str] = (),
    owned: bool = False,
) -> CanonicalModel:
    """Fix shapes, fold constants and BatchNorm, and describe the IO (see the module docstring).

    ``model`` may be a path, bytes or ModelProto (never modified in place, unless ``owned``: the caller hands
    over a ModelProto that :func:`load_onnx` returned to it, e.g. the build's own copy of the source; it is
    then neither checked again, which serializes the whole model, nor copied, which would hold a second copy
    of the weights through the onnxruntime pass, but changed in place).
    ``optimize=False`` skips the onnxruntime pass (shape inference still runs).
    ``rewrites``: quantization-friendly rewrites to run last (:mod:`targets.rewrites`; int8 builds pass
    ``rewrites.DEFAULT``); each one that fires is a note, so the manifest says what ran.
    """
    onnx = _onnx()
    notes: List[str] = []
    if owned:
        proto = model
    else:
        proto = load_onnx(model)
        if proto is model:  # the caller's ModelProto stays as it is; one read here from a path or bytes is ours
            proto = copy.deepcopy(proto)
    for prop in proto.metadata_props:
        if prop.key == "edgekit.converted_from_opset":
            notes.append(f"converted from opset {prop.value} to {MIN_OPSET} with onnx.version_converter")

    in_names = [vi.name for vi in _real_inputs(proto.graph)]
    out_names = [vo.name for vo in proto.graph.output]
    # layout: the user's --layout for 4-D inputs; None reads it from the shape (edgekit.layout)
    layout = None if layout is None else Layout(layout).order.value  # type: ignore[arg-type]
    dynamic, layouts = _fix_input_dims(proto, input_shapes, size, notes, layout)

    # Stale intermediate/output shapes (symbolic batch) would fight the fixed
    # input dims during inference; drop them and let inference re-derive.
    del proto.graph.value_info[:]
    for vo in proto.graph.output:
        vo.type.tensor_type.ClearField("shape")

    with tempfile.TemporaryDirectory(prefix="edgekit-canon-") as tmp:
        if optimize:
            proto = _ort_basic_optimize(proto, Path(tmp), notes)
        proto = _infer_shapes(proto, Path(tmp), notes)
        # the optimized weights were left in tmp (see _ort_basic_optimize); read them in before tmp goes
        onnx.external_data_helper.load_external_data_for_model(proto, tmp)

    if [vi.name for vi in _real_inputs(proto.graph)] != in_names or [vo.name for vo in proto.graph.output] != out_names:
        raise ModelError(  # would be an edgekit bug: ORT keeps graph IO names
            f"canonicalization changed the model's input/output names ({in_names} → "
            f"{[vi.name for vi in _real_inputs(proto.graph)]}); report this as a bug"
        )
    unnamed = _name_nodes(proto.graph)
    if unnamed:
        notes.append(f"named {unnamed} unnamed node(s) '<op_type>_<index>' so recipes and reports can refer to them")
    for left in _unfolded_batchnorms(proto):
        notes.append(f"BatchNormalization {left} was not folded (its Conv output has other consumers)")
    if rewrites:
        from .rewrites import describe, rewrite

        proto, fired = rewrite(proto, rewrites)
        if fired:
            notes.extend(describe(fired))
            del proto.graph.value_info[:]  # shapes of the new tensors (and none of the removed ones)
            with tempfile.TemporaryDirectory(prefix="edgekit-canon-") as tmp:
                proto = _infer_shapes(proto, Path(tmp), notes)

    inputs = tuple(_spec(vi, f"input {vi.name!r}", layouts.get(vi.name)) for vi in _real_inputs(proto.graph))
    outputs = tuple(_spec(vo, f"output {vo.name!r}", None) for vo in proto.graph.output)
    for spec in outputs:
        if any(d < 0 for d in spec.shape) or not spec.shape:
            if not spec.shape:
                notes.append(f"output {spec.name!r}: shape unknown after inference")
            else:
                notes.append(f"output {spec.name!r}: data-dependent dims {list(spec.shape)} (-1 = unknown)")
    return CanonicalModel(
        model=proto,
        inputs=inputs,
        outputs=outputs,
        opset=opset_of(proto),
        notes=tuple(notes),
        dynamic_dims=tuple(dynamic),
    )


def _infer_shapes(model: Any, workdir: Path, notes: List[str]) -> Any:
    onnx = _onnx()
    try:
        if model_size(model) > _PROTO_LIMIT - (64 << 20):
            src, dst = workdir / "infer_in.onnx", workdir / "infer_out.onnx"
            save_onnx(model, src)
            onnx.shape_inference.infer_shapes_path(str(src), str(dst), strict_mode=False, data_prop=True)
            return onnx.load(str(dst), load_external_data=True)
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # inference is best effort; ORT is the judge of validity
        notes.append(f"ONNX shape inference failed ({str(err).splitlines()[0] if str(err) else err}); shapes left as exported")
        return model
