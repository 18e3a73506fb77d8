"""Read a saved ML Program (``.mlpackage``) into plain Python: ops, constants, IO.

Device side (Python 3.9, numpy): the protobuf classes come from coremltools,
imported lazily; everything else — the package manifest, the weight blob —
is read here with numpy so the reference executor does not depend on
coremltools' native readers.

Weight blob format (``Data/com.apple.CoreML/weights/weight.bin``, MIL blob
storage version 2): a 64-byte file header (``uint32`` blob count, ``uint32``
version), then per constant a 64-byte metadata record (``uint32`` sentinel
``0xDEADBEEF``, ``uint32`` data type, ``uint64`` size in bytes, ``uint64``
offset of the data) followed by the data.  A constant in the spec points at
its metadata record (``blobFileValue.offset``).  Sub-byte types (palettized
indices) are packed least-significant bit first.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...errors import PackageError, RuntimeMissingError

BLOB_SENTINEL = 0xDEADBEEF
_HEADER = 64

#: MIL data type name → (numpy dtype of the unpacked values, bits per element in storage)
_DTYPES: Dict[str, Tuple[Any, int]] = {
    "BOOL": (np.bool_, 8), "FLOAT16": (np.float16, 16), "FLOAT32": (np.float32, 32), "FLOAT64": (np.float64, 64),
    "INT8": (np.int8, 8), "INT16": (np.int16, 16), "INT32": (np.int32, 32), "INT64": (np.int64, 64),
    "UINT8": (np.uint8, 8), "UINT16": (np.uint16, 16), "UINT32": (np.uint32, 32), "UINT64": (np.uint64, 64),
    "INT4": (np.int8, 4), "UINT4": (np.uint8, 4), "UINT6": (np.uint8, 6), "UINT3": (np.uint8, 3),
    "UINT2": (np.uint8, 2), "UINT1": (np.uint8, 1),
}


@dataclass(frozen=True)
class TensorType:
    dtype: str  #: MIL data type name (FLOAT16, INT8, …)
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class MilOp:
    """One operation: its type, named inputs (var names or constants), typed outputs."""

    type: str
    name: str
    inputs: Dict[str, List[Any]]  # argument → list of ('var', name) | ('value', ndarray)
    outputs: Tuple[Tuple[str, Optional[TensorType]], ...]
    attributes: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MilProgram:
    """The main function of an ML Program, ready to interpret."""

    inputs: List[Tuple[str, TensorType]]
    outputs: List[str]
    ops: List[MilOp]
    opset: str
    spec_version: int


def _proto() -> Any:
    try:
        from coremltools.proto import MIL_pb2, Model_pb2
    except ImportError as exc:
        raise RuntimeMissingError(
            f"reading a Core ML program needs coremltools' protobuf classes ({exc}); "
            "install them with: pip install 'edgekit[coreml]'") from None
    return Model_pb2, MIL_pb2


def find_spec_files(package: Path) -> Tuple[Path, Path]:
    """(model.mlmodel, weights folder) of an ``.mlpackage`` folder, from its Manifest.json."""
    manifest = package / "Manifest.json"
    if not manifest.is_file():
        raise PackageError(f"{package}: not an .mlpackage (no Manifest.json); rebuild the package")
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        root = info["itemInfoEntries"][info["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{manifest}: unreadable .mlpackage manifest ({exc}); rebuild the package") from None
    spec = package / "Data" / root
    if not spec.is_file():
        raise PackageError(f"{package}: the model spec {root} is missing; rebuild the package")
    return spec, spec.parent / "weights"


def _unpack_bits(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Elements of ``bits`` bits packed LSB first into bytes → uint8 values."""
    as_bits = np.unpackbits(raw, bitorder="little")[: count * bits]
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (as_bits.reshape(count, bits).astype(np.uint16) @ weights).astype(np.uint8)


