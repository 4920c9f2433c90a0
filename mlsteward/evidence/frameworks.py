"""Control mappings: which evidence in a version's pack supports which control of a framework.

The mappings are data (``config/compliance/<framework>.yaml``) because the compliance team, not
the code, decides what supports a control; this module checks a file strictly enough that a
typo in an evidence kind cannot silently turn a control into a gap, and builds the index an
auditor reads: each control evidenced, partial or a gap, with the files behind it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, ValidationError

from mlsteward.config.base import StrictModel
from mlsteward.config.models import yaml_problem
from mlsteward.config.paths import config_dir
from mlsteward.errors import ConfigError

EVIDENCE_KINDS: dict[str, str] = {
    "model_card": "the model card (HTML and markdown): intended use, metrics, data, limitations",
    "lineage": "the version's lineage: data version digest, feature list, code commit, "
    "parameters, the MLflow run, OpenLineage events",
    "data_contract": "the data contract the training data passed, and the ingestion records "
    "(rows accepted, rows quarantined)",
    "validation_report": "the metric-threshold and champion-comparison gates' report on the "
    "holdout",
    "fairness_report": "the fairness gate's per-group metrics and limits",
    "explainability": "SHAP attributions (global importance and a sample) recorded at validation",
    "approvals": "every decision on the version with the identity of who made it (four eyes "
    "where configured)",
    "access_control": "who may do what (roles and permissions) and the principals who acted on "
    "the model",
    "audit_slice": "the model's records of the hash-chained audit trail (other models' records "
    "redacted to their hashes)",
    "audit_verification": "the slice's chain re-verified, and the verification result",
    "audit_checkpoint": "a signed checkpoint of the audit trail's head kept outside the store, "
    "and the public key",
    "artifact_signatures": "the model artifact's SHA-256 digests and the governance key's "
    "signature over them",
    "drift_history": "drift checks on the model's production data, with their verdicts and reports",
    "monitoring_history": "production alerts (fired, reminded, resolved), canary rollouts and "
    "rollbacks",
    "reproduction": "a rebuild of the version from its recipe compared with the registered one",
    "process_metrics": "the delivery process measured: lead times, first-pass yield of the "
    "gates, change failure rate, control charts",
}
"""What a pack can hold, by kind: the only words a mapping file may use in ``evidence``."""

FRAMEWORKS: tuple[str, ...] = ("eu-ai-act", "nist-ai-rmf", "iso-42001", "soc2", "gdpr", "hipaa")
"""The frameworks shipped in ``config/compliance/``; a team may add its own files beside them."""

Status = Literal["evidenced", "partial", "gap"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _known_kinds(kinds: list[str]) -> list[str]:
    unknown = [k for k in kinds if k not in EVIDENCE_KINDS]
    if unknown:
        raise ValueError(
            f"unknown evidence kind {', '.join(map(repr, unknown))}; "
            f"valid kinds: {', '.join(EVIDENCE_KINDS)}"
        )
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ValueError(f"evidence kind {', '.join(map(repr, twice))} listed more than once")
    return kinds


Text = Annotated[str, AfterValidator(_not_blank)]


class _ControlEntry(StrictModel):
    id: Text
    title: Text
    evidence: Annotated[list[str], AfterValidator(_known_kinds)]


class _FrameworkFile(StrictModel):
    framework: Text
    title: Text
    source: Text
    controls: list[_ControlEntry]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Framework:
    name: str
    title: str
    source: str
    path: Path
    controls: tuple[Control, ...]


def compliance_dir() -> Path:
    return config_dir() / "compliance"


def framework_names() -> list[str]:
    """Whatever mapping files are present, so a framework the team adds needs no code change."""
    d = compliance_dir()
    files = (*d.glob("*.yaml"), *d.glob("*.yml"))
    return sorted({p.stem for p in files if _NAME.fullmatch(p.stem)})


def _framework_path(name: str) -> Path:
    d = compliance_dir()
    if _NAME.fullmatch(name):  # a name is never joined to a path unchecked
        for suffix in (".yaml", ".yml"):
            if (d / f"{name}{suffix}").is_file():
                return d / f"{name}{suffix}"
    available = ", ".join(framework_names()) or "none"
    raise ConfigError(f"unknown framework {name!r}: no such file in {d} (available: {available})")


def load_framework(name: str) -> Framework:
    """One framework's mapping, checked whole: every problem is reported at once, each naming
    the file, the control (position and id) and the rule it breaks.

    Raises:
        ConfigError: no such framework (the message lists the available ones), or its file is
            not valid YAML or breaks a rule.
    """
    path = _framework_path(name)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read control mapping: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(path, exc)) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a control mapping is a YAML mapping, got {type(raw).__name__}")
    try:
        parsed = _FrameworkFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_report(path, [_problem(raw, e) for e in exc.errors()])) from exc
    problems = _cross_checks(path, parsed)
    if problems:
        raise ConfigError(_report(path, problems))
    return Framework(
        name=parsed.framework,
        title=parsed.title,
        source=parsed.source,
        path=path,
        controls=tuple(Control(c.id, c.title, tuple(c.evidence)) for c in parsed.controls),
    )


def _cross_checks(path: Path, parsed: _FrameworkFile) -> list[str]:
    problems = []
    if parsed.framework != path.stem:
        problems.append(f"framework: {parsed.framework!r} must equal the file name {path.stem!r}")
    if not parsed.controls:
        problems.append("controls: a framework maps at least one control")
    first: dict[str, int] = {}
    for i, c in enumerate(parsed.controls, start=1):
        if c.id in first:
            problems.append(f"{_where(i, c.id)}: duplicate id, already control #{first[c.id]}")
        first.setdefault(c.id, i)
    return problems


def _where(position: int, control_id: object) -> str:
    return f"control #{position} (id {control_id!r})"


def _problem(raw: dict[str, Any], error: Any) -> str:
    """A pydantic error said as where it is in the file: ``control #3 (id 'Art. 12')`` rather
    than ``controls.2``, since a person finds a control by its id."""
    loc = list(error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "string_type" and isinstance(error.get("input"), int | float):
        msg += " (quote it in the YAML)"
    if len(loc) >= 2 and loc[0] == "controls" and isinstance(loc[1], int):
        controls = raw.get("controls")
        entry = controls[loc[1]] if isinstance(controls, list) else None
        control_id = entry.get("id", "?") if isinstance(entry, dict) else "?"
        field = ".".join(str(p) for p in loc[2:]) or "<entry>"
        return f"{_where(loc[1] + 1, control_id)}: {field}: {msg}"
    return f"{'.'.join(str(p) for p in loc) or '<root>'}: {msg}"


def _report(path: Path, problems: list[str]) -> str:
    lines = [f"{path}: invalid control mapping ({len(problems)} problem(s))"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


@dataclass(frozen=True)
class ControlStatus:
    control: Control
    status: Status
    files: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.control.id

    @property
    def title(self) -> str:
        return self.control.title

    @property
    def outside_pipeline(self) -> bool:
        """A control that lists no evidence on purpose: a gap no pack can close."""
        return not self.control.evidence


@dataclass(frozen=True)
class ControlMap:
    framework: Framework
    controls: tuple[ControlStatus, ...]

    @property
    def gaps(self) -> tuple[ControlStatus, ...]:
        return tuple(c for c in self.controls if c.status != "evidenced")

    def counts(self) -> dict[str, int]:
        statuses = [c.status for c in self.controls]
        return {s: statuses.count(s) for s in ("evidenced", "partial", "gap")}

    def to_dict(self) -> dict[str, Any]:
        fw = self.framework
        return {
            "framework": fw.name,
            "title": fw.title,
            "source": fw.source,
            "counts": self.counts(),
            "controls": [
                {
                    "id": c.control.id,
                    "title": c.control.title,
                    "status": c.status,
                    "evidence": list(c.control.evidence),
                    "files": list(c.files),
                    "missing": list(c.missing),
                    "outside_pipeline": c.outside_pipeline,
                }
                for c in self.controls
            ],
        }

    def to_markdown(self) -> str:
        fw, counts = self.framework, self.counts()
        outside = sum(c.outside_pipeline for c in self.controls)
        lines = [
            f"# {_cell(fw.title)}",
            "",
            f"Framework `{fw.name}` ([official text]({fw.source})). {len(self.controls)} controls: "
            f"{counts['evidenced']} evidenced, {counts['partial']} partial, {counts['gap']} gaps "
            f"({outside} of them outside the pipeline by design). Control titles are paraphrases, "
            "not the legal text. Evidenced means the evidence is in this pack, not that the "
            "control is met.",
            "",
            "| control | title | status | evidence |",
            "| --- | --- | --- | --- |",
        ]
        for c in self.controls:
            files = ", ".join(f"`{_cell(f)}`" for f in c.files)
            if not files:
                files = "none (outside the pipeline)" if c.outside_pipeline else "none"
            lines.append(
                f"| {_cell(c.control.id)} | {_cell(c.control.title)} | {c.status} | {files} |"
            )
        lines += ["", "## Gaps", ""]
        if not self.gaps:
            lines.append("None: every control has all the evidence it lists.")
        for c in self.gaps:
            lines += _gap_lines(c)
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _gap_lines(c: ControlStatus) -> list[str]:
    head = f"- **{c.control.id}** ({c.status})"
    if c.outside_pipeline:
        return [
            f"{head}: lies outside the pipeline. Nothing a model's pack holds supports it; "
            "the organisation shows it separately."
        ]
    return [f"{head}, missing:"] + [f"  - `{k}`: {EVIDENCE_KINDS[k]}" for k in c.missing]


def map_controls(framework: Framework, present: Mapping[str, Sequence[str]]) -> ControlMap:
    """Each control's status in a pack. ``present`` maps an evidence kind to the pack-relative
    files holding it; a kind with no files counts as absent, so an empty section never passes
    for evidence.

    Raises:
        ConfigError: ``present`` names a kind outside :data:`EVIDENCE_KINDS` (a pack's kind
            that no mapping could ever match is a mistake, not a gap).
    """
    unknown = sorted(set(present) - set(EVIDENCE_KINDS))
    if unknown:
        raise ConfigError(
            f"unknown evidence kind {', '.join(map(repr, unknown))} in the pack; "
            f"valid kinds: {', '.join(EVIDENCE_KINDS)}"
        )
    statuses = []
    for control in framework.controls:
        have = [k for k in control.evidence if present.get(k)]
        missing = tuple(k for k in control.evidence if not present.get(k))
        files = tuple(dict.fromkeys(f for k in have for f in present[k]))
        status: Status
        if have and not missing:
            status = "evidenced"
        elif have:
            status = "partial"
        else:
            status = "gap"
        statuses.append(ControlStatus(control, status, files, missing))
    return ControlMap(framework, tuple(statuses))
