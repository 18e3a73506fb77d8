"""The ``edgekit`` command line (Typer), thin over the Python API.

Every command takes ``--json`` (one JSON document on stdout, nothing else).
A user error exits 2 with one line naming the problem and the fix; the
traceback appears only with ``--debug`` (or ``EDGEKIT_DEBUG=1``).  Build-side
modules are imported inside the commands that need them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import typer

from .errors import ConfigError, EdgekitError

class _OneLineErrors(typer.core.TyperGroup):
    """Click's usage errors (unknown command, bad flag) as one ``error: ...`` line, exit 2, like every user error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:  # typer ≥ 0.20 vendors click as typer._click; older typer uses click itself
            from typer._click import exceptions as click_errors  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover
            from click import exceptions as click_errors

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        no_args = getattr(click_errors, "NoArgsIsHelpError", ())
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except no_args as exc:  # bare `edgekit`: the help, as before
            sys.stdout.write((exc.ctx.get_help() if exc.ctx is not None else str(exc)) + "\n")
            sys.exit(0)
        except click_errors.UsageError as exc:
            message = " ".join(exc.format_message().split())
            if exc.ctx is not None and exc.ctx.command_path and not message.endswith("--help"):
                message += f" (see `{exc.ctx.command_path} --help`)"
            if "--json" in sys.argv[1:]:
                _emit_json({"error": message})
            sys.stderr.write(f"error: {message}\n")
            sys.exit(2)
        except getattr(click_errors, "Abort", ()):  # Ctrl-C at a prompt
            sys.stderr.write("error: aborted\n")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Quantize, compile, package and run one ONNX model for every edge device family.",
    pretty_exceptions_enable=False,
)

_state = {"debug": os.environ.get("EDGEKIT_DEBUG") == "1"}
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout and nothing else.")


def _emit_json(doc: Any) -> None:
    doc, bad = _finite_json(doc)
    if bad:  # NaN/inf are not JSON: null keeps the document valid, the warning keeps it honest
        sys.stderr.write(f"warning: {bad} non-finite value(s) (NaN or infinity) rendered as null\n")
    sys.stdout.write(json.dumps(doc, indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite_json(doc: Any) -> "Tuple[Any, int]":
    """``doc`` with numpy values made plain and NaN/inf replaced by None; and how many were replaced."""
    import math

    import numpy as np

    count = 0

    def walk(x: Any) -> Any:
        nonlocal count
        if isinstance(x, float):
            if math.isfinite(x):
                return x
            count += 1
            return None
        if isinstance(x, (np.ndarray, np.generic)):
            return walk(x.tolist())
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(doc), count


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _fail(message: str, as_json: bool) -> "typer.Exit":
    one_line = " ".join(message.split())
    if as_json:
        _emit_json({"error": one_line})
    sys.stderr.write(f"error: {one_line}\n")
    return typer.Exit(code=2)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors → exit 2 with one line; everything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ._warnings import capture_stderr, collect

        as_json = bool(kwargs.get("as_json"))
        native: List[str] = []
        # native chatter (onnxruntime, the QNN SDK) is kept off the terminal, up to process exit;
        # --debug leaves stderr alone so it shows as it happens
        capture = contextlib.nullcontext() if _state["debug"] else capture_stderr(native, until_exit=True)
        try:
            with collect() as caught, capture:
                rv = fn(*args, **kwargs)
        except EdgekitError as exc:
            if _state["debug"]:
                raise
            raise _fail(str(exc), as_json) from None
        finally:
            _debug_lines(native)
        if not as_json:  # under --json a command puts its warnings in its document
            for line in caught.warnings:
                if line not in _state.get("shown", ()):
                    sys.stderr.write(f"warning: {line}\n")
        _debug_lines(caught.chatter)
        return rv

    return wrapper


def _debug_lines(lines: List[str]) -> None:
    """Third-party chatter (onnxruntime's "Unable to fuse", QNN's LIBNATIVE, library warnings): --debug only."""
    if _state["debug"]:
        for line in lines:
            sys.stderr.write(f"debug: {line}\n")


def _print_warnings(lines: Any) -> None:
    """A result's warnings, one ``warning: ...`` line each (human mode)."""
    shown = _state.setdefault("shown", [])
    for line in lines:
        sys.stderr.write(f"warning: {line}\n")
        shown.append(line)


class _Progress:
    """Progress bars on stderr (rich); silent with --json or when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._tasks: Dict[str, Any] = {}

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._bar.add_task(stage, total=total or None)
        self._bar.update(task, completed=done, total=total or None)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            for task in self._tasks.values():
                t = self._bar.tasks[task]
                if t.total is None:
                    self._bar.update(task, total=1, completed=1)
            self._bar.__exit__(*exc)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors."),
) -> None:
    if debug:
        _state["debug"] = True


# ----------------------------------------------------------------- parsing helpers
def _key_values(items: List[str], flag: str) -> Dict[str, Any]:
    """``KEY=VALUE`` flags as a dict; a VALUE that parses as JSON (16, true, ["320x320"]) is that, else the text."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE (e.g. {flag} io_dtype=int8), but got {item!r}")
        if key in out:
            raise ConfigError(f"{flag} {key} is given twice ({out[key]!r} and {text!r}); give it once")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _floats(text: Optional[str], flag: str) -> Optional[Tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers like 0.485,0.456,0.406, got {text!r}") from None


def _size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
        if h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--size: expected HxW like 224x224 (or one number), got {text!r}") from None
    return h, w


def _image_input(model: Path, layout: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int], str]]:
    """(H, W, layout) of the model's single 4-D input, from the ONNX graph; H/W None when dynamic.

    The layout is ``--layout`` where the shape allows it, else read from the shape by
    :func:`edgekit.layout.resolve_layout`, the rule the build API and the canonicalizer use.
    """
    from edgekit.layout import image_hw, resolve_layout
    from edgekit.targets.canonicalize import load_onnx

    proto = load_onnx(model)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        return None
    order, _ = resolve_layout(dims, layout, inputs[0].name)
    h, w = image_hw(dims, order)
    return h, w, order.value