class WeightFile:
    """The blob file, read once; every access checks the header and the bounds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise PackageError(
                f"{path}: the weight file is missing from the .mlpackage; the package is incomplete "
                "(copy the whole .mlpackage folder, or rebuild it)")
        self.data = path.read_bytes()
        if len(self.data) < _HEADER:
            raise PackageError(f"{path}: the weight file is {len(self.data)} bytes, shorter than its "
                               f"{_HEADER}-byte header; the file is truncated (rebuild the package)")

    def read(self, offset: int, dtype: str, shape: Tuple[int, ...]) -> np.ndarray:
        if offset + _HEADER > len(self.data):
            raise self._short(offset + _HEADER, f"the record at offset {offset}")
        sentinel, code, size, data_offset = struct.unpack_from("<IIQQ", self.data, offset)
        if sentinel != BLOB_SENTINEL:
            raise PackageError(f"{self.path}: no blob record at offset {offset} (sentinel {sentinel:#x}, "
                               f"expected {BLOB_SENTINEL:#x}); the weight file does not match the model spec")
        if data_offset + size > len(self.data):
            raise self._short(data_offset + size, f"the constant at offset {offset}")
        np_dtype, bits = _DTYPES[dtype]
        count = int(np.prod(shape)) if shape else 1
        if size * 8 < count * bits:
            raise PackageError(f"{self.path}: the constant at offset {offset} holds {size} bytes, "
                               f"{count} {dtype} values need {(count * bits + 7) // 8}")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=size, offset=data_offset)
        if bits % 8 == 0:
            values = raw[: count * bits // 8].view(np_dtype)
        else:
            values = _unpack_bits(raw, bits, count)
            if dtype == "INT4":  # two's complement nibbles
                values = np.where(values >= 8, values.astype(np.int16) - 16, values).astype(np.int8)
        return values.reshape(shape).copy()

    def _short(self, need: int, what: str) -> PackageError:
        return PackageError(f"{self.path}: the weight file is {len(self.data)} bytes, but {what} needs {need}; "
                            "the file is truncated (copy the whole .mlpackage again, or rebuild it)")


def _tensor_type(vt: Any, dtype_name: Any) -> Optional[TensorType]:
    if not vt.HasField("tensorType"):
        return None
    tt = vt.tensorType
    dims = tuple(int(d.constant.size) for d in tt.dimensions)
    return TensorType(dtype_name(tt.dataType), dims)


def _immediate(value: Any, ttype: TensorType) -> np.ndarray:
    tv = value.immediateValue.tensor
    kind = tv.WhichOneof("value")
    np_dtype = _DTYPES.get(ttype.dtype, (np.float32, 32))[0]
    if kind == "strings":
        vals: Any = list(tv.strings.values)
        return np.array(vals[0] if not ttype.shape and vals else vals, dtype=object)
    if kind == "bytes":
        raw = np.frombuffer(tv.bytes.values, dtype=np.uint8)
        bits = _DTYPES[ttype.dtype][1]
        count = int(np.prod(ttype.shape)) if ttype.shape else 1
        arr = raw.view(np_dtype) if bits % 8 == 0 else _unpack_bits(raw, bits, count)
        return arr.reshape(ttype.shape).copy()
    source = {"floats": tv.floats.values, "ints": tv.ints.values, "bools": tv.bools.values,
              "longInts": tv.longInts.values, "doubles": tv.doubles.values}.get(kind or "", [])
    return np.array(list(source), dtype=np_dtype).reshape(ttype.shape)


def load_program(package: Path) -> MilProgram:
    """Parse ``package`` (an ``.mlpackage`` folder) into a :class:`MilProgram`."""
    Model_pb2, MIL_pb2 = _proto()
    spec_path, weights_dir = find_spec_files(package)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError: name the file
        raise PackageError(f"{spec_path}: not a Core ML model spec ({exc}); rebuild the package") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageError(f"{spec_path}: not an ML Program (got {spec.WhichOneof('Type')}); rebuild the package")
    func = spec.mlProgram.functions["main"]
    block = func.block_specializations[func.opset]
    dtype_name = MIL_pb2.DataType.Name
    weights: Optional[WeightFile] = None

    def value_of(v: Any) -> np.ndarray:
        nonlocal weights
        ttype = _tensor_type(v.type, dtype_name)
        if ttype is None:
            raise PackageError(f"{spec_path}: a non-tensor constant is not supported by the reference executor")
        if v.HasField("blobFileValue"):
            if weights is None:
                rel = v.blobFileValue.fileName.replace("@model_path/", "")
                weights = WeightFile(spec_path.parent / rel)
            return weights.read(int(v.blobFileValue.offset), ttype.dtype, ttype.shape)
        return _immediate(v, ttype)

    ops: List[MilOp] = []
    for op in block.operations:
        inputs: Dict[str, List[Any]] = {}
        for key, arg in op.inputs.items():
            items: List[Any] = []
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name":
                    items.append(("var", b.name))
                else:
                    items.append(("value", value_of(b.value)))
            inputs[key] = items
        attrs = {k: value_of(v) for k, v in op.attributes.items() if k != "name" and v.type.HasField("tensorType")}
        outputs = tuple((o.name, _tensor_type(o.type, dtype_name)) for o in op.outputs)
        name = outputs[0][0] if outputs else op.type
        ops.append(MilOp(op.type, name, inputs, outputs, attrs))
    inputs = [(i.name, _tensor_type(i.type, dtype_name)) for i in func.inputs]
    return MilProgram(inputs=inputs, outputs=list(block.outputs), ops=ops, opset=func.opset,
                      spec_version=int(spec.specificationVersion))
