"""Model artifacts signed by the governance key, in the OpenSSF ``model-signing`` format.

The SHA-256 tag of a version lives in the same writable MLflow store as the artifact, so whoever
can swap ``model.ubj`` can rewrite the tag too. A signature by the governance key over every
file of the model directory cannot be made without the private key: it is the proof, and the
tags (``model_artifact_sha256``, ``model_signature``, ``signing_key_id``) are only hints.

The format is the one ``model_signing sign key`` writes, so anyone holding the public key can
check a downloaded version with ``model_signing verify key`` (docs/governance.md). The signature
is stored beside the model in the version's run (``signature/model.sig``), never inside the
model directory, whose files it covers.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlsteward.audit.signing_key import governance_key
from mlsteward.errors import SignatureError, SigningError
from mlsteward.signing import keys

if TYPE_CHECKING:
    import model_signing

SIGNATURE_DIR = "signature"
SIGNATURE_FILE = "model.sig"
SIGNATURE_ARTIFACT = f"{SIGNATURE_DIR}/{SIGNATURE_FILE}"
SIGNATURE_TAG = "model_signature"
KEY_ID_TAG = "signing_key_id"
# MLflow's client writes this file into every model directory it downloads from a models:/ URI
# (the registered name and version it was asked for); it is not stored, so it is not signed.
# The ignored names are recorded in the signature, where ``model_signing verify`` reads them.
IGNORED = ("registered_model_meta",)


def signing_key_for_use(actor: str = "governance") -> ec.EllipticCurvePrivateKey:
    """The governance private key, made on first use in the local profile and that creation
    audited (``audit.signing_key.governance_key``), so ``make demo`` and a fresh checkout sign
    without any set-up.

    Raises:
        SigningError: no key is configured outside the local profile, or it cannot be read.
    """
    return governance_key(actor)


def _model_signing() -> Any:
    # Imported here: model_signing (with sigstore) costs ~0.17 s, and the commands that only
    # read the registry (status, report) never sign or verify.
    import model_signing

    return model_signing


def _hashing() -> model_signing.hashing.Config:
    return _model_signing().hashing.Config().set_ignored_paths(paths=IGNORED)


def _write_private(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


@contextmanager
def _private_key_file(key: ec.EllipticCurvePrivateKey) -> Iterator[Path]:
    """A file holding the key, which is all ``model_signing``'s signer takes: the key's own file
    when it came from one, else a 0600 copy in a private temporary directory, removed after."""
    path = keys.private_key_path()
    from_file = not (os.environ.get(keys.PRIVATE_PEM_ENV) or os.environ.get(keys.PRIVATE_BLOCK_ENV))
    if from_file and path.exists():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlsteward-key-") as d:
        copy = Path(d) / "governance.key"
        _write_private(key, copy)
        try:
            yield copy
        finally:
            copy.unlink(missing_ok=True)


def sign_model_dir(model_dir: Path, signature_path: Path) -> str:
    """Sign every file of ``model_dir`` (but :data:`IGNORED`) into ``signature_path``; returns
    the signing key's id.

    Raises:
        SigningError: no usable governance key, or the directory cannot be signed.
    """
    key = signing_key_for_use()
    with _private_key_file(key) as key_path:
        try:
            _model_signing().signing.Config().use_elliptic_key_signer(
                private_key=key_path
            ).set_hashing_config(_hashing()).sign(model_dir, signature_path)
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot sign the model directory {model_dir}: {exc}") from exc
    return keys.key_id(key.public_key())


def _public_key_file(key: ec.EllipticCurvePublicKey, directory: Path) -> Path:
    path = directory / "governance.pub"
    path.write_bytes(keys.public_pem(key))
    return path


_CHANGED = re.compile(r"Hash mismatch for '([^']+)'")
_LISTED = re.compile(r"(Extra|Missing) files (?:found )?in model '[^']*': (.+)")


def _mismatch(text: str) -> str:
    """``model_signing``'s list of differences as one short clause naming the files."""
    try:
        diffs = ast.literal_eval(text.removeprefix("Signature mismatch: "))
    except (ValueError, SyntaxError):
        return text
    parts = []
    for diff in diffs if isinstance(diffs, list) else [text]:
        if m := _CHANGED.match(str(diff)):
            parts.append(f"{m.group(1)} changed")
        elif m := _LISTED.match(str(diff)):
            what = "unsigned file(s)" if m.group(1) == "Extra" else "missing file(s)"
            parts.append(f"{what} {m.group(2)}")
        else:
            parts.append(str(diff))
    return "; ".join(parts)


def verify_model_dir(
    model_dir: Path,
    signature_path: Path,
    public_key: ec.EllipticCurvePublicKey | None = None,
    *,
    label: str | None = None,
) -> None:
    """Check that the governance key signed exactly the files of ``model_dir``.

    ``label`` names the model in messages (``heart_disease v3``); ``public_key`` defaults to the
    governance public key.

    Raises:
        SignatureError: no signature, a signature by another key or altered, or files that
            differ from the signed ones (the message names them).
        SigningError: no governance public key to verify with.
    """
    what = label or str(model_dir)
    if not signature_path.is_file():
        raise SignatureError(f"{what}: no signature at {signature_path}; refusing to use it")
    public_key = public_key or keys.load_public_key()
    kid = keys.key_id(public_key)
    with tempfile.TemporaryDirectory(prefix="mlsteward-verify-key-") as d:
        config = (
            _model_signing()
            .verifying.Config()
            .use_elliptic_key_verifier(public_key=_public_key_file(public_key, Path(d)))
        )
        try:
            config.set_hashing_config(_hashing()).verify(model_dir, signature_path)
        except InvalidSignature:
            raise SignatureError(
                f"{what}: the signature does not verify with the governance key {kid} (it was "
                "altered after signing); refusing to use it"
            ) from None
        except ValueError as exc:
            text = str(exc)
            if text.startswith("Key mismatch"):
                why = f"it was signed by another key than the governance key {kid}"
            elif text.startswith("Signature mismatch"):
                why = f"the files differ from what governance key {kid} signed: {_mismatch(text)}"
            else:
                why = f"its signature {signature_path} cannot be read: {text}"
            raise SignatureError(f"{what}: {why}; refusing to use it") from None
        except (KeyError, TypeError, OSError) as exc:
            raise SignatureError(
                f"{what}: its signature {signature_path} cannot be read: {exc!r}; refusing to "
                "use it"
            ) from None
