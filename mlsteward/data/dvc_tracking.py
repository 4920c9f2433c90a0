"""Data snapshots and model artifacts tracked by DVC: DVC's MD5 beside our SHA-256.

A git commit of the ``.dvc`` files pins the exact bytes of each data version and registered
artifact, and DVC's cache and remotes keep and move them (``dvc checkout``, ``dvc push`` and
``dvc pull``). What a file is -- our SHA-256, the model, the data version, a version and its
run -- rides in each ``.dvc`` file's ``meta:`` field, which DVC keeps as written.

The ``.dvc`` files live apart from what they track, in one folder of the repository (by
default ``<repo>/dvc/<model>/``): the home is often git-ignored (this project's own is) and DVC
refuses a ``.dvc`` file that git ignores, and a model directory is signed file by file, where a
``.dvc`` file would be an unsigned extra. DVC adds each tracked path to the ``.gitignore`` of
its folder itself.

Nothing unverified is tracked: a snapshot must still hash to its name here, and a model
artifact must pass the registry's checks before the caller makes it a target. DVC does the
hashing and the cache (its own layout, never re-implemented here) through its Python API, in
this process: one start-up instead of one per ``dvc`` command.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from mlsteward.data.snapshots import SnapshotMissingError, locate_snapshot
from mlsteward.errors import MlstewardError

META_KEY = "mlsteward"
"""The key of our facts in a ``.dvc`` file's ``meta:``, apart from anything a person adds."""
DVC_FILES_DIR = "dvc"
"""The folder of the repository the ``.dvc`` files go to, unless another is named."""
INSTALL_HINT = "install dvc (pip install dvc)"

Kind = Literal["data_snapshot", "model_artifact"]
Status = Literal["added", "updated", "unchanged"]