def _exporter_imgsz(model: Path) -> Optional[Tuple[int, int]]:
    from edgekit.targets.canonicalize import load_onnx
    from edgekit.targets.exporter_meta import read_model

    return read_model(load_onnx(model)).imgsz


def _exporter_letterbox(model: Path) -> bool:
    from edgekit.targets.canonicalize import load_onnx
    from edgekit.targets.exporter_meta import read_model

    return read_model(load_onnx(model)).letterbox


def _preprocess_steps(model: Path, preprocess_file: Optional[Path], calib: Optional[Path], val: Optional[Path], *,
                      size: Optional[str], resize: Optional[str], interpolation: Optional[str], color: Optional[str],
                      mean: Optional[str], std: Optional[str], scale: Optional[float], layout: Optional[str]) -> Any:
    """`build`'s preprocessing: the --preprocess file, else image steps from the flags (or from image data), else None."""
    from edgekit import preprocess as pre

    image_flags = any(x is not None for x in (size, resize, interpolation, color, mean, std, scale, layout))
    image_data = any(p is not None and p.is_dir() for p in (calib, val))
    if preprocess_file is not None:
        if image_flags:
            raise ConfigError("--preprocess replaces --size/--resize/--color/--mean/--std/--scale/--layout; give one or the other")
        return preprocess_file
    if not (image_flags or image_data):
        return None
    hw = _size(size)
    model_hw = _image_input(model, layout)
    if hw is None:
        if model_hw is None or model_hw[0] is None or model_hw[1] is None:
            hw = _exporter_imgsz(model)  # e.g. Ultralytics' imgsz
            if hw is None:
                raise ConfigError("the model's input size is not fixed; give --size HxW")
        else:
            hw = (model_hw[0], model_hw[1])
    if resize is None and _exporter_letterbox(model):
        resize = "letterbox"  # Ultralytics detectors are exported for letterboxed input
    m = _floats(mean, "--mean") or (0.0,)
    s = _floats(std, "--std") or (1.0,)
    return pre.default_image_steps(
        hw[0],
        hw[1],
        color=color or "rgb",
        resize=resize or "stretch",
        interpolation=interpolation or "bilinear",
        mean=m,
        std=s,
        scale=scale if scale is not None else 1 / 255,
        layout=layout or (model_hw[2] if model_hw else "nchw"),
    )


