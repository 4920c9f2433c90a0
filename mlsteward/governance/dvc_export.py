"""A model's registered versions as DVC tracks them: the data snapshot each was trained on and
each signed model artifact, with our SHA-256 and what each file is in its ``.dvc`` file.

Governance is the room that sees both: the versions, their lineage tags and their artifacts
are the registry's, the snapshots and DVC itself the data room's
(:mod:`mlsteward.data.dvc_tracking`). Every file is verified before DVC sees it -- a snapshot
against its digest, an artifact by the same checks as every load (its SHA-256 tag and the
governance key's signature) -- and one refusal tracks nothing, so a tampered file never gets a
``.dvc`` file that would vouch for it.

Artifacts are tracked where they are stored: a local artifact store (the home's by default).
A remote one (an MLflow server's proxied store, an object store) is refused for now; its
snapshots can still be tracked without the models.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from mlsteward.config.settings import home
from mlsteward.data.dvc_tracking import (
    DvcTarget,
    TrackedFile,
    dvc_files_dir,
    dvc_repo_root,
    snapshot_target,
    track,
)
from mlsteward.errors import IntegrityError, MlstewardError, NotFoundError
from mlsteward.governance import signatures
from mlsteward.governance.mlflow_adapter import MODEL_FILE, client
from mlsteward.governance.registry import (
    CHAMPION,
    VersionInfo,
    check_artifact,
    list_versions,
    version_by_alias,
)
from mlsteward.integrity import sha256_file

DATA_DIGEST_TAG = "lineage.data_digest"
DATA_PATH_TAG = "lineage.data_path"
ALL = "all"


class DvcExport(BaseModel):
    """What ``mlsteward export-dvc`` tracked for a model."""

    model: str
    repo: str
    dvc_dir: str
    """The folder the ``.dvc`` files are in (one subfolder per model)."""
    versions: list[str]
    files: list[TrackedFile]
    git_add: list[str]
    """Files to commit to git: the ``.dvc`` files written and the ``.gitignore`` files DVC
    extended; empty when nothing changed."""
    skipped: list[dict[str, str]]
    """Versions whose snapshot cannot be named (registered without a data digest)."""


def parse_versions(values: Sequence[str]) -> tuple[bool, bool, list[str]]:
    """``all``, ``champion`` and version numbers, repeated or comma-separated, as (all,
    champion, numbers); nothing named means all.

    Raises:
        MlstewardError: a value that is none of these (named).
    """
    tokens = [t.strip() for v in values for t in v.split(",") if t.strip()] or [ALL]
    every, champion, numbers = False, False, []
    for token in tokens:
        if token == ALL:
            every = True
        elif token == CHAMPION:
            champion = True
        elif token.isdigit() and int(token) > 0:
            numbers.append(str(int(token)))
        else:
            raise MlstewardError(
                f"--versions {token!r}: expected all, champion or a version number (e.g. 3)"
            )
    return every, champion, numbers


def select_versions(model: str, values: Sequence[str]) -> list[VersionInfo]:
    """The registered versions of ``model`` that ``values`` name, oldest first.

    Raises:
        MlstewardError: a malformed value.
        NotFoundError: no registered version, no such version, or no champion.
    """
    every, champion, numbers = parse_versions(values)
    registered = list_versions(model)
    if not registered:
        raise NotFoundError(
            f"{model} has no registered versions: train one first (`mlsteward ingest --dvc` "
            "tracks a data snapshot before any training)"
        )
    by_number = {v.version: v for v in registered}
    chosen: dict[str, VersionInfo] = dict(by_number) if every else {}
    if champion:
        current = version_by_alias(model, CHAMPION)
        if current is None:
            raise NotFoundError(f"{model} has no champion; name the versions to export")
        chosen[current.version] = by_number.get(current.version, current)
    for number in numbers:
        if number not in by_number:
            known = ", ".join(by_number)
            raise NotFoundError(f"{model} has no registered version {number} (it has {known})")
        chosen[number] = by_number[number]
    return sorted(chosen.values(), key=lambda v: int(v.version))


def local_artifact_dir(info: VersionInfo) -> Path:
    """The directory the registry stores the version's model in, on this machine's disk
    (whether or not it still exists).

    Raises:
        MlstewardError: the artifact store is remote (not supported yet).
    """
    label = f"{info.name} v{info.version}"
    uri = client().get_model_version_download_uri(info.name, info.version)
    parts = urlsplit(str(uri))
    if parts.scheme not in ("", "file") or parts.netloc not in ("", "localhost"):
        raise MlstewardError(
            f"{label}: its artifact is in a remote artifact store ({uri}); tracking with DVC "
            "supports artifacts on local disk only, not yet remote stores: export the data "
            "snapshots alone (--no-models)"
        )
    return Path(unquote(parts.path))


def _files(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in signatures.IGNORED
    }


def model_target(info: VersionInfo, files_dir: Path, scratch: Path) -> DvcTarget:
    """The version's stored model directory, verified as every load verifies it, and byte for
    byte the directory that passed (the check reads a downloaded copy).

    Raises:
        IntegrityError: the model file's SHA-256 differs from its tag, or the stored directory
            differs from the checked copy.
        SignatureError: unsigned, or the governance key's signature does not verify.
        MlstewardError: a remote artifact store, or the directory is gone (the message says
            how DVC restores it when a ``.dvc`` file here records it).
    """
    label = f"{info.name} v{info.version}"
    dvc_file = files_dir / info.name / "models" / f"v{info.version}.dvc"
    stored = local_artifact_dir(info)
    if not stored.is_dir():
        restore = (
            f"; DVC recorded it in {dvc_file}: `dvc checkout {dvc_file}` restores it"
            if dvc_file.is_file()
            else ""
        )
        raise MlstewardError(f"{label}: its artifact directory {stored} is missing{restore}")
    checked, digest = check_artifact(info, scratch / f"v{info.version}")
    if _files(stored) != _files(checked.parent):
        raise IntegrityError(
            f"{label}: the stored model directory {stored} differs from the copy that passed "
            "its checks (changed while it was read?); refusing to track it"
        )
    meta: dict[str, Any] = {
        "kind": "model_artifact",
        "what": f"registered model {info.name} version {info.version}",
        "model": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "logged_model": info.source,
        "file": MODEL_FILE,
        "sha256": digest,
        "signing_key_id": info.tags.get(signatures.KEY_ID_TAG, ""),
        "data_version": info.tags.get(DATA_DIGEST_TAG, ""),
    }
    return DvcTarget(
        kind="model_artifact",
        model=info.name,
        path=stored,
        dvc_file=dvc_file,
        sha256=digest,
        meta=meta,
    )


def export_to_dvc(
    model: str,
    *,
    versions: Sequence[str] = (ALL,),
    snapshots: bool = True,
    models: bool = True,
    dvc_dir: Path | None = None,
) -> DvcExport:
    """Track the snapshots ``versions`` were trained on and their model artifacts with DVC, in
    the git repository with DVC initialised that holds the home.

    Everything is verified first; one refusal tracks nothing. Running it again changes nothing.

    Raises:
        MlstewardError: no DVC repository holds the home, dvc is not installed, nothing to
            export, a remote artifact store, or DVC refused (each named).
        NotFoundError: no such version or champion.
        SnapshotAlteredError: a snapshot's bytes no longer hash to its data version.
        SnapshotMissingError: a snapshot is gone.
        IntegrityError, SignatureError: an artifact failed its checks.
    """
    if not (snapshots or models):
        raise MlstewardError("nothing to export: --no-snapshots and --no-models together")
    root = dvc_repo_root(home())
    files_dir = dvc_files_dir(root, dvc_dir)
    chosen = select_versions(model, versions)

    targets: list[DvcTarget] = []
    skipped: list[dict[str, str]] = []
    if snapshots:
        seen: set[str] = set()
        for info in chosen:
            digest = info.tags.get(DATA_DIGEST_TAG)
            if not digest:
                skipped.append(
                    {"version": info.version, "reason": f"registered without {DATA_DIGEST_TAG}"}
                )
            elif digest not in seen:
                seen.add(digest)
                targets.append(
                    snapshot_target(model, digest, files_dir, info.tags.get(DATA_PATH_TAG))
                )
    if models:
        with tempfile.TemporaryDirectory(prefix="mlsteward-dvc-") as scratch:
            targets += [model_target(info, files_dir, Path(scratch)) for info in chosen]

    tracked = track(root, targets)
    return DvcExport(
        model=model,
        repo=tracked.repo,
        dvc_dir=str(files_dir),
        versions=[v.version for v in chosen],
        files=tracked.files,
        git_add=tracked.git_add,
        skipped=skipped,
    )
