"""The SNPE / QAIRT path: AIMET-format encodings and the exact converter commands.

The qnn target calibrates once (onnxruntime's QNN Q/DQ configuration).  From
the resulting Q/DQ graph this module writes the ranges in AIMET's encodings
format (the format ``--quantization_overrides`` of ``snpe-onnx-to-dlc`` and
``qnn-onnx-converter`` reads), keyed by the tensor names of the fp32 model
that was quantized (shipped as ``model_fp32.onnx``), so a user with the
Qualcomm SDK makes a DLC or QNN model from the very same ranges.

AIMET's convention (encoding version 0.6.1): ``real = scale * (q + offset)``
with ``q`` unsigned in ``[0, 2**bitwidth - 1]``; ``offset = -zero_point`` for
unsigned storage and ``-(zero_point + 2**(bitwidth-1))`` for signed storage;
``min = scale * offset``, ``max = scale * (2**bitwidth - 1 + offset)``.
"""
from __future__ import annotations

import shlex
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

ENCODINGS_VERSION = "0.6.1"

_ONNX_QTYPES: Mapping[int, Tuple[int, bool]] = {  # TensorProto elem type -> (bitwidth, signed)
    2: (8, False),  # UINT8
    3: (8, True),  # INT8
    4: (16, False),  # UINT16
    5: (16, True),  # INT16
    22: (4, True),  # INT4
    21: (4, False),  # UINT4
}


def _encoding(scale: float, zero_point: int, bitwidth: int, signed: bool) -> Dict[str, Any]:
    unsigned_zp = int(zero_point) + (2 ** (bitwidth - 1) if signed else 0)
    offset = -unsigned_zp
    scale = float(scale)
    symmetric = unsigned_zp == 2 ** (bitwidth - 1)
    return {
        "bitwidth": bitwidth,
        "dtype": "int",
        "is_symmetric": "True" if symmetric else "False",
        "max": scale * (2**bitwidth - 1 + offset),
        "min": scale * offset,
        "offset": offset,
        "scale": scale,
    }


def encoding_to_qparams(enc: Mapping[str, Any], signed: bool) -> Tuple[float, int]:
    """(scale, zero point in the storage type) back from one AIMET encoding."""
    bw = int(enc["bitwidth"])
    zp = -int(enc["offset"]) - (2 ** (bw - 1) if signed else 0)
    return float(enc["scale"]), zp


