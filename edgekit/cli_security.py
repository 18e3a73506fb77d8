"""CLI commands for package signatures: ``keygen``, ``sign``, ``verify`` (imported by edgekit.cli only).

Registered in :mod:`edgekit.cli` one line each.  Thin over
:mod:`edgekit.signing` and :mod:`edgekit.package`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli import JsonOpt, _emit_json, command
from .errors import ConfigError


@command
def keygen(
    key: Path = typer.Argument(..., help="Where to write the private key; the public key goes to KEY.pub."),
    as_json: bool = JsonOpt,
) -> None:
    """Make an ed25519 key pair for signing packages (KEY mode 0600, KEY.pub to give to devices)."""
    from .signing import PublicKey
    from .signing import keygen as _keygen

    priv, pub = _keygen(key)
    key_id = PublicKey.load(pub).key_id
    if as_json:
        _emit_json({"private_key": str(priv), "public_key": str(pub), "key_id": key_id})
        return
    typer.echo(f"wrote {priv} (private, keep it secret) and {pub} (public), key id {key_id}")


@command
def sign(
    package: Path = typer.Argument(..., help="A .edgepkg file or package directory."),
    key: Path = typer.Option(..., "--key", "-k", help="Private key file from `edgekit keygen`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the signed package here instead of in place."),
    as_json: bool = JsonOpt,
) -> None:
    """Verify PACKAGE and add an ed25519 signature over its integrity record (atomically)."""
    from .package import sign_package
    from .signing import PrivateKey

    pk = PrivateKey.load(key)
    opened = sign_package(package, pk, output=output)
    try:
        key_id = pk.public_key().key_id
        doc = {"package": str(opened.path), "digest": opened.digest, "key_id": key_id,
               "signatures": [s.get("key_id") for s in (opened.signature or {}).get("signatures", [])]}
    finally:
        opened.close()
    if as_json:
        _emit_json(doc)
        return
    typer.echo(f"signed {doc['package']} with key {key_id} (package digest {doc['digest']})")


@command
def verify(
    package: Path = typer.Argument(..., help="A .edgepkg file or package directory."),
    key: List[Path] = typer.Option(..., "--key", "-k", help="Trusted public key (KEY.pub); repeat for several."),
    as_json: bool = JsonOpt,
) -> None:
    """Check every file of PACKAGE and that one of the given keys signed it; exit 2 naming why not."""
    from .package import open_package
    from .signing import PublicKey, TrustPolicy

    if not key:
        raise ConfigError("give at least one --key KEY.pub")
    policy = TrustPolicy(tuple(PublicKey.load(k) for k in key), True)
    opened = open_package(package, trust=policy)
    try:
        doc = {"package": str(package), "digest": opened.digest, "signed_by": opened.signed_by, "verified": True,
               "files": len(opened.record.files) if opened.record else 0}
    finally:
        opened.close()
    if as_json:
        _emit_json(doc)
        return
    typer.echo(f"{package}: OK, {doc['files']} files intact, signed by trusted key {doc['signed_by']}")