class DvcTarget(BaseModel):
    """A verified file or directory to track, where its ``.dvc`` file goes and what it is."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    model: str
    path: Path
    """The snapshot file, or the model directory whose files the governance key signed."""
    dvc_file: Path
    sha256: str
    """Our digest: the snapshot file's (its data version), or the model file's."""
    meta: dict[str, Any]
    """Written under ``meta: mlsteward:`` in the ``.dvc`` file."""


class TrackedFile(BaseModel):
    """One target as DVC now records it."""

    kind: Kind
    model: str
    path: str
    dvc_file: str
    sha256: str
    md5: str
    """DVC's digest: the file's MD5, or for a directory the MD5 of its listing (``….dir``)."""
    size: int
    status: Status
    """``added`` (no ``.dvc`` file before), ``updated`` (it differed) or ``unchanged``."""
    meta: dict[str, Any]


class DvcTracking(BaseModel):
    """What a tracking pass did in one DVC repository."""

    repo: str
    files: list[TrackedFile]
    git_add: list[str]
    """Files git should now record: the ``.dvc`` files written and the ``.gitignore`` files DVC
    extended (empty when nothing changed)."""


def _dvc_repo() -> Any:
    """DVC's ``Repo`` class, with DVC's console logging taken off this process's streams."""
    try:
        # Imported here: DVC is optional (a development dependency) and costs ~0.4 s to import;
        # only the commands that track files with it need it.
        from dvc.repo import Repo
    except ImportError:
        raise MlstewardError(f"tracking with DVC needs the dvc package: {INSTALL_HINT}") from None
    # Importing dvc binds console handlers to the sys.stdout/sys.stderr of that moment and
    # raises from any write they fail: its messages go through ordinary logging instead, and
    # its progress chatter (INFO) is dropped.
    for name in ("dvc", "dvc_objects", "dvc_data"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.setLevel(logging.WARNING)
    return Repo


def _git_root(path: Path) -> Path | None:
    for parent in (path, *path.parents):
        if (parent / ".git").exists():
            return parent
    return None


def dvc_repo_root(path: Path) -> Path:
    """The root of the git repository with DVC initialised that holds ``path``.

    Raises:
        MlstewardError: dvc is not installed; no DVC repository holds ``path`` (the message
            names the directory and the commands that make one); or the DVC repository is not
            in git (``dvc init --no-scm``), where ``.dvc`` files cannot be committed.
    """
    repo_class = _dvc_repo()
    from dvc.exceptions import NotDvcRepoError  # optional dependency; _dvc_repo found it
    from dvc.scm import NoSCM

    path = path.resolve()
    try:
        root = Path(repo_class.find_root(str(path)))
    except NotDvcRepoError:
        git = _git_root(path)
        if git is not None:
            raise MlstewardError(
                f"{path} is in the git repository {git}, but DVC is not initialised there: "
                f"run `dvc init` in {git} (and commit .dvc/ and .dvcignore)"
            ) from None
        raise MlstewardError(
            f"{path} is not inside a git repository with DVC initialised: run "
            f"`git init && dvc init` in {path.parent} (or a directory above it), then this "
            "command again"
        ) from None
    with repo_class(str(root)) as repo:
        if isinstance(repo.scm, NoSCM):
            raise MlstewardError(
                f"the DVC repository {root} is not in git (dvc init --no-scm), so its .dvc "
                f"files cannot be committed: run `git init` in {root} and remove `no_scm` "
                "from .dvc/config"
            )
    return root


def dvc_files_dir(root: Path, directory: Path | None = None) -> Path:
    """Where the ``.dvc`` files go: ``directory``, by default ``<root>/dvc``.

    Raises:
        MlstewardError: ``directory`` is outside the repository.
    """
    chosen = (directory or root / DVC_FILES_DIR).expanduser().resolve()
    if not chosen.is_relative_to(root):
        raise MlstewardError(
            f"the .dvc files' folder {chosen} is outside the DVC repository {root}: choose one "
            "inside it"
        )
    return chosen


def snapshot_target(
    model: str, digest: str, files_dir: Path, recorded_path: str | None = None
) -> DvcTarget:
    """The snapshot of ``digest``, verified: its bytes hash to the digest it is named by.

    Raises:
        SnapshotAlteredError: the file's bytes changed after ingestion: it is never tracked.
        SnapshotMissingError: the file is gone; the message says how DVC restores it when a
            ``.dvc`` file here records it.
    """
    dvc_file = files_dir / model / "snapshots" / f"{digest}.parquet.dvc"
    try:
        path = locate_snapshot(model, digest, recorded_path)
    except SnapshotMissingError as exc:
        if dvc_file.is_file():
            raise SnapshotMissingError(
                f"{exc}; DVC recorded it in {dvc_file}: `dvc checkout {dvc_file}` restores it "
                "from the cache (`dvc pull` from a remote)"
            ) from None
        raise
    meta = {
        "kind": "data_snapshot",
        "what": f"data snapshot of {model}",
        "model": model,
        "data_version": digest,
        "sha256": digest,
    }
    return DvcTarget(
        kind="data_snapshot", model=model, path=path, dvc_file=dvc_file, sha256=digest, meta=meta
    )


def _read(dvc_file: Path) -> dict[str, Any] | None:
    if not dvc_file.is_file():
        return None
    try:
        loaded = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}  # unreadable: written again
    return loaded if isinstance(loaded, dict) else {}


def _out(doc: dict[str, Any] | None) -> dict[str, Any]:
    outs = (doc or {}).get("outs")
    return (
        outs[0] if isinstance(outs, list) and len(outs) == 1 and isinstance(outs[0], dict) else {}
    )


def _same_record(doc: dict[str, Any] | None, out_path: str, meta: dict[str, Any]) -> bool:
    """The ``.dvc`` file names this output with our facts, in DVC 3's format (``hash: md5``)."""
    out = _out(doc)
    return (
        doc is not None
        and doc.get("meta") == {META_KEY: meta}
        and out.get("path") == out_path
        and out.get("hash") == "md5"
        and bool(out.get("md5"))
    )