def aimet_encodings(qdq: Any, fp32: Any) -> Dict[str, Any]:
    """AIMET encodings from a Q/DQ model, keyed by the tensor names of ``fp32``.

    Activations: every QuantizeLinear's input (the fp32 tensor it quantizes).
    Parameters: every DequantizeLinear of an integer initializer (weights,
    per channel where the Q/DQ graph is), named by the fp32 initializer that
    the consuming node reads at the same input position.  int32 biases are
    left to the converter (``--bias_bitwidth 32`` derives them exactly).
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in qdq.graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node if n.name}
    fp32_inits = {t.name for t in fp32.graph.initializer}
    fp32_tensors = set(fp32_inits) | {i.name for i in fp32.graph.input} | {o for n in fp32.graph.node for o in n.output}
    producers: Dict[str, Tuple[Any, int]] = {o: (n, k) for n in qdq.graph.node for k, o in enumerate(n.output)}
    consumers: Dict[str, List[Tuple[Any, int]]] = {}
    for n in qdq.graph.node:
        for k, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, k))

    def qparams(node: Any) -> Tuple[np.ndarray, np.ndarray, int]:
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2] in inits:
            zp_t = inits[node.input[2]]
            zp = numpy_helper.to_array(zp_t).astype(np.int64)
            elem = zp_t.data_type
        else:
            zp, elem = np.zeros_like(scale, dtype=np.int64), 2
        return scale, zp, elem

    activations: Dict[str, List[Dict[str, Any]]] = {}
    params: Dict[str, List[Dict[str, Any]]] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            name = node.input[0]
            if name not in fp32_tensors:  # renamed by the quantizer (graph outputs): use the producer's fp32 name
                prod = producers.get(name)
                src = fp32_nodes.get(prod[0].name) if prod is not None else None
                name = src.output[prod[1]] if src is not None and prod[1] < len(src.output) else ""
            if not name or name in activations:
                continue
            scale, zp, elem = qparams(node)
            if elem not in _ONNX_QTYPES:
                continue
            bw, signed = _ONNX_QTYPES[elem]
            activations[name] = [_encoding(float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), bw, signed)]
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            scale, zp, elem = qparams(node)
            if elem not in _ONNX_QTYPES:  # int32 bias
                continue
            bw, signed = _ONNX_QTYPES[elem]
            name: Optional[str] = None
            for consumer, k in consumers.get(node.output[0], []):
                src = fp32_nodes.get(consumer.name)
                if src is not None and k < len(src.input) and src.input[k] in fp32_inits:
                    name = src.input[k]
                    break
            if name is None:
                stem = node.input[0][: -len("_quantized")] if node.input[0].endswith("_quantized") else None
                name = stem if stem in fp32_inits else None
            if name is None:
                continue
            scales, zps = scale.reshape(-1), np.broadcast_to(zp.reshape(-1), scale.reshape(-1).shape)
            params[name] = [_encoding(float(s), int(z), bw, signed) for s, z in zip(scales, zps)]
    # activations the quantizer folded away (Conv → Relu/Clip): the converters fold them too, with the
    # range of the activation's output; give the folded input that same encoding so every tensor has one
    qdq_names = {n.name for n in qdq.graph.node}
    for n in fp32.graph.node:
        if n.op_type in ("Relu", "Clip") and n.name not in qdq_names and n.output[0] in activations:
            activations.setdefault(n.input[0], [dict(activations[n.output[0]][0])])
    act_bw = max((v[0]["bitwidth"] for v in activations.values()), default=8)
    par_bw = max((v[0]["bitwidth"] for v in params.values()), default=8)
    return {
        "version": ENCODINGS_VERSION,
        "activation_encodings": activations,
        "param_encodings": params,
        "excluded_layers": [],
        "quantizer_args": {
            "activation_bitwidth": act_bw,
            "param_bitwidth": par_bw,
            "dtype": "int",
            "per_channel_quantization": any(len(v) > 1 for v in params.values()),
            "quant_scheme": "post_training_tf",
            "is_symmetric": all(v[0]["is_symmetric"] == "True" for v in params.values()) if params else True,
        },
    }


def _join(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def conversion_commands(
    *,
    inputs: Sequence[Any],
    soc: str,
    quantized: bool,
    activation_bitwidth: int = 8,
    weight_bitwidth: int = 8,
    per_channel: bool = True,
    fp32_model: str = "model_fp32.onnx",
    encodings: str = "model.encodings",
    input_list: str = "qairt/input_list.txt",
) -> Dict[str, List[str]]:
    """The exact SNPE and QNN (QAIRT) command lines, run from the package's ``model/`` folder."""
    layout_args: List[str] = []
    dim_args: List[str] = []
    for t in inputs:
        layout = (t.layout or "").upper()
        if len(t.shape) == 4 and layout in ("NCHW", "NHWC"):
            layout_args += ["--input_layout", t.name, layout]
        dim_args += ["--input_dim", t.name, ",".join(str(d) for d in t.shape)]
    overrides = ["--quantization_overrides", encodings] if quantized else []
    bits = ["--act_bitwidth", str(activation_bitwidth), "--weights_bitwidth", str(weight_bitwidth),
            "--bias_bitwidth", "32"]
    pc = ["--use_per_channel_quantization"] if per_channel else []
    snpe = [
        _join(["snpe-onnx-to-dlc", "--input_network", fp32_model, "--output_path", "model.dlc",
               *layout_args, *dim_args, *overrides]),
    ]
    if quantized:
        snpe.append(_join(["snpe-dlc-quant", "--input_dlc", "model.dlc", "--input_list", input_list,
                           "--output_dlc", "model_quantized.dlc", "--override_params", *bits, *pc]))
        snpe.append(_join(["snpe-dlc-graph-prepare", "--input_dlc", "model_quantized.dlc",
                           "--output_dlc", "model_htp.dlc", "--htp_socs", soc.lower()]))
    else:
        snpe.append(_join(["snpe-dlc-graph-prepare", "--input_dlc", "model.dlc", "--output_dlc", "model_htp.dlc",
                           "--htp_socs", soc.lower()]))
    qnn = [
        _join(["qnn-onnx-converter", "--input_network", fp32_model, "--output_path", "qnn/model.cpp",
               *layout_args, *dim_args, *overrides,
               *(["--input_list", input_list, *bits, *pc] if quantized else ["--float_bitwidth", "16"])]),
        _join(["qnn-model-lib-generator", "-c", "qnn/model.cpp", "-b", "qnn/model.bin", "-o", "qnn/lib"]),
        _join(["qnn-context-binary-generator", "--backend", "libQnnHtp.so",
               "--model", "qnn/lib/x86_64-linux-clang/libmodel.so", "--binary_file", "model_htp",
               "--output_dir", "qnn"]),
    ]
    return {"snpe": snpe, "qnn": qnn}


