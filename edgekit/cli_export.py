"""``edgekit export snpe PKG DIR`` (registered in :mod:`edgekit.cli`; the work is :mod:`edgekit.snpe_export`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import JsonOpt, _emit_json, _Progress, command

export_app = typer.Typer(help="Write build-side files of a package somewhere else (they never go into a package).",
                         no_args_is_help=True)


@export_app.command("snpe")
@command
def snpe(
    package: Path = typer.Argument(..., help="A qnn .edgepkg (or package directory)."),
    out_dir: Path = typer.Argument(..., help="A new folder for the SNPE/QAIRT files."),
    model: Path = typer.Option(..., "--model", "-m", help="The source .onnx the package was built from."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="The calibration data the package was built with (int8)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write the SNPE/QAIRT files of a qnn package (fp32/QDQ ONNX, AIMET encodings, converter commands) to OUT_DIR."""
    from .snpe_export import export_snpe

    with _Progress(not as_json) as bar:
        doc = export_snpe(package, out_dir, model, calib, progress=bar)
    if as_json:
        _emit_json(doc)
        return
    typer.echo(f"wrote {len(doc['files'])} files to {doc['output']}: {', '.join(doc['files'][:6])}"
               + (" …" if len(doc["files"]) > 6 else ""))
    if doc["ranges_match_package"]:
        typer.echo("the encodings are byte-for-byte the ones the package was built with (sha256 recorded in its manifest)")
    elif doc["ranges_match_package"] is None:
        typer.echo("warning: the package records no encodings sha256 (built by an older edgekit); the ranges come "
                   "from the same source, recipe and --calib data but cannot be proven identical", err=True)
    else:
        typer.echo("warning: the encodings differ from the package's: --calib is not the data the package was "
                   "calibrated with; the exported ranges are not the package's", err=True)
