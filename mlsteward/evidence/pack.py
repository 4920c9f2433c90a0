"""An evidence pack: everything an auditor needs about one registered model version, in one
folder (and a zip of it beside it) that verifies offline.

    result = build_pack("heart_disease", "3", principal=principal, framework="soc2")
    result.path, result.zip_path        # <home>/evidence/heart_disease-v3-soc2-<UTC time>[.zip]

The layout (``INDEX.md`` says the same to a person)::

    INDEX.md  index.json  manifest.sha256
    model_card.html  model_card.md
    lineage.json  lineage/recipe.json  lineage/openlineage.jsonl
    data/contract.json  data/ingestion.json
    validation/report.json  validation/report.md  validation/fairness.json
    validation/explainability.json
    approvals.json  access_control.json
    audit/slice.jsonl  audit/verification.json  audit/checkpoint.json  audit/governance.pub
    artifacts/model/...  artifacts/signature/model.sig  artifacts/governance.pub
    monitoring/drift.json  monitoring/alerts.json  monitoring/rollouts.json
    reproduction/records.json  reproduction/<run>/report.json

A kind of evidence with no material for the version (no reproduction ran, no sensitive
attribute was configured, no drift check yet) has no file, and the framework's controls that
rely on it are listed as gaps. Other rooms add kinds of their own through ``extra``: a kind
and a function that writes its files into the pack folder and returns them (pack-relative).

Written atomically: the pack is built in a hidden folder beside the target, zipped, recorded
in the audit trail (``evidence_packed``: framework, pack digest, files, gaps), and only then
renamed into place, so a failure at any step leaves nothing behind. Checking a pack is
``verify_pack`` (``mlsteward evidence verify``), which needs nothing but the pack.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, audit_store
from mlsteward.config.names import check_model_name
from mlsteward.config.settings import home
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.evidence import frameworks
from mlsteward.evidence.audit_slice import write_audit_evidence
from mlsteward.evidence.collect import (
    collect_artifacts,
    collect_card,
    collect_data,
    collect_lineage,
    collect_reproduction,
    collect_validation,
)
from mlsteward.evidence.decisions import collect_access, collect_approvals
from mlsteward.evidence.index import PackFacts, index_document, index_markdown
from mlsteward.evidence.manifest import (
    INDEX_JSON,
    INDEX_MD,
    MANIFEST,
    PackError,
    entries,
    pack_files,
    safe_relative,
    write_json,
    write_manifest,
    write_text,
    write_zip,
)
from mlsteward.evidence.monitoring import collect_monitoring
from mlsteward.evidence.subject import Pieces, resolve_subject
from mlsteward.governance.champion import recorded as recorded_champion
from mlsteward.identity import Principal

DEFAULT_FRAMEWORK = "eu-ai-act"

Extra = Mapping[str, Callable[[Path], list[str]]]
"""Evidence kind -> a function that writes that kind's files into the pack folder it is given
and returns them as pack-relative paths (an empty list: the kind has no material)."""


@dataclass(frozen=True)
class PackResult:
    """Where the pack went and what it holds."""

    model: str
    version: str
    framework: str
    path: Path
    zip_path: Path
    digest: str
    """SHA-256 of ``manifest.sha256``: names the whole pack; the audit record carries it."""
    files: int
    size_bytes: int
    zip_bytes: int
    evidence: list[str]
    absent: list[str]
    gaps: int
    audit_seq: int
    audit: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"], out["zip_path"] = str(self.path), str(self.zip_path)
        return out


def evidence_dir() -> Path:
    """Where packs go unless ``--out`` says otherwise: ``<MLSTEWARD_HOME>/evidence``."""
    return home() / "evidence"


def _check_kinds(kinds: Mapping[str, object], where: str) -> None:
    unknown = sorted(set(kinds) - set(frameworks.EVIDENCE_KINDS))
    if unknown:
        raise MlstewardError(
            f"{where} names unknown evidence kind(s) {', '.join(unknown)}; the kinds are "
            f"{', '.join(sorted(frameworks.EVIDENCE_KINDS))}"
        )


def _run_extra(root: Path, extra: Extra, pieces: Pieces) -> None:
    for kind, write in extra.items():
        rels = [safe_relative(r, f"evidence kind {kind}") for r in write(root)]
        missing = [r for r in rels if not (root / r).is_file()]
        if missing:
            raise PackError(f"evidence kind {kind} lists files it did not write: {missing}")
        if rels:
            pieces.add(kind, *rels)
        else:
            pieces.none(kind, "no material for this version")


def build_pack(
    model: str,
    version: str,
    *,
    principal: Principal,
    framework: str = DEFAULT_FRAMEWORK,
    out_dir: Path | None = None,
    extra: Extra | None = None,
) -> PackResult:
    """Collect, index, zip and record the evidence pack of ``model`` v``version``.

    Raises:
        NotFoundError: no such registered version (nothing is written).
        MlstewardError: an unknown framework or evidence kind, a broken audit trail, an
            artifact that fails its check, a pack that exists already.
    """
    started = time.perf_counter()
    model = check_model_name(model)
    version = str(version).strip().removeprefix("v")
    if not version.isdigit() and version != "champion":
        raise MlstewardError(
            f"version must be a registered version's number, like 3, or champion: {version!r}"
        )
    fw = frameworks.load_framework(framework)
    _check_kinds(extra or {}, "an extra piece")
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    created_at = created.isoformat().replace("+00:00", "Z")
    with audit_store() as store:
        if version == "champion":  # as the signed governance record says, not the alias
            version = recorded_champion(model, store)[0] or ""
            if not version:
                raise NotFoundError(f"{model} has no champion: name a version")
        subject = resolve_subject(model, version, store)
        name = f"{model}-v{subject.version}-{framework}-{created.strftime('%Y%m%dT%H%M%SZ')}"
        out = Path(out_dir) if out_dir is not None else evidence_dir()
        target, zip_target = out / name, out / f"{name}.zip"
        if target.exists() or zip_target.exists():
            raise PackError(f"{target} exists already; packs are never overwritten")
        made_out = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
        zip_tmp = out / f".{name}.zip.partial"
        try:
            pieces = Pieces()
            for collect in (
                collect_card,
                collect_lineage,
                collect_data,
                collect_validation,
                collect_approvals,
                collect_access,
                collect_monitoring,
                collect_reproduction,
                collect_artifacts,
            ):
                pieces.merge(collect(root, subject))
            audit = write_audit_evidence(
                root,
                store,
                model,
                subject.own,
                actor=principal.actor,
                reason=f"evidence pack of {model} v{subject.version}: its audit slice ends "
                "at a signed head",
            )
            for kind, rels in audit.files.items():
                pieces.add(kind, *rels)
            if audit.warning:
                pieces.warnings.append(f"audit trail: {audit.warning}")
            _run_extra(root, extra or {}, pieces)
            for kind in frameworks.EVIDENCE_KINDS:
                pieces.none(kind, "nothing in mlsteward provides it yet")
            _check_kinds(pieces.files, "a collector")
            control_map = frameworks.map_controls(fw, pieces.files)
            facts = PackFacts(
                name=name,
                model=model,
                version=subject.version,
                framework=framework,
                framework_title=fw.title,
                created_at=created_at,
                created_by={
                    k: v
                    for k, v in principal.to_dict().items()
                    if k in ("identity", "actor", "kind", "roles", "authenticated", "method")
                },
                audit=audit,
                kinds=frameworks.EVIDENCE_KINDS,
                present=pieces.files,
                absent=pieces.absent,
                warnings=pieces.warnings,
            )
            gaps = control_map.gaps
            kinds = {rel: kind for kind, rels in pieces.files.items() for rel in reversed(rels)}
            evidence = entries(root, pack_files(root), kinds)
            write_text(root, INDEX_MD, index_markdown(facts, evidence, control_map.to_markdown()))
            listed = entries(
                root, [r for r in pack_files(root) if r not in (INDEX_JSON, MANIFEST)], kinds
            )
            write_json(
                root, INDEX_JSON, index_document(facts, listed, control_map.to_dict(), len(gaps))
            )
            digest = write_manifest(root)
            files = pack_files(root)
            size = sum((root / r).stat().st_size for r in files)
            write_zip(root, zip_tmp, name)
            record = store.append(
                Action.EVIDENCE_PACKED,
                model=model,
                version=subject.version,
                actor=principal.actor,
                reason=f"evidence pack for {framework}: {len(files)} files, {len(gaps)} gap(s)",
                details={
                    "framework": framework,
                    "pack": name,
                    "pack_digest": digest,
                    "files": len(files),
                    "gaps": len(gaps),
                    "absent": sorted(pieces.absent),
                    "slice": [audit.first_seq, audit.last_seq],
                    "checkpoint_seq": audit.checkpoint.seq,
                },
            )
            os.replace(root, target)
            os.replace(zip_tmp, zip_target)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            zip_tmp.unlink(missing_ok=True)
            if made_out and not any(out.iterdir()):
                out.rmdir()
            raise
    return PackResult(
        model=model,
        version=subject.version,
        framework=framework,
        path=target,
        zip_path=zip_target,
        digest=digest,
        files=len(files),
        size_bytes=size,
        zip_bytes=zip_target.stat().st_size,
        evidence=sorted(pieces.files),
        absent=sorted(pieces.absent),
        gaps=len(gaps),
        audit_seq=record.seq,
        audit={**audit.summary(), "packed_record_seq": record.seq},
        seconds=round(time.perf_counter() - started, 2),
        warnings=list(pieces.warnings),
    )
