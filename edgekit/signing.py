"""ed25519 signatures over a package's integrity record.

What is signed: the exact bytes of ``integrity.json`` (sha256 and size of
every file, ``manifest.json`` included), prefixed with a context string so a
signature can never be replayed as a signature over anything else.  One
signature therefore covers the whole package.

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key), the
formats ``openssl genpkey -algorithm ed25519`` writes.  Public keys are
parsed here without the crypto library (a fixed 12-byte DER prefix + 32 key
bytes), so that naming a key and finding its id costs nothing; the
``cryptography`` library (extra ``edgekit[sign]``) is imported only to sign
or to actually verify a signature not verified before.

Device policy: :class:`TrustPolicy` — trusted public keys (from
``edgekit.load(..., trusted_keys=[...])`` and ``EDGEKIT_TRUSTED_KEYS``, a
list of key files separated by ``os.pathsep``) and whether a signature is
required (``require_signature=`` or ``EDGEKIT_REQUIRE_SIGNATURE=1``; it is
on by default as soon as any trusted key is configured).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._digest import sha256_hex
from ._record import record  # frozen dataclasses that are cheap to define (import time on devices)
from .errors import ConfigError, PackageError, RuntimeMissingError, SignatureError

SIGNATURE_SCHEMA = "edgekit.signature/1"
CONTEXT = b"edgekit package signature v1\x00"
ENV_TRUSTED = "EDGEKIT_TRUSTED_KEYS"
ENV_REQUIRE = "EDGEKIT_REQUIRE_SIGNATURE"
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
MAX_KEY_FILE = 16 << 10
KeySource = Union[str, "os.PathLike[str]", bytes, "PublicKey"]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise RuntimeMissingError(
            f"signing and verifying packages needs the 'cryptography' library ({exc}); "
            "install it with: pip install 'edgekit[sign]'"
        ) from None
    return ed25519


def _pem_body(text: bytes, label: str, where: str) -> bytes:
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a PEM key file (binary data); give a file written by `edgekit keygen`") from None
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in s or end not in s:
        raise ConfigError(f"{where}: expected a PEM block '{begin}'; give a file written by `edgekit keygen`")
    body = s.split(begin, 1)[1].split(end, 1)[0]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the PEM block is not valid base64; the key file is damaged") from None


@record
class PublicKey:
    """An ed25519 public key: 32 raw bytes and where it came from."""

    raw: bytes
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ConfigError(f'"public key" must be 32 bytes, but got {len(self.raw)} ({self.source})')

    @property
    def key_id(self) -> str:
        """First 16 hex digits of sha256 of the raw key: short, stable, shown in errors."""
        return sha256_hex(self.raw)[:16]

    def to_pem(self) -> bytes:
        b64 = base64.encodebytes(_SPKI_PREFIX + self.raw).decode("ascii").replace("\n", "")
        return f"-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n".encode("ascii")

    @classmethod
    def from_pem(cls, text: bytes, where: str) -> "PublicKey":
        der = _pem_body(text, "PUBLIC KEY", where)
        if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
            raise ConfigError(f"{where}: not an ed25519 public key; make one with `edgekit keygen KEY` (KEY.pub)")
        return cls(der[12:], where)

    @classmethod
    def load(cls, source: KeySource) -> "PublicKey":
        if isinstance(source, PublicKey):
            return source
        if isinstance(source, bytes):
            return cls.from_pem(source, "<bytes>")
        path = Path(source)
        return cls.from_pem(_read_key_file(path), str(path))

    def verify(self, signature: bytes, message: bytes) -> bool:
        ed25519 = _crypto()
        from cryptography.exceptions import InvalidSignature

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _read_key_file(path: Path) -> bytes:
    try:
        st = path.stat()
    except OSError:
        raise ConfigError(f"{path}: no such key file; make one with `edgekit keygen {path.with_suffix('')}`") from None
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file; give a PEM key file")
    if st.st_size > MAX_KEY_FILE:
        raise ConfigError(f"{path}: {st.st_size} bytes is too big for a key file; give a PEM key file")
    return path.read_bytes()


@record
class PrivateKey:
    """An ed25519 private key (32-byte seed)."""

    seed: bytes
    source: str = ""

    def __repr__(self) -> str:  # never print the seed
        return f"PrivateKey(key_id={self.public_key().key_id!r}, source={self.source!r})"

    def public_key(self) -> PublicKey:
        ed25519 = _crypto()
        from cryptography.hazmat.primitives import serialization as ser

        pk = ed25519.Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return PublicKey(pk.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw), self.source)

    def sign(self, message: bytes) -> bytes:
        ed25519 = _crypto()
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def to_pem(self) -> bytes:
        b64 = base64.encodebytes(_PKCS8_PREFIX + self.seed).decode("ascii").replace("\n", "")
        return f"-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n".encode("ascii")

    @classmethod
    def generate(cls) -> "PrivateKey":
        ed25519 = _crypto()
        from cryptography.hazmat.primitives import serialization as ser

        k = ed25519.Ed25519PrivateKey.generate()
        return cls(k.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()))

    @classmethod
    def load(cls, source: Union[str, "os.PathLike[str]", "PrivateKey"]) -> "PrivateKey":
        if isinstance(source, PrivateKey):
            return source
        path = Path(source)
        text = _read_key_file(path)
        if b"ENCRYPTED PRIVATE KEY" in text:
            raise ConfigError(f"{path}: encrypted private keys are not supported; give an unencrypted PKCS#8 key")
        der = _pem_body(text, "PRIVATE KEY", str(path))
        if len(der) != 48 or not der.startswith(_PKCS8_PREFIX):
            raise ConfigError(f"{path}: not an ed25519 private key; make one with `edgekit keygen {path}`")
        return cls(der[16:], str(path))


def keygen(path: Union[str, "os.PathLike[str]"]) -> Tuple[Path, Path]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``; never overwrites."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if os.path.lexists(p):
            raise ConfigError(f"{p}: already exists; keygen never overwrites a key, choose another name")
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent}: no such folder for the key")
    key = PrivateKey.generate()
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.to_pem())
    fd = os.open(str(pub), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(key.public_key().to_pem())
    return path, pub


def message(integrity: bytes) -> bytes:
    return CONTEXT + integrity


def sign_record(integrity: bytes, key: PrivateKey, existing: Optional[Dict[str, Any]] = None) -> bytes:
    """signature.json bytes: ``existing`` signatures by other keys kept, this key's replaced."""
    pub = key.public_key()
    sigs = [s for s in (existing or {}).get("signatures", []) if s.get("key_id") != pub.key_id]
    sigs.append({
        "algorithm": "ed25519",
        "key_id": pub.key_id,
        "signature": base64.b64encode(key.sign(message(integrity))).decode("ascii"),
    })
    return (json.dumps({"schema": SIGNATURE_SCHEMA, "signatures": sigs}, sort_keys=True) + "\n").encode("utf-8")


