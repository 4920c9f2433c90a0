"""Checking an evidence pack offline, from the pack alone.

Nothing here reads ``MLSTEWARD_HOME``, MLflow, the audit store, the anchor or the network: an
auditor holds the folder (or its zip) and mlsteward installed, nothing more. Every check runs
even after one fails, so the report names everything that is wrong, one line per check:

- ``manifest``: every file's SHA-256 against ``manifest.sha256``, no file missing or added;
- ``index``: ``index.json`` is a pack index whose file list (SHA-256 and size) agrees;
- ``audit chain``: the slice's records hash and link (``audit_slice.check_slice``);
- ``checkpoint``: its signature with ``audit/governance.pub``, and the slice ends at its head;
- ``artifact signature``: ``artifacts/model/`` against ``artifacts/signature/model.sig`` with
  ``artifacts/governance.pub`` (OpenSSF model-signing, as every load checks it);
- ``artifact in trail``: the version's ``version_registered`` record in the slice names the
  artifact's SHA-256 (and the signing key);
- ``keys``: both signatures are by the same key, and by the key the auditor passed, if any.

The keys in a pack prove it consistent, not who made it: ``--public-key`` pins the key an
auditor holds from elsewhere.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlsteward.audit.checkpoints import Checkpoint
from mlsteward.audit.records import AuditError
from mlsteward.errors import MlstewardError
from mlsteward.evidence.audit_slice import (
    CHECKPOINT,
    PUBLIC_KEY,
    SLICE,
    SliceCheck,
    check_slice,
)
from mlsteward.evidence.manifest import (
    FORMAT,
    INDEX_JSON,
    MANIFEST,
    PackError,
    extract_zip,
    pack_files,
    read_manifest,
)
from mlsteward.governance.signatures import verify_model_dir
from mlsteward.integrity import sha256_file
from mlsteward.signing import keys

MODEL_DIR = "artifacts/model"
SIGNATURE = "artifacts/signature/model.sig"
ARTIFACT_KEY = "artifacts/governance.pub"
MODEL_FILE = "model.ubj"
MAX_NAMED = 5


@dataclass(frozen=True)
class Check:
    """One check's verdict; ``message`` names the file or record at fault."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "message": self.message}


@dataclass(frozen=True)
class PackVerification:
    """Every check of one pack."""

    pack: str
    model: str | None
    version: str | None
    framework: str | None
    digest: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pack": self.pack,
            "model": self.model,
            "version": self.version,
            "framework": self.framework,
            "digest": self.digest,
            "checks": [c.to_dict() for c in self.checks],
        }


def verify_pack(path: Path, *, public_key: Path | None = None) -> PackVerification:
    """Check the pack at ``path`` (its folder or its zip).

    Raises:
        PackError: ``path`` is neither a pack's folder nor a pack's zip, or the key passed
            cannot be read.
    """
    path = Path(path)
    pinned = _read_key(public_key, str(public_key)) if public_key is not None else None
    if path.is_dir():
        if not (path / INDEX_JSON).is_file() and not (path / MANIFEST).is_file():
            raise PackError(f"{path} is not an evidence pack: it has no {INDEX_JSON} or {MANIFEST}")
        return _verify_folder(path, str(path), pinned)
    if path.is_file():
        with tempfile.TemporaryDirectory(prefix="mlsteward-verify-pack-") as d:
            folder = extract_zip(path, Path(d))
            return _verify_folder(folder, str(path), pinned)
    raise PackError(f"{path} does not exist")


