"""The pack as files: how each piece is written, the manifest that fixes every file's SHA-256,
and the zip beside the folder, written and read back the same way by the packer and the
verifier.

The manifest is in ``sha256sum`` format (``<hex>  <path>``, one line per file, sorted by path),
so an auditor without mlsteward can still run ``sha256sum -c manifest.sha256`` in the folder.
The zip holds the folder itself (``<pack>/...``) in sorted order with one fixed timestamp, so
the same folder always zips to the same bytes.
"""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlsteward.errors import MlstewardError
from mlsteward.integrity import sha256_file

FORMAT = "mlsteward-evidence/1"
"""``format`` of every pack's ``index.json``; a new layout gets a new tag."""

MANIFEST = "manifest.sha256"
INDEX_JSON = "index.json"
INDEX_MD = "INDEX.md"
ZIP_TIME = (2000, 1, 1, 0, 0, 0)
"""Every zip entry's timestamp: the bytes of a zip depend on its files only."""


class PackError(MlstewardError):
    """An evidence pack cannot be written or read as a pack (not a pack's folder or zip, a
    file outside the pack, a manifest line that is not ``<sha256>  <path>``)."""


def write_json(root: Path, rel: str, data: Any) -> str:
    """``data`` as indented, key-sorted JSON at ``root/rel``; returns ``rel`` (what a piece of
    evidence lists)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    return rel


def write_text(root: Path, rel: str, text: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return rel


def copy_file(src: Path, root: Path, rel: str) -> str:
    """``src`` copied byte for byte to ``root/rel``."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)
    return rel


def pack_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a pack-relative POSIX path, sorted.

    Raises:
        PackError: a symbolic link or special file (a pack holds plain files only).
    """
    out = []
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        rel = path.relative_to(root).as_posix()
        if not stat.S_ISREG(mode):
            raise PackError(f"{rel} is not a plain file (links and devices are not evidence)")
        out.append(rel)
    return sorted(out)


@dataclass(frozen=True)
class FileEntry:
    """One file of the pack as ``index.json`` lists it."""

    path: str
    sha256: str
    size: int
    kind: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "kind": self.kind}


def entries(root: Path, rels: Iterable[str], kinds: dict[str, str]) -> list[FileEntry]:
    return [
        FileEntry(rel, sha256_file(root / rel), (root / rel).stat().st_size, kinds.get(rel))
        for rel in sorted(rels)
    ]


def write_manifest(root: Path) -> str:
    """``manifest.sha256`` over every other file; returns the manifest's own SHA-256, which
    names the whole pack (the pack digest the audit record carries)."""
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in pack_files(root) if rel != MANIFEST]
    (root / MANIFEST).write_text("".join(lines), encoding="utf-8")
    return sha256_file(root / MANIFEST)


def read_manifest(root: Path) -> dict[str, str]:
    """``path -> sha256`` from ``manifest.sha256``.

    Raises:
        PackError: no manifest, or a line that is not ``<64 hex>  <relative path>``.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise PackError(f"{MANIFEST} is missing")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise PackError(f"{MANIFEST} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        safe_relative(rel, f"{MANIFEST} line {number}")
        if rel in out:
            raise PackError(f"{MANIFEST} line {number} lists {rel} a second time")
        out[rel] = digest
    return out


def safe_relative(rel: str, where: str) -> str:
    """``rel`` when it is a relative path inside the pack.

    Raises:
        PackError: an absolute path, or one that climbs out with ``..``.
    """
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise PackError(f"{where} names {rel!r}, which is not a path inside the pack")
    return rel


def write_zip(root: Path, zip_path: Path, name: str) -> None:
    """``root``'s files as ``<name>/<path>`` entries, sorted, all with :data:`ZIP_TIME`."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in pack_files(root):
            info = zipfile.ZipInfo(f"{name}/{rel}", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, (root / rel).read_bytes())


def extract_zip(zip_path: Path, into: Path) -> Path:
    """Unpack a pack's zip into ``into`` and return the pack's folder inside it.

    Raises:
        PackError: not a zip, an entry outside the pack's folder or not a plain file, or no
            single folder holding ``index.json``.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackError(f"{zip_path} is not a readable zip: {exc}") from None
    with zf:
        tops = set()
        for info in zf.infolist():
            safe_relative(info.filename.rstrip("/"), f"zip entry {info.filename!r}")
            kind = (info.external_attr >> 16) & 0o170000
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise PackError(f"zip entry {info.filename} is not a plain file")
            tops.add(PurePosixPath(info.filename).parts[0])
        if len(tops) != 1:
            raise PackError(
                f"{zip_path} holds {len(tops)} top-level entries; a pack's zip holds one folder"
            )
        zf.extractall(into)
    folder = into / tops.pop()
    if not (folder / INDEX_JSON).is_file():
        raise PackError(f"{zip_path} has no {INDEX_JSON} in its folder {folder.name}")
    return folder
