"""The governance signing key: an elliptic-curve (NIST P-256) key pair.

One key signs everything governance vouches for: model artifacts at registration (in the
OpenSSF ``model-signing`` format, so ``model_signing verify`` checks them), promotions, and the
audit trail's checkpoints. Verifiers need only the public key.

Where the private key comes from, first match wins:

1. ``MLSTEWARD_SIGNING_KEY_PEM``: the PEM text itself (a mounted secret passed as a variable);
2. ``MLSTEWARD_SIGNING_KEY_BLOCK``: the name of a Prefect ``Secret`` block holding the PEM
   (production: the worker reads it from the Prefect server);
3. ``MLSTEWARD_SIGNING_KEY``: a PEM file (a mounted secret);
4. ``<home>/keys/governance.key``, which ``mlsteward keys init`` writes for local use.

The public key: ``MLSTEWARD_SIGNING_PUBLIC_KEY`` (a PEM file), else ``<home>/keys/
governance.pub``, else derived from the private key.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlsteward.config import settings
from mlsteward.config.profiles import active
from mlsteward.errors import SigningError

PRIVATE_PEM_ENV = "MLSTEWARD_SIGNING_KEY_PEM"
PRIVATE_BLOCK_ENV = "MLSTEWARD_SIGNING_KEY_BLOCK"
PRIVATE_FILE_ENV = "MLSTEWARD_SIGNING_KEY"
PUBLIC_FILE_ENV = "MLSTEWARD_SIGNING_PUBLIC_KEY"
CURVE = ec.SECP256R1()
PRIVATE_NAME = "governance.key"
PUBLIC_NAME = "governance.pub"
INIT_HINT = "run `mlsteward keys init` (local use) or set MLSTEWARD_SIGNING_KEY"
KEY_SOURCES = (
    f"{PRIVATE_FILE_ENV} (a PEM file), {PRIVATE_PEM_ENV} (the PEM text) or {PRIVATE_BLOCK_ENV} "
    "(a Prefect Secret block)"
)


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path
    key_id: str
    created: bool


def keys_dir() -> Path:
    return settings.home() / "keys"


def private_key_path() -> Path:
    env = os.environ.get(PRIVATE_FILE_ENV)
    return Path(env).expanduser() if env else keys_dir() / PRIVATE_NAME


def public_key_path() -> Path:
    env = os.environ.get(PUBLIC_FILE_ENV)
    if env:
        return Path(env).expanduser()
    env_private = os.environ.get(PRIVATE_FILE_ENV)
    if env_private:  # a mounted key pair: the public half beside the private one
        return Path(env_private).expanduser().with_suffix(".pub")
    return keys_dir() / PUBLIC_NAME


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """A short, stable name for a public key: SHA-256 of its DER encoding, 16 hex digits."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def init_keys(*, force: bool = False) -> KeyFiles:
    """Create the key pair at the configured paths (private 0600, public 0644).

    An existing key is kept (``created`` False) unless ``force``: replacing it makes every
    signature made with it unverifiable with the new public key.
    """
    private, public = private_key_path(), public_key_path()
    if private.exists() and not force:
        key = _read_private_file(private)
        if not public.exists():
            _write(public, public_pem(key.public_key()), 0o644)
        return KeyFiles(private, public, key_id(key.public_key()), created=False)
    key = ec.generate_private_key(CURVE)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(private, pem, 0o600)
    _write(public, public_pem(key.public_key()), 0o644)
    return KeyFiles(private, public, key_id(key.public_key()), created=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _parse_private(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(
            f"the governance key in {where} is not an unencrypted PEM key: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningError(f"the governance key in {where} is not an elliptic-curve key")
    return key


def _read_private_file(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the governance key {path}: {exc.strerror}") from exc
    return _parse_private(pem, str(path))


def _block_pem(name: str) -> bytes:
    # Imported here: only the production profile keeps the key in a Prefect Secret block.
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
        value = block.get()
    except Exception as exc:
        raise SigningError(f"cannot read the Prefect Secret block {name!r}: {exc}") from exc
    return str(value).encode("utf-8")


def configured() -> bool:
    """True when a private key is available (without reading it)."""
    return bool(
        os.environ.get(PRIVATE_PEM_ENV)
        or os.environ.get(PRIVATE_BLOCK_ENV)
        or private_key_path().exists()
    )


def load_private_key() -> ec.EllipticCurvePrivateKey:
    """The governance private key (see the module doc for where it comes from).

    Raises:
        SigningError: none is configured, or it is not an EC private key in PEM.
    """
    pem = os.environ.get(PRIVATE_PEM_ENV)
    if pem:
        return _parse_private(pem.encode("utf-8"), PRIVATE_PEM_ENV)
    block = os.environ.get(PRIVATE_BLOCK_ENV)
    if block:
        return _parse_private(_block_pem(block), f"Prefect Secret block {block!r}")
    path = private_key_path()
    if not path.exists():
        raise SigningError(f"no governance signing key at {path}; {INIT_HINT}")
    return _read_private_file(path)


def ensure_private_key() -> tuple[ec.EllipticCurvePrivateKey, KeyFiles | None]:
    """The private key; in the local profile a missing one is made first (returned as the
    ``KeyFiles`` so the caller can audit its creation; None when the key existed), so one
    machine needs no set-up. Anywhere else a key appearing from nowhere would sign what nobody
    can verify with the deployment's public key, so it must be given.

    Raises:
        SigningError: no key is configured outside the local profile, or it cannot be read.
    """
    made = None
    if not configured():
        profile = active().name
        if profile != "local":
            raise SigningError(
                f"no governance signing key for profile {profile!r}: set {KEY_SOURCES}; "
                "`mlsteward keys init` makes one for local use"
            )
        with _creation_lock():
            made = init_keys()
    # Read back from disk: a concurrent first use may have written the key that won.
    return load_private_key(), made if made is not None and made.created else None


@contextmanager
def _creation_lock() -> Iterator[None]:
    """Two processes making the local key at once would each write their own."""
    directory = private_key_path().parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".init.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_public_key() -> ec.EllipticCurvePublicKey:
    """The governance public key: the public file if there is one, else the private key's."""
    path = public_key_path()
    if path.exists():
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise SigningError(f"the governance public key {path} cannot be read: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigningError(f"the governance public key {path} is not an elliptic-curve key")
        return key
    if configured():
        return load_private_key().public_key()
    raise SigningError(f"no governance public key at {path}; {INIT_HINT}")


def sign_bytes(data: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """ECDSA-SHA256 signature of ``data``, base64 (DER)."""
    key = key or load_private_key()
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verify_bytes(data: bytes, signature: str, key: ec.EllipticCurvePublicKey | None = None) -> bool:
    """True when ``signature`` (from :func:`sign_bytes`) signs ``data`` with the key."""
    key = key or load_public_key()
    try:
        key.verify(base64.b64decode(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
