"""The qnn target's graph steps: the HTP-shaped fp32 graph, and compiling it to a QNN context binary."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Dict, List, Tuple

from edgekit.errors import ModelError

from ..base import Precision
from ..toolchain import first_line
from .config import HtpConfig

#: the artifact files the placement report counts nodes on
FP32_MODEL = "model_fp32.onnx"
QDQ_MODEL = "model_qdq.onnx"


def htp_shaped_fp32(model: Any, workdir: Path, details: Dict[str, Any]) -> Path:
    """``model_fp32.onnx``: the canonical graph with the fusions HTP has single ops for.

    ``qnn_preprocess_model`` fuses Erf-GELU → Gelu, ReduceL2 → LpNormalization
    and ReduceMean chains → LayerNormalization; HardSwish is put back too.
    """
    import onnx
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    from ..canonicalize import save_onnx

    canonical = workdir / "_canonical.onnx"
    fp32_path = workdir / FP32_MODEL
    # onnxruntime 1.32's qnn_preprocess_model crashes on any model with metadata_props
    # (dict.update of a protobuf list; every Ultralytics / PaddleOCR export): preprocess
    # without them and put them back on the result, so the package keeps them.
    props = [(p.key, p.value) for p in model.metadata_props]
    bare = model
    if props:
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        del bare.metadata_props[:]
    save_onnx(bare, canonical)
    with contextlib.redirect_stdout(io.StringIO()):
        changed = qnn_preprocess_model(str(canonical), str(fp32_path), fuse_layernorm=True)
    if not changed:
        canonical.replace(fp32_path)
    if props:
        _restore_metadata(fp32_path, props)
    canonical.unlink(missing_ok=True)
    details["qnn_preprocess"] = "fused" if changed else "no change"
    fused = _fuse_hardswish(fp32_path)
    if fused:
        details["hardswish_fused"] = fused
    return fp32_path


def _restore_metadata(path: Path, props: "list[tuple[str, str]]") -> None:
    """Put the source's metadata_props back on a model file (keeping keys the tool added)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    have = {p.key for p in m.metadata_props}
    for key, value in props:
        if key not in have:
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(m, str(path))


def compile_htp(ort: Any, qnn: Any, src: Path, ctx: Path, cfg: HtpConfig,
                precision: Precision) -> Tuple[Dict[str, Any], List[str], str]:
    """QNN EP (HTP) → EPContext model + context binary; placement from what stays outside EPContext."""
    import onnx

    from edgekit.runners.qnn import EP_NAME, native_stdout_to_stderr, qnn_devices

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # node names must survive so the placement report names the source nodes
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "0")
    so.add_session_config_entry("ep.context_enable", "1")
    so.add_session_config_entry("ep.context_embed_mode", "0")
    so.add_session_config_entry("ep.context_file_path", str(ctx))
    options = {
        "backend_type": "htp",
        "htp_arch": str(cfg.arch),
        "soc_model": str(cfg.soc_model),
        "offload_graph_io_quantization": "0",  # keep input Q / output DQ on the HTP too
        "enable_htp_fp16_precision": "1" if precision is Precision.FP16 else "0",
    }
    devices = qnn_devices(ort, qnn)
    if not devices:
        raise ModelError("onnxruntime-qnn registered no QNN device; reinstall it: pip install 'edgekit[qnn]'")
    so.add_provider_for_devices(devices, options)
    try:
        with native_stdout_to_stderr():
            ort.InferenceSession(str(src), sess_options=so)
    except Exception as err:  # the HTP compiler's own errors
        raise ModelError(
            f"QNN HTP compilation for v{cfg.arch} ({cfg.soc}) failed: {first_line(err)}; "
            "try another --precision, or report this with the model"
        ) from None
    if not ctx.is_file():
        raise ModelError("QNN EP wrote no EPContext model: no node of this graph runs on the HTP; "
                         "see `edgekit build --target qnn` support notes")
    source = onnx.load(str(src), load_external_data=False)
    ctx_model = onnx.load(str(ctx), load_external_data=False)
    binaries: List[str] = []
    sdk = ""
    cpu_nodes = []
    for nd in ctx_model.graph.node:
        if nd.op_type == "EPContext":
            for a in nd.attribute:
                if a.name == "ep_cache_context" and a.s:
                    name = a.s.decode()
                    if name not in binaries:
                        binaries.append(name)
                elif a.name == "ep_sdk_version" and a.s:
                    sdk = a.s.decode()
        else:
            cpu_nodes.append({"node": nd.name or nd.output[0], "op_type": nd.op_type})
    if not binaries:
        raise ModelError("the EPContext model names no context binary; rebuild (embed mode must be 0)")
    for b in binaries:
        if not (ctx.parent / b).is_file():
            raise ModelError(f"QNN EP did not write the context binary {b}")
    total = len(source.graph.node)
    placement = {
        "total_nodes": total,
        "htp_nodes": total - len(cpu_nodes),
        "cpu_nodes": cpu_nodes,
        "partitions": sum(1 for nd in ctx_model.graph.node if nd.op_type == "EPContext"),
        "all_on_npu": not cpu_nodes,
        "counted_on": QDQ_MODEL if precision is Precision.INT8 else FP32_MODEL,
        "execution_provider": EP_NAME,
    }
    return placement, binaries, sdk


def _fuse_hardswish(path: Path) -> int:
    """x * HardSigmoid(x, 1/6, 0.5) → HardSwish(x), in place; returns how many were fused.

    Canonicalization inlines HardSwish (an ONNX function) into that pair.  HTP
    has a native HardSwish, and the fp16 HTP mis-computes the inlined pair
    (measured on onnxruntime-qnn 2.7's HTP: −5 dB SQNR for the pair against
    69 dB for HardSwish), so the qnn target puts the op back.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0) < 14:
        return 0  # HardSwish is an ONNX op from opset 14
    consumers: Dict[str, List[Any]] = {}
    for nd in graph.node:
        for i in nd.input:
            consumers.setdefault(i, []).append(nd)
    outputs = {o.name for o in graph.output}
    fused = 0
    drop = set()
    for hs in list(graph.node):
        if hs.op_type != "HardSigmoid" or (hs.domain or "") not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in hs.attribute}
        if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
            continue
        users = consumers.get(hs.output[0], [])
        if len(users) != 1 or hs.output[0] in outputs:
            continue
        mul = users[0]
        if mul.op_type != "Mul" or sorted(mul.input) != sorted([hs.input[0], hs.output[0]]):
            continue
        idx = list(graph.node).index(mul)
        graph.node.insert(idx, helper.make_node("HardSwish", [hs.input[0]], [mul.output[0]], name=mul.name or hs.name))
        drop.update({id(hs), id(mul)})
        fused += 1
    if fused:
        keep = [nd for nd in graph.node if id(nd) not in drop]
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path))
    return fused
