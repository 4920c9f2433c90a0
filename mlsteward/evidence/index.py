"""What a person and a program read first: ``INDEX.md`` and ``index.json``.

``index.json`` lists every file with its SHA-256, size and evidence kind (the manifest and the
index itself excepted: neither can hold its own digest) and carries the control map;
``INDEX.md`` says what the pack is, how to verify it, what is in it and what is not, and the
framework's controls with their gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlsteward.evidence.audit_slice import AuditEvidence
from mlsteward.evidence.manifest import FORMAT, INDEX_JSON, INDEX_MD, MANIFEST, FileEntry


@dataclass(frozen=True)
class PackFacts:
    """The facts both index files state."""

    name: str
    model: str
    version: str
    framework: str
    framework_title: str
    created_at: str
    created_by: dict[str, Any]
    audit: AuditEvidence
    kinds: Mapping[str, str]
    """Evidence kind -> what it is (the frameworks module's ``EVIDENCE_KINDS``)."""
    present: Mapping[str, Sequence[str]]
    absent: Mapping[str, str]
    warnings: Sequence[str]


def index_document(
    facts: PackFacts, files: Sequence[FileEntry], controls: dict[str, Any], gaps: int
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "pack": facts.name,
        "model": facts.model,
        "version": facts.version,
        "framework": facts.framework,
        "created_at": facts.created_at,
        "created_by": facts.created_by,
        "files": [f.to_dict() for f in files],
        "not_listed": [INDEX_JSON, MANIFEST],
        "evidence": {kind: list(rels) for kind, rels in sorted(facts.present.items())},
        "absent": dict(sorted(facts.absent.items())),
        "audit": facts.audit.summary(),
        "controls": controls,
        "gaps": gaps,
        "warnings": list(facts.warnings),
    }


def index_markdown(facts: PackFacts, files: Sequence[FileEntry], controls_md: str) -> str:
    """The person's entry: what the pack is, how to verify it, what it holds and lacks, and
    the control map's markdown (its table and gaps) one heading level down."""
    a = facts.audit
    cp = a.checkpoint
    who = facts.created_by
    verified = "authenticated" if who.get("authenticated") else "unauthenticated, single-user mode"
    out = [
        f"# Evidence pack: {facts.model} v{facts.version} ({facts.framework_title})",
        "",
        f"Everything governance recorded about version {facts.version} of the model "
        f"`{facts.model}`, gathered for an audit against **{facts.framework_title}** "
        f"(`{facts.framework}`). Packed at {facts.created_at} by `{who.get('actor')}` "
        f"({verified}).",
        "",
        "## How to verify it",
        "",
        "```",
        f"mlsteward evidence verify {facts.name}.zip        # or the folder",
        f"mlsteward evidence verify {facts.name}.zip --public-key YOUR_COPY_OF_governance.pub",
        "```",
        "",
        "It works offline from the pack alone (no MLflow, audit store, home or network) and "
        "prints one line per check:",
        "",
        f"- every file's SHA-256 against `{MANIFEST}` (which `sha256sum -c {MANIFEST}` in "
        "this folder also checks), and `index.json`'s list against the files;",
        "- the audit slice's hash chain: every full record's hash recomputed in the canonical "
        "form of `mlsteward/audit/records.py`, every `prev_hash` the hash of the record "
        "before it;",
        "- the signed checkpoint: its signature with `audit/governance.pub`, and that the "
        "slice ends at the head it signed;",
        "- the model artifact: the files in `artifacts/model/` against the signature "
        "`artifacts/signature/model.sig` (OpenSSF model-signing, also checkable with "
        "`model_signing verify key --public_key artifacts/governance.pub --signature "
        "artifacts/signature/model.sig artifacts/model`), and that the audit trail's "
        "registration record names the artifact's SHA-256.",
        "",
        f"The public keys in the pack (key id `{cp.key_id}`) prove the pack consistent, not "
        "who made it: compare that key id with the governance key your organisation "
        "publishes, or pass your own copy of the key with `--public-key`.",
        "",
        "## What is in it",
        "",
        "| evidence | what it is | files |",
        "| --- | --- | --- |",
    ]
    for kind, rels in sorted(facts.present.items()):
        shown = ", ".join(f"`{r}`" for r in rels[:6]) + (
            f" and {len(rels) - 6} more" if len(rels) > 6 else ""
        )
        out.append(f"| {kind} | {_cell(facts.kinds.get(kind, ''))} | {shown} |")
    total = sum(f.size for f in files)
    out += [
        "",
        f"{len(files)} files, {total:,} bytes; each with its SHA-256, size and kind in "
        f"`{INDEX_JSON}`.",
        "",
        "## Not in this pack",
        "",
    ]
    if facts.absent:
        out += ["| evidence | why there is none |", "| --- | --- |"]
        out += [f"| {k} | {_cell(why)} |" for k, why in sorted(facts.absent.items())]
        out += [
            "",
            "No file stands in for missing evidence: the controls that rely on these kinds "
            "are listed as gaps under Controls.",
        ]
    else:
        out.append("Every kind of evidence has material for this version.")
    out += [
        "",
        "## The audit slice",
        "",
        f"`audit/slice.jsonl` holds records {a.first_seq} to {a.last_seq} of the audit trail "
        f"({a.records} records), contiguous. It starts at the model's first record, because "
        "what the version is judged by was recorded before it existed (the ingestion of its "
        "data, the champions it was compared with). This model's records and records about "
        f"no model are in full; the {a.redacted} records about other models are redacted to "
        "`{seq, hash, prev_hash, redacted: true}`: their content is not part of this audit, "
        "but their hashes keep every link checkable (the trail's holder can show any of them "
        "by seq).",
        "",
        f"It ends at checkpoint {cp.seq} of {cp.ts}, signed by key `{cp.key_id}` "
        f"({'written for this pack' if a.fresh_checkpoint else 'the newest in the anchor'}). "
        "The pack's own `evidence_packed` record (with the pack's digest, the SHA-256 of "
        f"`{MANIFEST}`) lands after the slice's end, as does "
        f"{'the fresh checkpoint' if a.fresh_checkpoint else 'any later checkpoint'}'s "
        "`audit_checkpoint` record: the trail's next checkpoint covers them "
        "(`mlsteward audit log --action evidence_packed`). `audit/verification.json` is the "
        "check of the whole trail made when packing.",
        "",
        "## Controls",
        "",
        *(f"#{line}" if line.startswith("#") else line for line in controls_md.splitlines()),
        "",
    ]
    if facts.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in facts.warnings]
    return "\n".join(out).rstrip() + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


__all__ = ["INDEX_MD", "PackFacts", "index_document", "index_markdown"]
