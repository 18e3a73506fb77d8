"""The same Q/DQ graph on onnxruntime's CPU EP and on the QNN EP's HTP (the simulator here), tensor by tensor.

For every activation the graph quantizes (per-tensor scale), the tool reads the integer codes both runs
produce (each QuantizeLinear output exposed as a graph output), dequantizes them, and prints SQNR vs the
fp32 graph for the CPU and the HTP run, and between the two.  The first op whose HTP figure departs from
the CPU's while its inputs agree is where the HTP computes something other than the Q/DQ graph says —
how the qnn target's A16W16 convolutions (~20 dB short on the HTP, A16W8 exact) and the STFT magnitude of
Silero VAD were found.

    edgekit export snpe PKG DIR                 # DIR/model_fp32.onnx and DIR/model_qdq.onnx of a qnn int8 package
    python benchmarks/qnn_htp_vs_cpu.py DIR/model_fp32.onnx DIR/model_qdq.onnx FEEDS.npz [--samples 2] [--htp-arch 73]

``FEEDS.npz``: one array per sample (batch 1) for the model's single input.  Printed, not asserted.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def _quantized_tensors(model: Any) -> List[Tuple[str, str, float, int]]:
    """(QuantizeLinear output, the float tensor it rounds, scale, zero point) of every per-tensor Q."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = []
    for nd in model.graph.node:
        if nd.op_type != "QuantizeLinear" or nd.input[1] not in consts or consts[nd.input[1]].size != 1:
            continue
        zp = consts.get(nd.input[2]) if len(nd.input) > 2 else None
        # a graph output's Q reads "<name>_QuantizeLinear_Input"; the fp32 graph calls it <name>
        out.append((nd.output[0], nd.input[0].replace("_QuantizeLinear_Input", ""), float(consts[nd.input[1]]),
                    int(zp) if zp is not None else 0))
    return out


def _exposed(model: Any, names: Sequence[str]) -> Any:
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m


def compare(fp32_path: Path, qdq_path: Path, feeds: Sequence[np.ndarray], htp_arch: int = 73,
            soc_model: Optional[int] = None) -> List[Dict[str, Any]]:
    import onnx
    import onnxruntime as ort

    from edgekit.runners.qnn import native_stdout_to_stderr, qnn_devices
    from edgekit.targets.qnn.config import HTP_ARCHS
    from edgekit.targets.toolchain import require

    qnn = require("onnxruntime_qnn", "this comparison", "qnn")
    qdq = onnx.load(str(qdq_path))
    fp32 = onnx.load(str(fp32_path))
    inp = qdq.graph.input[0].name
    tensors = _quantized_tensors(qdq)
    known = {o for nd in fp32.graph.node for o in nd.output} | {i.name for i in fp32.graph.input}
    tensors = [t for t in tensors if t[1] in known]

    plain = ort.SessionOptions()
    plain.log_severity_level = 3
    # no fusions: the CPU computes DequantizeLinear -> float op -> QuantizeLinear, what the graph says
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref_sess = ort.InferenceSession(_exposed(fp32, sorted({t[1] for t in tensors})).SerializeToString(), plain,
                                    providers=["CPUExecutionProvider"])
    qm = _exposed(qdq, [t[0] for t in tensors])
    cpu_sess = ort.InferenceSession(qm.SerializeToString(), plain, providers=["CPUExecutionProvider"])
    htp = ort.SessionOptions()
    htp.log_severity_level = 3
    htp.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    htp.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    htp.add_provider_for_devices(qnn_devices(ort, qnn), {
        "backend_type": "htp", "htp_arch": str(htp_arch),
        "soc_model": str(soc_model if soc_model is not None else HTP_ARCHS[htp_arch][0]),
        "offload_graph_io_quantization": "0", "enable_htp_fp16_precision": "0"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exposed.onnx"
        onnx.save(qm, str(path))
        with native_stdout_to_stderr():
            htp_sess = ort.InferenceSession(str(path), htp)
        names = [o.name for o in cpu_sess.get_outputs()]
        ref_names = [o.name for o in ref_sess.get_outputs()]
        runs = [(dict(zip(ref_names, ref_sess.run(None, {inp: x}))), dict(zip(names, cpu_sess.run(None, {inp: x}))),
                 dict(zip(names, htp_sess.run(None, {inp: x})))) for x in feeds]
    producer = {o: nd for nd in fp32.graph.node for o in nd.output}
    rows = []
    for q_out, tensor, scale, zp in tensors:
        ref = np.concatenate([r[tensor].ravel() for r, _, _ in runs])
        cpu = np.concatenate([(c[q_out].astype(np.float64) - zp) * scale for _, c, _ in runs]).ravel()
        got = np.concatenate([(h[q_out].astype(np.float64) - zp) * scale for _, _, h in runs]).ravel()
        nd = producer.get(tensor)
        rows.append({"tensor": tensor, "op": nd.op_type if nd is not None else "input",
                     "node": nd.name if nd is not None else "", "inputs": list(nd.input) if nd is not None else [],
                     "cpu_db": _sqnr(ref, cpu), "htp_db": _sqnr(ref, got), "cpu_vs_htp_db": _sqnr(cpu, got),
                     "max_code_diff": int(np.abs(np.rint((cpu - got) / scale)).max())})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path)
    ap.add_argument("qdq", type=Path)
    ap.add_argument("feeds", type=Path, help=".npz: one array per sample for the model's input")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--htp-arch", type=int, default=73)
    ap.add_argument("--departures", type=float, default=3.0,
                    help="also list ops whose CPU-vs-HTP figure falls this many dB below their inputs'")
    args = ap.parse_args(argv)
    with np.load(args.feeds) as data:
        feeds = [data[k] for k in sorted(data.files)][: args.samples]
    rows = compare(args.fp32, args.qdq, feeds, htp_arch=args.htp_arch)
    print(f"{'op':>18} {'cpu dB':>7} {'htp dB':>7} {'cpu~htp':>7} {'codes':>6}  tensor")
    for r in rows:
        print(f"{r['op']:>18} {r['cpu_db']:7.1f} {r['htp_db']:7.1f} {r['cpu_vs_htp_db']:7.1f} {r['max_code_diff']:6d}  "
              f"{r['tensor']}")
    agree = {r["tensor"]: r["cpu_vs_htp_db"] for r in rows}
    print(f"\nwhere the HTP departs from the CPU (cpu~htp falls > {args.departures} dB below the op's inputs):")
    for r in rows:
        ins = [agree[i] for i in r["inputs"] if i in agree]
        if ins and min(ins) - r["cpu_vs_htp_db"] > args.departures:
            print(f"  {r['op']} {r['node']}: inputs {min(ins):.1f} dB -> output {r['cpu_vs_htp_db']:.1f} dB "
                  f"(CPU vs fp32 {r['cpu_db']:.1f}, HTP vs fp32 {r['htp_db']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