def _check_placement(repo: Any, root: Path, target: DvcTarget) -> None:
    for what, path in (("tracked path", target.path), (".dvc file", target.dvc_file)):
        if not path.resolve().is_relative_to(root):
            raise MlstewardError(
                f"the {what} {path} is outside the DVC repository {root}: DVC tracks files "
                f"inside its repository only (a home or MLSTEWARD_SNAPSHOT_ROOT inside {root})"
            )
    if repo.scm.is_ignored(str(target.dvc_file)):
        raise MlstewardError(
            f"the .dvc file {target.dvc_file} would be git-ignored, so it could not be committed: "
            "choose a .dvc files' folder git does not ignore"
        )


def _sync(repo: Any, target: DvcTarget) -> tuple[Status, dict[str, Any]]:
    """Write the target's ``.dvc`` file and commit it to DVC's cache, unless DVC already
    records exactly these bytes with these facts (then nothing is written)."""
    before = _read(target.dvc_file)
    out_path = Path(os.path.relpath(target.path, target.dvc_file.parent)).as_posix()
    if _same_record(before, out_path, target.meta) and not repo.status(
        targets=[str(target.dvc_file)]
    ):
        assert before is not None
        return "unchanged", before
    old_text = target.dvc_file.read_bytes() if target.dvc_file.is_file() else None
    target.dvc_file.parent.mkdir(parents=True, exist_ok=True)
    # Our part of the file; DVC's commit adds its digests (md5, size, hash: md5) to the output
    # and keeps the rest as written.
    record = {"meta": {META_KEY: target.meta}, "outs": [{"path": out_path}]}
    target.dvc_file.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    try:
        repo.commit(str(target.dvc_file), force=True)
    except BaseException:
        if old_text is None:
            target.dvc_file.unlink(missing_ok=True)
        else:
            target.dvc_file.write_bytes(old_text)
        raise
    return ("added" if before is None else "updated"), _read(target.dvc_file) or {}


def track(root: Path, targets: list[DvcTarget]) -> DvcTracking:
    """Track ``targets`` in the DVC repository at ``root``: each ``.dvc`` file written (ours
    in ``meta``, DVC's digests in ``outs``), its data in DVC's cache, its path git-ignored.

    Idempotent: a target DVC already records with the same bytes and facts is left as it is.

    Raises:
        MlstewardError: dvc is missing; a target or its ``.dvc`` file is outside the
            repository, or the ``.dvc`` file would be git-ignored; DVC failed (its message).
    """
    repo_class = _dvc_repo()
    from dvc.exceptions import DvcException  # optional dependency; _dvc_repo found it

    files: list[TrackedFile] = []
    to_git: set[str] = set()
    try:
        with repo_class(str(root)) as repo:
            for target in targets:
                _check_placement(repo, root, target)
            # quiet: DVC's hint to `git add` is printed by the caller, from git_add; with
            # core.autostage set, DVC stages the files itself as its own add does.
            with repo.scm_context(quiet=True):
                for target in targets:
                    status, doc = _sync(repo, target)
                    out = _out(doc)
                    files.append(
                        TrackedFile(
                            kind=target.kind,
                            model=target.model,
                            path=str(target.path),
                            dvc_file=str(target.dvc_file),
                            sha256=target.sha256,
                            md5=str(out.get("md5", "")),
                            size=int(out.get("size", 0)),
                            status=status,
                            meta=target.meta,
                        )
                    )
                to_git = {os.path.abspath(p) for p in repo.scm_context.files_to_track}
    except DvcException as exc:
        raise MlstewardError(f"DVC refused to track the files in {root}: {exc}") from None
    return DvcTracking(repo=str(root), files=files, git_add=sorted(to_git))


def track_snapshot(model: str, digest: str, root: Path, dvc_dir: Path | None = None) -> DvcTracking:
    """Track one verified snapshot (a new data version, right after ingestion).

    Raises:
        SnapshotAlteredError, SnapshotMissingError: as :func:`snapshot_target`.
        MlstewardError: as :func:`track`.
    """
    return track(root, [snapshot_target(model, digest, dvc_files_dir(root, dvc_dir))])