# ----------------------------------------------------------------- build
@app.command()
@command
def build(
    model: Path = typer.Argument(..., help="The source ONNX model."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target name (see `edgekit targets`)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile, e.g. raspberry-pi-5."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8 (default: the device's, else fp32)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images folder, .npz or .npy."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation data; a folder of class subfolders gives accuracy."),
    task: str = typer.Option("raw", "--task", help="classify, detect, segment, text-detect or raw."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Text file, one class name per line."),
    size: Optional[str] = typer.Option(None, "--size", help="Input size HxW; fixes dynamic dims and sets the resize."),
    resize: Optional[str] = typer.Option(None, "--resize", help="stretch, letterbox or crop."),
    interpolation: Optional[str] = typer.Option(None, "--interpolation", help="nearest, bilinear, bicubic or area."),
    color: Optional[str] = typer.Option(None, "--color", help="rgb, bgr or gray."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean after scaling, e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, "--std", help="Per-channel std, e.g. 0.229,0.224,0.225."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Pixel scale before mean/std (default 1/255)."),
    layout: Optional[str] = typer.Option(None, "--layout", help="nchw or nhwc (default: the model's)."),
    preprocess_file: Optional[Path] = typer.Option(None, "--preprocess", help="JSON file with the preprocessing steps."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Quantization recipe JSON."),
    min_sqnr: Optional[float] = typer.Option(None, "--min-sqnr", help="Fail the build below this SQNR (dB)."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="Fail above this drop (points)."),
    min_recall: Optional[float] = typer.Option(
        None, "--min-recall", help="--task detect / text-detect: fail below this recall vs fp32's detections (0-1; default floor per precision)."),
    allow_gate_failure: bool = typer.Option(False, "--allow-gate-failure", help="Keep the package even if a gate fails."),
    require_npu: bool = typer.Option(False, "--require-npu", help="Fail if any node would leave the NPU (qnn target)."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Output .edgepkg (or a directory)."),
    output_name: Optional[str] = typer.Option(
        None, "--output", help="The model output the task reads, when the model has several (see `--task`)."
    ),
    sign_key: Optional[Path] = typer.Option(None, "--sign", help="Sign the package with this private key (`edgekit keygen`)."),
    explain: bool = typer.Option(False, "--explain", help="int8: rank the layers by sensitivity and show the layer-wise divergence."),
    mixed_precision: bool = typer.Option(True, "--mixed-precision/--no-mixed-precision",
                                         help="int8: keep the most sensitive layers in float when the floor is missed."),
    build_option: List[str] = typer.Option(
        None, "--build-option", "-B",
        help="KEY=VALUE, repeatable: a target build option (see `edgekit targets --json`), e.g. -B io_dtype=int8, "
             "-B compression=w8; VALUE is read as JSON (numbers, true/false, lists) when it parses, else as text."),
    as_json: bool = JsonOpt,
) -> None:
    """Quantize, compile, verify and package MODEL for one target or device."""
    from .signing import PrivateKey

    signer = PrivateKey.load(sign_key) if sign_key is not None else None  # a bad key fails before the build
    from edgekit.targets.pipeline import build_package

    if not model.exists():
        raise ConfigError(f"{model}: no such model file; give the path of an .onnx model")
    if output_name is not None and task == "raw":
        raise ConfigError("--output picks the model output a task reads, but --task raw returns every output; "
                          "give --task classify|detect|segment|text-detect, or drop --output")
    steps = _preprocess_steps(model, preprocess_file, calib, val, size=size, resize=resize,
                              interpolation=interpolation, color=color, mean=mean, std=std, scale=scale, layout=layout)
    build_options = _key_values(build_option or [], "--build-option")  # the target's schema checks them
    gates = {"min_sqnr_db": min_sqnr, "max_accuracy_drop": max_accuracy_drop, "min_recall": min_recall}
    with _Progress(not as_json) as bar:
        result = build_package(
            model,
            target=target,
            device=device,
            precision=precision,
            calibration=calib,
            validation=val,
            preprocess=steps,
            task=None if output_name is not None else task,
            postprocess={"task": task, "output": output_name} if output_name is not None else None,
            labels=labels,
            gates=gates,
            output=output,
            recipe=recipe,
            size=_size(size),
            allow_gate_failure=allow_gate_failure,
            runtime_options={"require_npu": True} if require_npu else None,
            progress=bar,
            mixed_precision=mixed_precision,
            explain=explain,
            build_options=build_options,
        )
    if signer is not None:
        from .package import sign_package

        sign_package(result.path, signer).close()
    size_bytes = _package_size(result.path)
    if as_json:
        _emit_json({"package": str(result.path), "size_bytes": size_bytes, "warnings": list(result.warnings),
                    "manifest": result.manifest})
        return
    v = result.manifest["verification"]
    typer.echo(f"wrote {result.path} ({size_bytes / 1024:.1f} KiB)")
    typer.echo(_verification_line(v))
    for line in result.explanation:  # --explain: sensitivity table, divergence, mixed precision, speed
        typer.echo(line)
    _print_warnings(result.warnings)


def _package_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _verification_line(v: Dict[str, Any]) -> str:
    parts = [f"verified on {v['samples']} samples ({v['data']})"]
    if v.get("min_sqnr_db") is not None:
        weakest = f" ({v['weakest']})" if v.get("weakest") else ""
        floor = (v.get("gates") or {}).get("min_sqnr_db")
        gate = f", gate {floor:.0f} dB{' (default)' if (v.get('gate_sources') or {}).get('min_sqnr_db', 'user') != 'user' else ''}" \
            if floor is not None else ""
        parts.append(f"min SQNR {v['min_sqnr_db']:.1f} dB{weakest}{gate}")
    if v.get("top1_agreement") is not None:
        top5 = f", top-5 {100 * v['top5_agreement']:.2f}%" if v.get("top5_agreement") is not None else ""
        parts.append(f"top-1 agreement {100 * v['top1_agreement']:.2f}%{top5}")
    det = v.get("detection")
    if det:
        floor = (v.get("gates") or {}).get("min_recall")
        user = (v.get("gate_sources") or {}).get("min_recall", "user") == "user"
        gate = f", gate {100 * floor:.0f}%{'' if user else ' (default)'}" if floor is not None else ""
        parts.append(f"detections vs fp32: recall {100 * det['recall']:.1f}%, precision {100 * det['precision']:.1f}% "
                     f"({det['matched']}/{det['reference_detections']} matched at IoU ≥ {det['iou_threshold']}{gate})")
    if v.get("mask_iou") is not None:
        parts.append(f"mask IoU vs fp32 {v['mask_iou']:.4f}")
    if v.get("reference_accuracy") is not None:
        parts.append(
            f"accuracy fp32 {100 * v['reference_accuracy']:.2f}% → {100 * v['candidate_accuracy']:.2f}% "
            f"({v['accuracy_drop_points']:+.2f} points drop)"
        )
    if v.get("note"):
        parts.append(v["note"])
    return "; ".join(parts)


# ----------------------------------------------------------------- inspect
@app.command()
@command
def inspect(
    package: Path = typer.Argument(..., help="A .edgepkg file or package directory."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Also load it with this runtime and report what it sees."),
    divergence: bool = typer.Option(False, "--divergence", help="int8: layers kept in float, speed, and the layer-wise divergence."),
    source: Optional[Path] = typer.Option(None, "--source", help="With --divergence: the fp32 ONNX model, to compare a Q/DQ artifact with."),
    data: Optional[Path] = typer.Option(None, "--data", help="With --divergence --source: samples (images folder, .npz, .npy)."),
    as_json: bool = JsonOpt,
) -> None:
    """Show a package's manifest, verification and compatibility report."""
    from .package import open_package

    if divergence:
        from edgekit.targets.inspect_int8 import divergence as _divergence

        ddoc, dlines = _divergence(package, source, data)
        if as_json:
            _emit_json(ddoc)
        else:
            for line in dlines:
                typer.echo(line)
        return

    opened = open_package(package)
    try:
        doc: Dict[str, Any] = {"package": str(package), "size_bytes": _package_size(package), "manifest": opened.manifest.to_json()}
        target_lines = opened.manifest.details.inspect_lines()  # the target's own section (typed details)
        from .errors import EdgekitError
        from .runners import resolved_options

        # what edgekit.load(pkg) runs it with: each runner option's value and whether the package or the default set it
        try:
            doc["runner_options"] = resolved_options(opened.manifest, runtime)
        except EdgekitError as exc:  # a runner not installed here, an option it cannot take: say so, show the rest
            doc["runner_options"], doc["runner_options_error"] = {}, str(exc)
    finally:
        opened.close()
    if runtime is not None:
        from .model import load

        with load(package, runtime=runtime) as m:
            doc["runtime"] = m.runner.describe()
    if as_json:
        _emit_json(doc)
        return
    m = doc["manifest"]
    t = m["target"]
    typer.echo(f"{m['name']}  ({doc['size_bytes'] / 1024:.1f} KiB, built {m['created']} by edgekit {m['edgekit_version']})")
    typer.echo(f"  target     {t['name']}  device={t.get('device') or '-'}  runtime={t['runtime']}  precision={m['precision']}")
    typer.echo(f"  verified   {', '.join(f'{k} {v}' for k, v in t.get('runtime_versions', {}).items())}")
    for io in ("inputs", "outputs"):
        for x in m[io]:
            q = f" q(scale={x['quantization']['scale']:.6g}, zp={x['quantization']['zero_point']})" if x.get("quantization") else ""
            typer.echo(f"  {io[:-1]:<10} {x['name']} {x['shape']} {x['dtype']} {x.get('layout') or ''}{q}")
    typer.echo("  preprocess " + " → ".join(_step_text(s) for s in m["preprocess"]) if m["preprocess"] else "  preprocess none (tensor input)")
    typer.echo(f"  postprocess {json.dumps(m['postprocess'])}")
    if m.get("quantization"):
        typer.echo(f"  quantization {_quantization_text(m['quantization'])}")
    if m.get("verification"):
        typer.echo("  " + _verification_line(m["verification"]))
        checked = m["verification"].get("parts") or m["verification"].get("outputs", [])
        for o in checked:  # the checked parts: whole outputs, or boxes / class scores apart
            kind = f" ({o['kind']})" if o.get("kind") else ""
            typer.echo(f"    {o['name']}{kind}: max-abs {o['max_abs']:.4g}  cosine {o['cosine']:.6f}  SQNR {o['sqnr_db']:.1f} dB")
    build_report = m.get("build") or {}
    if build_report.get("stages"):
        typer.echo("  build      " + ", ".join(f"{st['name']} {st['seconds']:.2f}s" for st in build_report["stages"]))
    for line in build_report.get("warnings", []):
        typer.echo(f"  warning    {line}")
    sup = m.get("support") or {}
    typer.echo(f"  support    {'all nodes supported' if sup.get('ok', True) else sup}")
    pl = (t.get("details") or {}).get("placement")
    if pl:  # accelerator placement (qnn): how many nodes run on the NPU, which fall back
        off = ", ".join(f"{n['node']} ({n['op_type']})" for n in pl.get("cpu_nodes", []))
        typer.echo(f"  placement  {pl['htp_nodes']}/{pl['total_nodes']} nodes on the NPU" + (f"; on the CPU: {off}" if off else ""))
    for line in target_lines:
        typer.echo(f"  {line}")
    typer.echo("  options    " + (doc.get("runner_options_error") or ", ".join(
        f"{k}={v['value']!r}" + (" (package)" if v["from"] == "package" else "") for k, v in doc["runner_options"].items())))
    if "runtime" in doc:
        rt = dict(doc["runtime"])
        layers = rt.pop("layers", None)  # per-layer execution facts (openvino): one row each
        typer.echo(f"  runtime    {json.dumps(rt)}")
        for layer in layers or []:
            typer.echo(f"    {layer.get('precision', ''):<6} {layer.get('type', ''):<16} {layer.get('kernel', ''):<18} {layer.get('name', '')}")


def _quantization_text(q: Dict[str, Any]) -> str:
    """One line for any target's quantization record (keys vary by target)."""
    recipe = q.get("recipe") or {}
    calib = q.get("calibration") or {}
    parts = [str(q.get("format", "quantized"))]
    if recipe.get("method"):
        parts.append(f"{recipe['method']} calibration on {calib.get('count', '?')} samples")
    for key in ("quantize_linear_nodes", "dequantize_linear_nodes", "excluded_count"):
        if key in q:
            parts.append(f"{key.replace('_', ' ')} {q[key]}")
    extra = {k: v for k, v in q.items() if k not in ("format", "recipe", "calibration", "tool") and k not in
             ("quantize_linear_nodes", "dequantize_linear_nodes", "excluded_count", "quantized_nodes", "excluded_nodes",
              "calibration_samples_given") and not isinstance(v, (dict, list))}
    parts += [f"{k} {v}" for k, v in extra.items()]
    return ", ".join(parts)


def _step_text(step: Dict[str, Any]) -> str:
    args = ",".join(f"{k}={v}" for k, v in step.items() if k != "op" and v is not None)
    return f"{step['op']}({args})"


# ----------------------------------------------------------------- run
@app.command()
@command
def run(
    package: Path = typer.Argument(..., help="A .edgepkg file or package directory."),
    inputs: List[str] = typer.Argument(None, help="Images or .npy tensors: files, folders or globs ('imgs/*.jpg')."),
    tensor: List[str] = typer.Option(None, "--tensor", help="NAME=FILE.npy, for models with several inputs."),
    save: Optional[Path] = typer.Option(
        None, "--save", help="OUT.npz: the raw outputs; OUT.jpg/.png: the image annotated (boxes, masks); "
                             "a folder: one annotated image per input."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Run each input this many times (steady-state latency)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Run with another runtime than the manifest's."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runner threads (the runner's `threads` option; 0 = its default)."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a package on images or tensors, print the results and the latency (first call apart)."""
    import time

    import numpy as np

    from .inputs import expand_inputs
    from .model import load
    from .postprocess import RawResult, SegmentResult

    if not inputs and not tensor:
        raise ConfigError("nothing to run: give image paths / .npy files / folders / globs, or --tensor NAME=FILE.npy")
    jobs: List[Tuple[str, Any]] = []
    if tensor:
        feeds = {}
        for item in tensor:
            name, sep, file = item.partition("=")
            if not sep:
                raise ConfigError(f"--tensor: expected NAME=FILE.npy, got {item!r}")
            if not Path(file).is_file():
                raise ConfigError(f"--tensor {name}: {file} does not exist")
            feeds[name] = np.load(file, allow_pickle=False)
        jobs.append(("--tensor", feeds))
    jobs += [(str(p), p) for p in expand_inputs(inputs or [])]
    save_kind = _save_kind(save, jobs)
    results, saved, infer_ms, total_ms = [], {}, [], []
    with load(package, runtime=runtime, **({"threads": threads} if threads is not None else {})) as m:
        for label, source in jobs:
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = m.predict(source)
                total_ms.append((time.perf_counter() - t0) * 1e3)
                infer_ms.append(m.runner.last_latency_s * 1e3)
            # masks and raw tensors go to --save, not into the printed document
            if isinstance(r, SegmentResult):
                doc = r.to_dict(include_mask=False)
            elif isinstance(r, RawResult):
                doc = r.to_dict(include_data=False)
            else:
                doc = r.to_dict()
            doc["input"] = label
            doc["latency_ms"] = round(infer_ms[-1], 4)
            doc["total_ms"] = round(total_ms[-1], 4)  # decode + preprocess + infer + postprocess
            results.append(doc)
            if save_kind == "npz":
                for k, v in r.outputs.items():
                    saved[k if len(jobs) == 1 else f"{len(results) - 1}/{k}"] = v
            elif save_kind is not None:
                from .annotate import annotate

                out = save if save_kind == "image" else save / f"{Path(label).stem}.png"
                annotate(source, r).save(out)
                doc["saved"] = str(out)
    if save_kind == "npz":
        np.savez(save, **saved)
    latency = _latency_doc(infer_ms, total_ms)
    if as_json:
        _emit_json({"package": str(package), "results": results, "latency": latency, "saved": str(save) if save else None})
        return
    for doc in results:
        typer.echo(_result_text(doc))
    typer.echo(_latency_text(latency))
    if save_kind == "npz":
        typer.echo(f"saved raw outputs to {save}")
    elif save_kind is not None:
        typer.echo(f"saved {len(results)} annotated image(s) to {save}")


def _save_kind(save: Optional[Path], jobs: List[Tuple[str, Any]]) -> Optional[str]:
    """What --save writes: 'npz', 'image' (one input) or 'folder' (one image per input)."""
    from .annotate import IMAGE_SUFFIXES

    if save is None:
        return None
    suffix = save.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if any(not isinstance(src, Path) or src.suffix.lower() == ".npy" for _, src in jobs):
        raise ConfigError(f"--save {save}: annotated images need image inputs; save tensors' outputs to an .npz")
    if suffix in IMAGE_SUFFIXES:
        if len(jobs) != 1:
            raise ConfigError(f"--save {save}: one image file for {len(jobs)} inputs; give a folder to --save instead")
        return "image"
    if suffix:
        raise ConfigError(f"--save {save}: give an .npz (raw outputs), an image file ({', '.join(IMAGE_SUFFIXES)}) or a folder")
    save.mkdir(parents=True, exist_ok=True)
    return "folder"


def _latency_doc(infer_ms: List[float], total_ms: List[float]) -> Dict[str, Any]:
    """The first call apart (session warm-up, lazy allocation); the rest is the steady state."""
    import numpy as np

    doc: Dict[str, Any] = {"calls": len(infer_ms), "first_infer_ms": round(infer_ms[0], 4),
                           "first_total_ms": round(total_ms[0], 4), "steady_state": None}
    if len(infer_ms) > 1:
        rest, rest_total = np.asarray(infer_ms[1:]), np.asarray(total_ms[1:])
        doc["steady_state"] = {
            "calls": int(rest.size),
            "infer_median_ms": round(float(np.median(rest)), 4),
            "infer_p90_ms": round(float(np.percentile(rest, 90)), 4),
            "total_median_ms": round(float(np.median(rest_total)), 4),
        }
    return doc


def _latency_text(lat: Dict[str, Any]) -> str:
    first = f"first call {lat['first_infer_ms']:.3f} ms infer ({lat['first_total_ms']:.3f} ms end to end)"
    st = lat.get("steady_state")
    if not st:
        return f"latency: {first}; one call only: give several inputs or --repeat N for the steady state"
    return (f"latency: {first}; steady state over {st['calls']} calls: infer median {st['infer_median_ms']:.3f} ms, "
            f"p90 {st['infer_p90_ms']:.3f} ms, end to end median {st['total_median_ms']:.3f} ms")


def _result_text(doc: Dict[str, Any]) -> str:
    head = f"{doc['input']}  ({doc['latency_ms']:.3f} ms)"
    task = doc.get("task")
    if task == "classify":
        tops = ", ".join(f"{c.get('label') or c['index']} {c['score']:.3f}" for c in doc["top"])
        return f"{head}: {tops}"
    if task == "detect":
        lines = [f"{head}: {len(doc['detections'])} detection(s)"]
        for d in doc["detections"]:
            box = ", ".join(f"{v:.1f}" for v in d["box"])
            lines.append(f"  {d.get('label') or d['class_id']} {d['score']:.3f} [{box}]")
        return "\n".join(lines)
    if task == "segment":
        classes = ", ".join(f"{c.get('label') or c['class_id']} {100 * c['fraction']:.1f}%" for c in doc["classes"])
        return f"{head}: mask {doc['shape']}: {classes}"
    if task == "text-detect":
        lines = [f"{head}: {len(doc['boxes'])} text box(es)"]
        for b in doc["boxes"]:
            pts = " ".join(f"({x:.1f}, {y:.1f})" for x, y in b["points"])
            lines.append(f"  {b['score']:.3f} {pts}")
        return "\n".join(lines)
    shapes = ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in doc.get("outputs", {}).items())
    return f"{head}: {shapes}"


# ----------------------------------------------------------------- bench
@app.command()
@command
def bench(
    packages: List[Path] = typer.Argument(..., help="One or more .edgepkg files or package directories (compared side by side)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Benchmark with another runtime than the manifest's."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs first."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", min=1, help="Timed runs (default 100)."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.01, help="Run for this many seconds instead."),
    image: Optional[Path] = typer.Option(None, "--image", help="Also time end to end on this image: decode + preprocess + infer + postprocess."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runner threads (the runner's `threads` option; 0 = its default)."),
    as_json: bool = JsonOpt,
) -> None:
    """Time packages: load, first inference, median/p90/p99, measured throughput, peak memory (and end to end with --image)."""
    from .bench import benchmark_package, table

    if iterations is not None and duration is not None:
        raise ConfigError("give --iterations or --duration, not both")
    if image is not None and not image.is_file():
        raise ConfigError(f"--image {image}: no such file; give an image the packages can preprocess")
    options = {"threads": threads} if threads is not None else {}  # checked by the runner's option schema
    rows = []
    with _Progress(not as_json) as bar:
        for package in packages:
            rows.append(benchmark_package(package, runtime=runtime, warmup=warmup, iterations=iterations,
                                          duration=duration, image=image, progress=bar, **options))
    if as_json:
        _emit_json(rows[0] if len(rows) == 1 else {"packages": rows})
        return
    for line in table(rows):
        typer.echo(line)
    typer.echo("throughput = timed iterations / wall time of the timed loop; first = the call before warm-up; "
               f"peak = this process's peak RSS ({rows[0]['memory']['peak_scope']})")


# ----------------------------------------------------------------- targets
@app.command()
@command
def targets(as_json: bool = JsonOpt) -> None:
    """List targets and device profiles, and whether each toolchain is installed here."""
    from edgekit.runners import RUNNERS
    from edgekit.targets import TARGETS
    from edgekit.targets.devices import load_profiles

    rows = []
    for name in TARGETS.names():
        try:
            tgt = TARGETS.get(name)()
            installed, detail = tgt.toolchain()
            rows.append(
                {
                    "name": name,
                    "runtime": tgt.runtime,
                    "precisions": sorted(p.value for p in tgt.precisions),
                    "installed": installed,
                    "detail": detail,
                    "description": tgt.description,
                }
            )
        except ImportError as exc:  # a plug-in whose own import fails
            rows.append({"name": name, "installed": False, "detail": str(exc)})
    devices = [p.to_json() for p in load_profiles().values()]
    from edgekit.runners import describe_all_options

    # each runner's options with defaults and ranges, read from its schema (no runtime is imported)
    doc = {"targets": rows, "devices": devices, "runners": RUNNERS.names(), "runner_options": describe_all_options()}
    if as_json:
        _emit_json(doc)
        return
    typer.echo("targets:")
    for r in rows:
        mark = "installed" if r["installed"] else "missing  "
        typer.echo(f"  {r['name']:<12} {mark}  {','.join(r.get('precisions', [])):<16} {r.get('detail', '')}")
    typer.echo("devices:")
    for d in devices:
        typer.echo(f"  {d['name']:<18} → {d['target']:<12} {d['precision']:<5} {d['description']}")
    typer.echo("runner options (edgekit.load(pkg, NAME=VALUE); --json for types, ranges and help):")
    for name, opts in doc["runner_options"].items():
        listed = opts.get("error") if isinstance(opts, dict) else \
            ", ".join(f"{o['name']}={o['default']!r}" if o["default"] is not None else o["name"] for o in opts)
        typer.echo(f"  {name:<18} {listed}")


# ----------------------------------------------------------------- prepare
@app.command()
@command
def prepare(
    package: Path = typer.Argument(..., help="A tensorrt .edgepkg file or package directory."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Engine cache folder (default ~/.cache/edgekit/tensorrt)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even when a cached engine exists."),
    as_json: bool = JsonOpt,
) -> None:
    """Build a TensorRT package's engine on this device ahead of time (for a device image or first boot)."""
    from .runners.tensorrt import prepare as _prepare

    with _Progress(not as_json) as bar:
        doc = _prepare(package, cache_dir=cache_dir, progress=bar if not as_json else False, rebuild=rebuild)
    if as_json:
        _emit_json(doc)
        return
    what = f"built in {doc['build_seconds']:.1f} s" if doc["built"] else "already cached"
    typer.echo(f"{doc['package']}: TensorRT {doc['tensorrt']} engine for {doc['gpu']} (sm {doc['compute_capability']}) "
               f"{what}: {doc['engine']}")
    if doc.get("cache_warning"):
        typer.echo(f"warning: {doc['cache_warning']}", err=True)


# ----------------------------------------------------------------- quickstart
@app.command()
@command
def quickstart(
    output_dir: Path = typer.Option(Path("edgekit-quickstart"), "--output-dir", "-o", help="Where the packages go."),
    as_json: bool = JsonOpt,
) -> None:
    """Build the bundled Fashion-MNIST model for every installed target, verify each, print one table."""
    from edgekit.targets.quickstart import run_quickstart

    with _Progress(not as_json) as bar:
        rows = run_quickstart(output_dir, progress=bar)
    if as_json:
        _emit_json({"output_dir": str(output_dir), "packages": rows})
        return
    header = f"{'target':<12} {'precision':<9} {'size KiB':>9} {'top-1 agr':>9} {'min SQNR':>9} {'acc fp32':>9} {'acc pkg':>8} {'latency ms':>10}  {'timed with':<31} package"
    typer.echo(header)
    typer.echo("-" * len(header))
    for r in rows:
        if r.get("error"):
            typer.echo(f"{r['target']:<12} {r['precision']:<9} failed: {r['error']}")
            continue
        typer.echo(
            f"{r['target']:<12} {r['precision']:<9} {r['size_bytes'] / 1024:>9.1f} {_pct(r['top1_agreement']):>9} "
            f"{r['min_sqnr_db']:>6.1f} dB {_pct(r['reference_accuracy']):>9} {_pct(r['candidate_accuracy']):>8} "
            f"{r['latency_ms']:>10.4f}  {r.get('timed_with', ''):<31} {r['package']}"
        )


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


from . import cli_security as _security  # noqa: E402  (it imports `command` from this module)
from . import cli_export as _export  # noqa: E402

app.command()(_security.keygen)
app.command()(_security.sign)
app.command()(_security.verify)
app.add_typer(_export.export_app, name="export")
from .device_farm import cli as _farm  # noqa: E402  (typer only at import; the farm loads inside its commands)
app.add_typer(_farm.farm_app, name="farm")
app.command(name="report")(_farm.report)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