def write_raw_inputs(feeds: Sequence[Mapping[str, np.ndarray]], inputs: Sequence[Any], folder: Any,
                     list_path: Any, prefix: str) -> List[str]:
    """float32 ``.raw`` files and the ``input_list.txt`` the SDK quantizers read.

    SNPE/QNN feed image tensors channel-last: a 4-D NCHW input is written NHWC.
    Every activation and weight has an override, so these samples satisfy the
    tools' required ``--input_list`` without changing any range.
    """
    from pathlib import Path

    folder, list_path = Path(folder), Path(list_path)
    folder.mkdir(parents=True, exist_ok=True)
    files: List[str] = []
    lines: List[str] = []
    for i, feed in enumerate(feeds):
        parts = []
        for t in inputs:
            x = np.asarray(feed[t.name], dtype=np.float32)
            if x.ndim == 4 and (t.layout or "").lower() == "nchw":
                x = x.transpose(0, 2, 3, 1)
            fname = f"{i:04d}_{''.join(c if c.isalnum() else '_' for c in t.name)}.raw"
            np.ascontiguousarray(x).tofile(folder / fname)
            files.append((folder / fname).name)
            parts.append(f"{t.name}:={prefix}/{fname}")
        lines.append(" ".join(parts))
    list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


ENCODINGS = "model.encodings"
COMMANDS = "qairt/commands.sh"
INPUT_LIST = "qairt/input_list.txt"
#: calibration samples written as .raw for the SDK quantizers' required --input_list
RAW_SAMPLES = 4


def write_snpe_qairt(workdir: Any, *, cfg: Any, precision: Any, inputs: Sequence[Any], fp32_model: str,
                     qdq_model: Optional[str], calibration: Any, per_channel: bool,
                     details: Dict[str, Any]) -> List[str]:
    """AIMET encodings + the exact SNPE/QAIRT commands from the same calibration; the files written."""
    import json

    import onnx

    files: List[str] = []
    if qdq_model is not None:
        fp32_proto = onnx.load(str(workdir / fp32_model), load_external_data=False)
        qdq_proto = onnx.load(str(workdir / qdq_model), load_external_data=False)
        enc = aimet_encodings(qdq_proto, fp32_proto)
        (workdir / ENCODINGS).write_text(json.dumps(enc, indent=1), encoding="utf-8")
        raw = write_raw_inputs(calibration.feeds[:RAW_SAMPLES], inputs, workdir / "qairt" / "calib",
                               workdir / INPUT_LIST, prefix="qairt/calib")
        files += [ENCODINGS, INPUT_LIST] + [f"qairt/calib/{f}" for f in raw]
        commands = conversion_commands(
            inputs=inputs, soc=cfg.soc, quantized=True,
            activation_bitwidth=enc["quantizer_args"]["activation_bitwidth"],
            weight_bitwidth=enc["quantizer_args"]["param_bitwidth"], per_channel=per_channel,
            fp32_model=fp32_model, encodings=ENCODINGS, input_list=INPUT_LIST,
        )
        details["aimet_encodings"] = {"file": f"model/{ENCODINGS}", "activations": len(enc["activation_encodings"]),
                                      "params": len(enc["param_encodings"])}
    else:
        commands = conversion_commands(inputs=inputs, soc=cfg.soc, quantized=False, fp32_model=fp32_model)
    (workdir / COMMANDS).parent.mkdir(parents=True, exist_ok=True)
    (workdir / COMMANDS).write_text(_commands_script(commands, cfg, precision), encoding="utf-8")
    files.append(COMMANDS)
    details["snpe_qairt"] = {"run_from": "model/", "script": f"model/{COMMANDS}", **commands}
    return files


def _commands_script(commands: Mapping[str, List[str]], cfg: Any, precision: Any) -> str:
    lines = [
        "#!/bin/sh",
        "# Make a DLC (SNPE) or a QNN model/context binary (QAIRT) with the ranges this package was calibrated with.",
        "# Run from this folder (`edgekit export snpe PKG DIR`) with the Qualcomm AI Runtime SDK set up (bin/envsetup.sh).",
        f"# Target: HTP v{cfg.arch} ({cfg.soc}, soc_model {cfg.soc_model}); precision {precision.value}.",
    ]
    if precision.value == "int8":
        lines.append("# model.encodings holds AIMET encodings for every activation and weight; input_list.txt points")
        lines.append("# at a few calibration samples the tools require (channel-last .raw); they change no range.")
    lines += ["set -e", "", "# --- SNPE (DLC) ---", *commands["snpe"], "", "# --- QNN (QAIRT) ---", *commands["qnn"], ""]
    return "\n".join(lines)