def _read_key(path: Path, label: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PackError(f"{label} is not a readable PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PackError(f"{label} is not an elliptic-curve public key")
    return key


class _Failed(Exception):
    """A check's failure with its message (caught by :func:`_run`)."""


def _run(name: str, check: Callable[[], str]) -> Check:
    try:
        return Check(name, True, check())
    except _Failed as exc:
        return Check(name, False, str(exc))
    except (MlstewardError, OSError, ValueError, KeyError, TypeError) as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def _named(problems: list[str]) -> str:
    more = len(problems) - MAX_NAMED
    return "; ".join(problems[:MAX_NAMED]) + (f"; and {more} more" if more > 0 else "")


def _verify_folder(
    root: Path, label: str, pinned: ec.EllipticCurvePublicKey | None
) -> PackVerification:
    index = _index(root)
    digest = sha256_file(root / MANIFEST) if (root / MANIFEST).is_file() else None
    lines = _slice_lines(root)
    sliced = check_slice(lines) if lines is not None else None
    checks = [
        _run("manifest", lambda: _manifest(root, digest)),
        _run("index", lambda: _index_files(root, index)),
        _run("audit chain", lambda: _chain(sliced)),
        _run("checkpoint", lambda: _checkpoint(root, sliced)),
        _run("artifact signature", lambda: _artifact(root)),
        _run("artifact in trail", lambda: _in_trail(root, index, lines)),
        _run("keys", lambda: _keys(root, pinned)),
    ]
    return PackVerification(
        pack=label,
        model=index.get("model") if index else None,
        version=index.get("version") if index else None,
        framework=index.get("framework") if index else None,
        digest=digest,
        checks=checks,
    )


# ------------------------------------------------------------------------------ reading


def _index(root: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((root / INDEX_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _slice_lines(root: Path) -> list[str] | None:
    try:
        return (root / SLICE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def _key(root: Path, rel: str) -> ec.EllipticCurvePublicKey:
    if not (root / rel).is_file():
        raise _Failed(f"{rel} is missing")
    try:
        return _read_key(root / rel, rel)
    except PackError as exc:
        raise _Failed(str(exc)) from None


# ------------------------------------------------------------------------------ checks


def _manifest(root: Path, digest: str | None) -> str:
    try:
        listed = read_manifest(root)
    except PackError as exc:
        raise _Failed(str(exc)) from None
    present = set(pack_files(root)) - {MANIFEST}
    problems = [f"{rel} is listed but missing" for rel in sorted(set(listed) - present)]
    problems += [f"{rel} is not in {MANIFEST}" for rel in sorted(present - set(listed))]
    for rel in sorted(set(listed) & present):
        actual = sha256_file(root / rel)
        if actual != listed[rel]:
            problems.append(f"{rel} changed: sha256 {actual[:16]}… != {listed[rel][:16]}…")
    if problems:
        raise _Failed(_named(problems))
    return f"{len(listed)} files match {MANIFEST} (pack digest {digest})"


def _index_files(root: Path, index: dict[str, Any] | None) -> str:
    if index is None:
        raise _Failed(f"{INDEX_JSON} is missing or not a JSON object")
    if index.get("format") != FORMAT:
        raise _Failed(f"{INDEX_JSON} has format {index.get('format')!r}, not {FORMAT!r}")
    files = index.get("files")
    if not isinstance(files, list):
        raise _Failed(f"{INDEX_JSON} has no file list")
    present = set(pack_files(root)) - {MANIFEST, INDEX_JSON}
    problems: list[str] = []
    seen: set[str] = set()
    for item in files:
        rel = str(item.get("path")) if isinstance(item, dict) else "?"
        seen.add(rel)
        if rel not in present:
            problems.append(f"{INDEX_JSON} lists {rel}, which is missing")
            continue
        if item.get("sha256") != sha256_file(root / rel):
            problems.append(f"{rel}: sha256 differs from {INDEX_JSON}")
        if item.get("size") != (root / rel).stat().st_size:
            problems.append(f"{rel}: size differs from {INDEX_JSON}")
    problems += [f"{rel} is not listed in {INDEX_JSON}" for rel in sorted(present - seen)]
    if problems:
        raise _Failed(_named(problems))
    return (
        f"{len(files)} files of {index.get('model')} v{index.get('version')} "
        f"({index.get('framework')}) as listed"
    )


def _chain(sliced: SliceCheck | None) -> str:
    if sliced is None:
        raise _Failed(f"{SLICE} is missing or unreadable")
    if not sliced.ok:
        raise _Failed(f"{SLICE}: {sliced.problem}")
    return (
        f"{SLICE} records {sliced.first_seq}..{sliced.last_seq} ({sliced.records}, "
        f"{sliced.redacted} redacted) hash and link correctly"
    )


def _checkpoint(root: Path, sliced: SliceCheck | None) -> str:
    try:
        data = json.loads((root / CHECKPOINT).read_text(encoding="utf-8"))
        cp = Checkpoint.from_dict(data if isinstance(data, dict) else {})
    except FileNotFoundError:
        raise _Failed(f"{CHECKPOINT} is missing") from None
    except (ValueError, AuditError) as exc:
        raise _Failed(f"{CHECKPOINT} is malformed: {exc}") from None
    public = _key(root, PUBLIC_KEY)
    kid = keys.key_id(public)
    if cp.key_id != kid:
        raise _Failed(f"{CHECKPOINT} names key {cp.key_id}, but {PUBLIC_KEY} is key {kid}")
    if not cp.signed_by(public):
        raise _Failed(
            f"{CHECKPOINT}: the signature does not verify with {PUBLIC_KEY} (key {kid}): the "
            "checkpoint was altered after signing"
        )
    if cp.records != cp.seq:
        raise _Failed(f"{CHECKPOINT} covers {cp.records} records but ends at seq {cp.seq}")
    if sliced is None or not sliced.ok:
        raise _Failed(f"the signature holds, but {SLICE} is broken, so it cannot reach the head")
    if sliced.last_seq != cp.seq:
        raise _Failed(
            f"{SLICE} ends at record {sliced.last_seq}, not at record {cp.seq} the checkpoint "
            "signed"
        )
    if sliced.last_hash != cp.head_hash:
        raise _Failed(
            f"{SLICE} record {cp.seq} has hash {str(sliced.last_hash)[:16]}…, not the head "
            f"hash {cp.head_hash[:16]}… the checkpoint signed"
        )
    return f"checkpoint {cp.seq} of {cp.ts} signed by key {kid}; the slice ends at its head"


def _artifact(root: Path) -> str:
    public = _key(root, ARTIFACT_KEY)
    model_dir = root / MODEL_DIR
    if not model_dir.is_dir():
        raise _Failed(f"{MODEL_DIR}/ is missing")
    try:
        verify_model_dir(model_dir, root / SIGNATURE, public, label=MODEL_DIR)
    except MlstewardError as exc:
        raise _Failed(str(exc).removesuffix("; refusing to use it")) from None
    count = sum(1 for p in model_dir.rglob("*") if p.is_file())
    return f"the {count} files of {MODEL_DIR}/ are the ones key {keys.key_id(public)} signed"


def _in_trail(root: Path, index: dict[str, Any] | None, lines: list[str] | None) -> str:
    if index is None or lines is None:
        raise _Failed(f"needs {INDEX_JSON} and {SLICE}")
    model, version = index.get("model"), str(index.get("version"))
    record = None
    for text in lines:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if (
            isinstance(doc, dict)
            and doc.get("action") == "version_registered"
            and doc.get("model") == model
            and str(doc.get("version")) == version
        ):
            record = doc
    if record is None:
        raise _Failed(f"{SLICE} holds no version_registered record of {model} v{version}")
    details = record.get("details") or {}
    where = f"{SLICE} record {record.get('seq')}"
    path = root / MODEL_DIR / MODEL_FILE
    if not path.is_file():
        raise _Failed(f"{MODEL_DIR}/{MODEL_FILE} is missing")
    actual = sha256_file(path)
    if details.get("artifact_sha256") != actual:
        raise _Failed(
            f"{MODEL_DIR}/{MODEL_FILE} has sha256 {actual[:16]}…, but {where} registered "
            f"{str(details.get('artifact_sha256'))[:16]}…"
        )
    named_key = details.get("signature_key_id")
    if named_key and (root / ARTIFACT_KEY).is_file():
        kid = keys.key_id(_key(root, ARTIFACT_KEY))
        if named_key != kid:
            raise _Failed(
                f"{where} says key {named_key} signed the artifact; {ARTIFACT_KEY} is {kid}"
            )
    return f"{where} (version_registered) names {MODEL_FILE}'s sha256 {actual[:16]}…"


def _keys(root: Path, pinned: ec.EllipticCurvePublicKey | None) -> str:
    audit_key, artifact_key = _key(root, PUBLIC_KEY), _key(root, ARTIFACT_KEY)
    a, b = keys.key_id(audit_key), keys.key_id(artifact_key)
    if a != b:
        raise _Failed(f"{PUBLIC_KEY} is key {a} but {ARTIFACT_KEY} is key {b}")
    if pinned is not None:
        expected = keys.key_id(pinned)
        if a != expected:
            raise _Failed(f"the pack is signed by key {a}, not by the key you gave ({expected})")
        return f"the checkpoint and the artifact are signed by key {a}, the key you gave"
    return (
        f"the checkpoint and the artifact are signed by key {a} (compare it with the "
        "governance key you hold, or pass --public-key)"
    )