def parse_signatures(doc: Any, where: str) -> List[Tuple[str, bytes, str]]:
    """(key_id, signature bytes, signature text) for each ed25519 signature in signature.json."""
    if not isinstance(doc, dict) or doc.get("schema") != SIGNATURE_SCHEMA or not isinstance(doc.get("signatures"), list):
        raise SignatureError(f"{where}: signature.json is not an {SIGNATURE_SCHEMA!r} document; re-sign the package")
    out = []
    for i, s in enumerate(doc["signatures"]):
        if not isinstance(s, dict) or s.get("algorithm") != "ed25519":
            raise SignatureError(f"{where}: signature.json signatures[{i}] is not an ed25519 signature; re-sign the package")
        kid, text = s.get("key_id"), s.get("signature")
        if not isinstance(kid, str) or not isinstance(text, str) or len(text) > 200:
            raise SignatureError(f"{where}: signature.json signatures[{i}] is malformed; re-sign the package")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 64:
            raise SignatureError(f"{where}: signature.json signatures[{i}] is not 64 bytes of base64; re-sign the package")
        out.append((kid, raw, text))
    return out


@record
class TrustPolicy:
    """Which keys a device trusts and whether it refuses unsigned packages."""

    keys: Tuple[PublicKey, ...] = ()
    require: bool = False

    @classmethod
    def resolve(cls, trusted_keys: Optional[Iterable[KeySource]] = None, require_signature: Optional[bool] = None) -> "TrustPolicy":
        keys: List[PublicKey] = [PublicKey.load(k) for k in (trusted_keys or ())]
        env = os.environ.get(ENV_TRUSTED, "")
        for part in env.split(os.pathsep):
            if part.strip():
                keys.append(PublicKey.load(part.strip()))
        if require_signature is None:
            flag = os.environ.get(ENV_REQUIRE, "")
            if flag not in ("", "0", "1"):
                raise ConfigError(f'"{ENV_REQUIRE}" must be one of {{0, 1}}, but got {flag!r}')
            require_signature = flag == "1" or (flag == "" and bool(keys))
        if require_signature and not keys:
            raise ConfigError(
                "a signature is required but no key is trusted; pass trusted_keys=[...] to edgekit.load "
                f"or list public key files in {ENV_TRUSTED}"
            )
        return cls(tuple(keys), bool(require_signature))

    def check(self, integrity: bytes, signature_doc: Optional[Any], where: str,
              already_verified: Optional[Dict[str, str]] = None) -> Optional[Tuple[str, str]]:
        """Return (key_id, signature text) of the trusted signature that verifies, or None when none is required.

        ``already_verified`` (key_id → signature text) comes from the unpack
        cache, keyed by this record's digest: a match skips the crypto.
        """
        if not self.keys and not self.require:
            return None
        if signature_doc is None:
            if self.require:
                raise SignatureError(
                    f"{where}: the package is not signed, and this device requires a signature by a trusted key "
                    f"({', '.join(k.key_id for k in self.keys)}); sign it with `edgekit sign PKG --key KEY`"
                )
            return None
        sigs = parse_signatures(signature_doc, where)
        trusted = {k.key_id: k for k in self.keys}
        msg = message(integrity)
        seen = []
        for kid, raw, text in sigs:
            seen.append(kid)
            key = trusted.get(kid)
            if key is None:
                continue
            if already_verified and already_verified.get(kid) == text:
                return kid, text
            if key.verify(raw, msg):
                return kid, text
            raise SignatureError(
                f"{where}: the signature by trusted key {kid} does not match the package contents "
                "(the package was changed after signing); re-copy it or rebuild and re-sign it"
            )
        if self.require:
            raise SignatureError(
                f"{where}: signed by key(s) {', '.join(seen) or 'none'}, none of which this device trusts "
                f"(trusted: {', '.join(trusted)}); add the signer's .pub to {ENV_TRUSTED} or re-sign with a trusted key"
            )
        return None


def verify_with(integrity: bytes, signature_doc: Optional[Any], keys: Sequence[PublicKey], where: str) -> str:
    """Strict check for ``edgekit verify``: some given key must have signed the record; returns its id."""
    policy = TrustPolicy(tuple(keys), True)
    found = policy.check(integrity, signature_doc, where)
    if found is None:  # pragma: no cover - require=True never returns None
        raise PackageError(f"{where}: no trusted signature")
    return found[0]
