"""The governance report (model card): what a model is, which version serves and why.

``mlsteward report MODEL`` writes two files under ``<MLSTEWARD_HOME>/reports/``: one
self-contained HTML page (inline CSS, no scripts, nothing fetched when it is opened, so it can
be mailed, archived or attached to a ticket as is) and the same content as markdown.

Collection and rendering are separate. :func:`collect_model_card` reads the registry (versions,
aliases, ``lineage.*`` and ``test_*`` tags, the stored validation reports) and the audit trail
(decisions, approvals, promotions, rollbacks, integrity failures, drift checks and the retrain
claims they made, the chain check) into a plain :class:`ModelCard`; :func:`render_html` and
:func:`render_markdown` only format that object, so they can be tested on a hand-built card
without MLflow or a database.

Both renderers go through the same view layer (:class:`Table`, :class:`GateView` ...): the
numbers are formatted once, in one way, and the two outputs cannot drift apart. Every piece of
text that comes from a user, a tag or the audit trail is escaped (HTML autoescaping in the
template; HTML entities and escaped pipes in markdown, whose renderers pass raw HTML through).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from mlsteward.config.models import EVALUATION_METRICS, LOWER_IS_BETTER

TEMPLATE = "model_card.html.j2"
TEMPLATE_DIR = Path(__file__).parent / "templates"
MISSING = "n/a"
MINUS = "\u2212"  # typographic minus: lines up with "+" in number columns

# Audit actions (the values of ``mlsteward.audit.Action``), kept as text so that rendering a
# card never needs the audit store.
PROMOTED = "promoted"
ROLLBACK = "rollback"
DRIFT_CHECKED = "drift_checked"
DRIFT_DETECTED = "drift_detected"
RETRAIN_TRIGGERED = "retrain_triggered"
RETRAIN_SUPPRESSED = "retrain_suppressed"
DRIFT_ACTIONS = (DRIFT_CHECKED, DRIFT_DETECTED)
"""One record per drift run: ``drift_checked`` when no feature drifted, else ``drift_detected``."""
RETRAIN_ACTIONS = (RETRAIN_TRIGGERED, RETRAIN_SUPPRESSED)
"""The retrain claim a drift run makes when its policy asks for a retrain."""
ROLLOUT_STARTED = "rollout_started"
ROLLOUT_STEP_PASSED = "rollout_step_passed"
ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
ROLLOUT_COMPLETED = "rollout_completed"
ROLLOUT_ABORTED = "rollout_aborted"
ROLLOUT_ACTIONS = (
    ROLLOUT_STARTED,
    ROLLOUT_STEP_PASSED,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_COMPLETED,
    ROLLOUT_ABORTED,
)
"""The records of one canary rollout (``flows/rollout.py``), tied by ``details.rollout_id``."""
ROLLOUT_ENDS = (ROLLOUT_ROLLED_BACK, ROLLOUT_COMPLETED, ROLLOUT_ABORTED)
VERSION_ACTIONS = (
    "version_registered",
    "validation_passed",
    "validation_failed",
    "approval_requested",
    "approval_granted",
    "approval_rejected",
    "approval_timed_out",
    PROMOTED,
    "promotion_refused",
    ROLLBACK,
    "integrity_failed",
    "reproduced",
    "reproduction_refused",
    ROLLOUT_STARTED,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_COMPLETED,
    ROLLOUT_ABORTED,
    "rollout_refused",
)
"""Events shown in a version's history."""

TIMELINE_ACTIONS = (
    "approval_requested",
    "approval_granted",
    "approval_rejected",
    "approval_timed_out",
    PROMOTED,
    ROLLBACK,
    "promotion_refused",
    "integrity_failed",
)
"""Events shown in the model's timeline: every change of who serves, and why."""

EVENT_LABELS = {
    "version_registered": "Registered",
    "validation_passed": "Validation passed",
    "validation_failed": "Validation failed",
    "approval_requested": "Approval requested",
    "approval_granted": "Approval granted",
    "approval_rejected": "Approval rejected",
    "approval_timed_out": "Approval timed out",
    PROMOTED: "Promoted",
    "promotion_refused": "Promotion refused",
    ROLLBACK: "Rolled back",
    "integrity_failed": "Integrity check failed",
    "alias_changed": "Alias changed",
    DRIFT_CHECKED: "Drift checked: no drift",
    DRIFT_DETECTED: "Drift detected",
    RETRAIN_TRIGGERED: "Retrain triggered",
    RETRAIN_SUPPRESSED: "Retrain suppressed",
    "reproduced": "Reproduced",
    "reproduction_refused": "Reproduction refused",
    "snapshots_collected": "Snapshots collected",
    ROLLOUT_STARTED: "Rollout started",
    ROLLOUT_STEP_PASSED: "Rollout step passed",
    ROLLOUT_ROLLED_BACK: "Rollout rolled back",
    ROLLOUT_COMPLETED: "Rollout completed",
    ROLLOUT_ABORTED: "Rollout aborted",
    "rollout_refused": "Rollout refused",
}
EVENT_TONE = {
    "version_registered": "info",
    "validation_passed": "ok",
    "validation_failed": "bad",
    "approval_requested": "info",
    "approval_granted": "ok",
    "approval_rejected": "bad",
    "approval_timed_out": "bad",
    PROMOTED: "ok",
    "promotion_refused": "warn",
    ROLLBACK: "warn",
    "integrity_failed": "bad",
    DRIFT_CHECKED: "ok",
    DRIFT_DETECTED: "warn",
    RETRAIN_TRIGGERED: "info",
    RETRAIN_SUPPRESSED: "warn",
    "reproduced": "info",
    "reproduction_refused": "warn",
    ROLLOUT_STARTED: "info",
    ROLLOUT_STEP_PASSED: "ok",
    ROLLOUT_ROLLED_BACK: "bad",
    ROLLOUT_COMPLETED: "ok",
    ROLLOUT_ABORTED: "warn",
    "rollout_refused": "warn",
}
GATE_TITLES = {
    "metric_thresholds": "Metric thresholds",
    "fairness": "Fairness",
    "champion_comparison": "Champion comparison",
}
MAX_TIMELINE = 200
MAX_DRIFT_ROWS = 50
"""Drift checks shown (newest first): a model checked hourly would otherwise bury the card."""
MAX_ROLLOUT_ROWS = 50
"""Rollouts shown (newest first)."""


# --------------------------------------------------------------------------------------------
# The card
# --------------------------------------------------------------------------------------------


@dataclass
class AuditEvent:
    """One audit record, as the card shows it."""

    seq: int
    ts: str
    action: str
    version: str | None
    actor: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: Any) -> AuditEvent:
        d = rec if isinstance(rec, dict) else rec.to_dict()
        return cls(
            seq=int(d["seq"]),
            ts=str(d["ts"]),
            action=str(getattr(d["action"], "value", d["action"])),
            version=None if d.get("version") is None else str(d["version"]),
            actor=str(d.get("actor") or ""),
            reason=str(d.get("reason") or ""),
            details=dict(d.get("details") or {}),
        )


@dataclass
class DriftCheck:
    """One drift check of the audit trail and the retrain claim that answered it.

    Read leniently from the record's ``details`` (see ``tasks.monitoring.record_drift``): a
    record written before a key existed still shows, with that fact as unknown.

    Attributes:
        version: The champion version the current window was compared with.
        drifted_columns: Empty when nothing drifted; None when the record does not say.
        retrain: The drift policy's decision; None when the record carries none.
        reasons: One per policy rule that fired.
        report: Path of the Evidently HTML report written by the drift run.
        sampling: ``DriftResult.sampling`` as recorded: which sides were compared on a sample
            of how many rows (empty when every row was compared, or not recorded).
        outcome: The ``retrain_triggered`` or ``retrain_suppressed`` record of this check, or
            None (no retrain was asked for, or no claim was recorded).
    """

    seq: int
    ts: str
    version: str | None
    actor: str
    reason: str
    drifted_columns: list[str] | None
    drift_share: float | None
    prediction_drift: bool | None
    retrain: bool | None
    reasons: list[str] = field(default_factory=list)
    report: str | None = None
    rows: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    outcome: AuditEvent | None = None

    @classmethod
    def from_event(cls, e: AuditEvent) -> DriftCheck:
        d = e.details
        decision = d.get("decision") if isinstance(d.get("decision"), dict) else {}
        columns = d.get("drifted_columns")
        if isinstance(columns, list):
            drifted: list[str] | None = [str(c) for c in columns]
        else:  # "drift_checked" means no column drifted, whatever the details say
            drifted = [] if e.action == DRIFT_CHECKED else None
        reasons = decision.get("reasons")
        retrain = decision.get("retrain")
        prediction = d.get("prediction_drift")
        report = d.get("report")
        return cls(
            seq=e.seq,
            ts=e.ts,
            version=e.version,
            actor=e.actor,
            reason=e.reason,
            drifted_columns=drifted,
            drift_share=_float(d.get("dataset_drift_share")),
            prediction_drift=prediction if isinstance(prediction, bool) else None,
            retrain=retrain if isinstance(retrain, bool) else None,
            reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [],
            report=None if report in (None, "") else str(report),
            rows=dict(d["rows"]) if isinstance(d.get("rows"), dict) else {},
            sampling=dict(d["sampling"]) if isinstance(d.get("sampling"), dict) else {},
        )

    @property
    def outcome_label(self) -> str | None:
        """``triggered`` or ``suppressed``, or None without a retrain claim."""
        if self.outcome is None:
            return None
        return "triggered" if self.outcome.action == RETRAIN_TRIGGERED else "suppressed"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``mlsteward report --json``."""
        o = self.outcome
        return {
            "seq": self.seq,
            "ts": self.ts,
            "version": self.version,
            "actor": self.actor,
            "reason": self.reason,
            "drifted_columns": self.drifted_columns,
            "dataset_drift_share": self.drift_share,
            "prediction_drift": self.prediction_drift,
            "retrain": self.retrain,
            "reasons": list(self.reasons),
            "report": self.report,
            "rows": dict(self.rows),
            "sampling": dict(self.sampling),
            "retrain_outcome": None
            if o is None
            else {
                "outcome": self.outcome_label,
                "seq": o.seq,
                "ts": o.ts,
                "actor": o.actor,
                "reason": o.reason,
            },
        }


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class AuditStatus:
    """The hash-chain check (``AuditStore.verify()``); ``ok`` is None when it could not run."""

    ok: bool | None
    records: int = 0
    head_hash: str | None = None
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass
class VersionSection:
    """Everything the card says about one version.

    Attributes:
        roles: ``champion``, ``challenger``, ``latest`` and/or ``former champion``.
        lineage: From :func:`lineage_from_tags` (``None`` where a fact was not recorded).
        metrics: Holdout metrics from the ``test_*`` tags.
        validation: The stored ``ValidationReport.to_dict()``, or None.
        validation_error: Why a recorded report could not be read.
        history: The version's audit events, oldest first.
    """

    version: str
    roles: list[str]
    lifecycle: str
    validation_status: str | None
    run_id: str = ""
    created_at: str | None = None
    promoted_at: str | None = None
    promoted_by: str | None = None
    retired_at: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    validation_uri: str | None = None
    validation_error: str | None = None
    history: list[AuditEvent] = field(default_factory=list)


@dataclass
class ModelCard:
    """The governance report of one model, as plain data.

    Attributes:
        champion / challenger: Version dicts (``governance.status`` shape: version, lifecycle,
            validation_status, run_id, artifact_sha256, created_at_ms, metrics, promoted_at).
        versions: One summary dict per registered version (version, lifecycle,
            validation_status, created_at, metrics, artifact_sha256), oldest first.
        sections: Champion, challenger, the newest version and every former champion, in
            that order.
        champion_history: Every change of the champion alias (``governance.champion_history``).
        timeline: Promotions, rollbacks, approvals, refusals and integrity failures.
        drift: Every drift check, newest first, each with the retrain claim that answered it
            (:func:`drift_history`); the renderers show the newest :data:`MAX_DRIFT_ROWS`.
        rollouts: Every canary rollout, newest first (:func:`rollout_history`); the renderers
            show the newest :data:`MAX_ROLLOUT_ROWS`.
        warnings: What could not be collected (the card is still written).
    """

    model: str
    description: str
    owner: str
    generated_at: str
    champion: dict[str, Any] | None
    challenger: dict[str, Any] | None
    primary_metric: str = "roc_auc"
    previous_champion: str | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)
    sections: list[VersionSection] = field(default_factory=list)
    champion_history: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[AuditEvent] = field(default_factory=list)
    drift: list[DriftCheck] = field(default_factory=list)
    rollouts: list[RolloutRun] = field(default_factory=list)
    audit: AuditStatus = field(default_factory=lambda: AuditStatus(ok=None))
    warnings: list[str] = field(default_factory=list)

    @property
    def champion_version(self) -> str | None:
        return None if self.champion is None else str(self.champion["version"])

    @property
    def challenger_version(self) -> str | None:
        return None if self.challenger is None else str(self.challenger["version"])


# --------------------------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------------------------


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def lineage_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The ``lineage.*`` tags (see :meth:`mlsteward.training.lineage.Lineage.to_tags`) as typed
    values."""

    def get(key: str) -> Any:
        return _loads(tags.get(f"lineage.{key}"))

    def text(key: str) -> str | None:
        return tags.get(f"lineage.{key}")

    libraries = {
        k.removeprefix("lineage.lib."): v for k, v in tags.items() if k.startswith("lineage.lib.")
    }
    return {
        "data_digest": text("data_digest"),
        "snapshot": text("data_path"),
        "data_source": text("data_source"),
        "feature_service": text("feature_service"),
        "features": get("features"),
        "training_rows": get("training_rows"),
        "time_range": (text("time_range_start"), text("time_range_end")),
        "split_sizes": get("split_sizes"),
        "params": get("best_params"),
        "seed": get("seed"),
        "max_evals": get("max_evals"),
        "execution": get("tuning_execution"),
        "git_commit": text("git_commit"),
        "git_dirty": text("git_dirty"),
        "lock_sha256": text("lock_sha256"),
        "config_sha256": text("config_sha256"),
        "libraries": dict(sorted(libraries.items())),
        "artifact_sha256": tags.get("model_artifact_sha256"),
        "training_set_digest": text("training_set_digest"),
        "recipe_sha256": text("recipe_sha256"),
        "reproduction": (
            f"{tags['reproduce_result']} ({tags.get('reproduce_mode', '?')}, "
            f"{tags.get('reproduced_at', '?')})"
            if "reproduce_result" in tags
            else None
        ),
    }


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in tags.items():
        if key.startswith("test_"):
            try:
                out[key.removeprefix("test_")] = float(value)
            except ValueError:
                continue
    return out


_RUNS_URI = re.compile(r"^runs:/([^/]+)/(.+)$")


def _download_validation(uri: str) -> dict[str, Any]:
    from mlsteward.governance import registry

    match = _RUNS_URI.match(uri)
    if not match:
        raise ValueError(f"not a runs:/ URI: {uri}")
    run_id, path = match.groups()
    with tempfile.TemporaryDirectory(prefix="mlsteward-report-") as d:
        local = registry.download_run_file(run_id, path, Path(d))
        return json.loads(local.read_text())


def _iso_ms(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _section(info: Any, roles: list[str], events: list[AuditEvent], warnings: list[str]) -> Any:
    tags = dict(info.tags)
    uri = tags.get("validation_report")
    validation, error = None, None
    if uri:
        try:
            validation = _download_validation(uri)
        except Exception as exc:  # a missing artifact must not stop the report
            error = f"{type(exc).__name__}: {exc}"
            warnings.append(f"v{info.version}: validation report {uri} could not be read ({error})")
    return VersionSection(
        version=str(info.version),
        roles=roles,
        lifecycle=tags.get("lifecycle", "candidate"),
        validation_status=tags.get("validation_status"),
        run_id=info.run_id,
        created_at=_iso_ms(info.created_at_ms),
        promoted_at=tags.get("promoted_at"),
        promoted_by=tags.get("promoted_by"),
        retired_at=tags.get("retired_at"),
        lineage=lineage_from_tags(tags),
        metrics=metrics_from_tags(tags),
        validation=validation,
        validation_uri=uri,
        validation_error=error,
        history=[
            e for e in events if e.version == str(info.version) and e.action in VERSION_ACTIONS
        ],
    )


def drift_history(events: list[AuditEvent]) -> list[DriftCheck]:
    """The drift checks among ``events``, newest first, each paired with its retrain claim.

    The claim is recorded right after its check by the same drift run, but two runs of one
    model can interleave (check A, check B, claim A, claim B). So a claim goes to the check
    whose Evidently report it names, and only failing that to the latest earlier check that
    asked for a retrain and is still unanswered. A claim with no such check is left out.
    """
    checks: list[DriftCheck] = []
    by_report: dict[str, DriftCheck] = {}
    waiting: list[DriftCheck] = []  # checks that may still get a claim, oldest first
    for e in sorted(events, key=lambda e: e.seq):
        if e.action in DRIFT_ACTIONS:
            check = DriftCheck.from_event(e)
            checks.append(check)
            if check.report:
                by_report[check.report] = check
            if check.retrain is not False:
                waiting.append(check)
        elif e.action in RETRAIN_ACTIONS:
            named = e.details.get("report")
            match = by_report.pop(str(named), None) if named else None
            while match is None and waiting:
                candidate = waiting.pop()
                if candidate.outcome is None:
                    match = candidate
            if match is not None:
                match.outcome = e
                if match.report:
                    by_report.pop(match.report, None)
    checks.reverse()
    return checks


@dataclass
class RolloutRun:
    """One canary rollout, put together from its audit records (``details.rollout_id``).

    Read leniently: a rollout whose start record is missing still shows from its other
    records, and one without an end record is shown as ``running`` (in progress, or its run
    died without cleaning up).

    Attributes:
        decision: ``promoted`` or ``rejected`` (all steps passed, then the promotion policy
            decided), ``rolled_back`` (a guardrail breached, or the service did not load the
            challenger), ``aborted`` (too little traffic, an error or a cancellation) or
            ``running``.
        steps_reached: The step the rollout was at when it ended (all of them if completed).
        breaches: The breached checks: ``{"check", "message", "observed", "limit"}``.
    """

    rollout_id: str
    version: str | None
    champion: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    actor: str = ""
    planned_steps: list[float] = field(default_factory=list)
    steps_passed: list[int] = field(default_factory=list)
    steps_reached: int = 0
    decision: str = "running"
    reason: str = ""
    breaches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def breach(self) -> str | None:
        """The breached guardrails' names, comma-separated; None without a breach."""
        return ", ".join(str(b.get("check", "?")) for b in self.breaches) or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "version": self.version,
            "champion": self.champion,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "actor": self.actor,
            "planned_steps": list(self.planned_steps),
            "steps_passed": list(self.steps_passed),
            "steps_reached": self.steps_reached,
            "decision": self.decision,
            "reason": self.reason,
            "breaches": [dict(b) for b in self.breaches],
        }


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def rollout_history(events: list[AuditEvent]) -> list[RolloutRun]:
    """The canary rollouts among ``events``, newest first."""
    runs: dict[str, RolloutRun] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.action not in ROLLOUT_ACTIONS:
            continue
        d = e.details
        rid = d.get("rollout_id")
        if not rid:
            continue
        run = runs.setdefault(str(rid), RolloutRun(rollout_id=str(rid), version=e.version))
        run.version = run.version or e.version
        if d.get("champion") is not None:
            run.champion = str(d["champion"])
        step = _int(d.get("step"))
        if e.action == ROLLOUT_STARTED:
            run.started_at, run.actor = e.ts, e.actor
            steps = (d.get("config") or {}).get("rollout", {}).get("steps")
            if isinstance(steps, list):
                run.planned_steps = [float(x) for x in steps if _float(x) is not None]
            continue
        if e.action == ROLLOUT_STEP_PASSED:
            if step is not None:
                run.steps_passed.append(step)
                run.steps_reached = max(run.steps_reached, step)
            continue
        # an end record
        run.ended_at, run.reason = e.ts, e.reason
        run.actor = run.actor or e.actor
        if e.action == ROLLOUT_ROLLED_BACK:
            run.decision = "rolled_back"
            breaches = d.get("breaches")
            run.breaches = [b for b in breaches if isinstance(b, dict)] if breaches else []
        elif e.action == ROLLOUT_ABORTED:
            run.decision = "aborted"
        else:
            run.decision = str(d.get("decision") or "completed")
            if run.planned_steps:
                step = len(run.planned_steps)
        run.steps_reached = max(run.steps_reached, step or 0)
    return list(runs.values())[::-1]  # first records in seq order, so newest first


def collect_model_card(model: str) -> ModelCard:
    """Read the registry and the audit trail into a :class:`ModelCard`.

    Raises:
        NotFoundError: the model has neither a configuration nor a registered version.
    """
    from mlsteward.audit import audit_store
    from mlsteward.config.models import get_model_config
    from mlsteward.errors import MlstewardError, NotFoundError
    from mlsteward.governance import promotion as governance
    from mlsteward.governance import registry

    warnings: list[str] = []
    description, owner, primary = "", "unknown", "roc_auc"
    try:
        cfg = get_model_config(model)
        description, owner, primary = cfg.description, cfg.owner, cfg.promotion.primary_metric
    except MlstewardError as exc:
        cfg = None
        warnings.append(f"model configuration not available: {exc}")

    infos = {v.version: v for v in registry.list_versions(model)}
    if cfg is None and not infos:
        raise NotFoundError(f"{model}: no model configuration and no registered version")

    store = audit_store()
    try:
        events = [AuditEvent.from_record(r) for r in store.query(model=model)]
        history = governance.champion_history(model, store)
        status = governance.status(model, store=store)
        try:
            result = store.verify()
            audit = AuditStatus(
                ok=bool(result.ok),
                records=int(result.records),
                head_hash=result.head_hash,
                first_bad_seq=getattr(result, "first_bad_seq", None),
                problem=result.problem,
            )
        except Exception as exc:  # report what could not be checked instead of failing
            audit = AuditStatus(ok=None, problem=f"{type(exc).__name__}: {exc}")
            warnings.append(f"audit chain could not be verified: {exc}")
    finally:
        store.close()

    champion, challenger = status["champion"], status["challenger"]
    roles: dict[str, list[str]] = {}
    if champion:
        roles.setdefault(str(champion["version"]), []).append("champion")
    if challenger:
        roles.setdefault(str(challenger["version"]), []).append("challenger")
    if infos:  # the newest version, so a rejected retrain and its reasons are visible too
        latest = max(infos, key=_version_key)
        if latest not in roles:
            roles[latest] = ["latest"]
    former = {str(v) for h in history for v in (h.get("from"), h.get("to")) if v is not None}
    for v in sorted(former - set(roles), key=_version_key, reverse=True):
        roles[v] = ["former champion"]

    sections = []
    for v, r in roles.items():
        info = infos.get(v)
        if info is None:
            warnings.append(f"v{v} appears in the audit trail but is not in the registry")
            continue
        sections.append(_section(info, r, events, warnings))

    versions = [
        {
            "version": info.version,
            "lifecycle": info.lifecycle,
            "validation_status": info.validation_status,
            "aliases": list(info.aliases),
            "created_at": _iso_ms(info.created_at_ms),
            "metrics": metrics_from_tags(info.tags),
            "artifact_sha256": info.artifact_sha256,
        }
        for info in infos.values()
    ]
    timeline = [e for e in events if e.action in TIMELINE_ACTIONS]
    if len(timeline) > MAX_TIMELINE:
        warnings.append(f"timeline shortened to the latest {MAX_TIMELINE} of {len(timeline)}")
        timeline = timeline[-MAX_TIMELINE:]
    return ModelCard(
        model=model,
        description=description,
        owner=owner,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        champion=champion,
        challenger=challenger,
        primary_metric=primary,
        previous_champion=status.get("previous_champion"),
        versions=versions,
        sections=sections,
        champion_history=history,
        timeline=timeline,
        drift=drift_history(events),
        rollouts=rollout_history(events),
        audit=audit,
        warnings=warnings,
    )


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if str(v).isdigit() else (-1, str(v))


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt_num(x: Any, digits: int = 4) -> str:
    """Metrics and rates with fixed decimals, counts with thousands separators, None as n/a."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return MISSING if math.isnan(f) else ("∞" if f > 0 else MINUS + "∞")
    if f == 0:
        return "0"
    if abs(f) >= 10_000:
        return f"{f:,.0f}"
    if abs(f) < 10 ** -(digits - 1):
        return f"{f:.2e}"
    return f"{f:.{digits}f}"


def fmt_delta(x: Any, digits: int = 4) -> str:
    if x is None:
        return MISSING
    f = float(x)
    if not math.isfinite(f):
        return fmt_num(f)
    if f == 0:
        return f"{0:.{digits}f}"
    return f"{f:+.{digits}f}".replace("-", MINUS)


def fmt_ts(value: str | None) -> str:
    """``2025-01-31T14:05:09.123456Z`` → ``2025-01-31 14:05:09 UTC``."""
    if not value:
        return MISSING
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def short(digest: str | None, n: int = 12) -> str:
    if not digest:
        return MISSING
    return digest if len(digest) <= n + 1 or digest == "unknown" else digest[:n] + "…"


def _text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or MISSING
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or MISSING
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return fmt_num(value) if isinstance(value, (int, bool)) else str(value)


# --------------------------------------------------------------------------------------------
# The view layer both renderers use
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One table cell: text plus a style (``num``, ``ok``, ``bad``, ``warn``, ``muted``,
    ``code``, ``key``; several separated by spaces)."""

    text: str
    style: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    row_styles: list[str] = field(default_factory=list)
    title: str = ""
    note: str = ""
    kind: str = ""  # "kv" for two-column key/value tables

    def row_style(self, i: int) -> str:
        return self.row_styles[i] if i < len(self.row_styles) else ""


@dataclass
class GateView:
    name: str
    title: str
    passed: bool
    note: str
    violations: list[dict[str, Any]]
    tables: list[Table]


@dataclass
class ReportView:
    verdict: str
    passed: bool
    created_at: str
    overview: Table
    gates: list[GateView]


@dataclass
class TimelineItem:
    ts: str
    title: str
    tone: str
    actor: str
    reason: str
    extra: str = ""


def _status_cell(passed: Any) -> Cell:
    if passed is None:
        return Cell("reported", "muted")
    return Cell("pass", "ok") if passed else Cell("FAIL", "bad")


def _ordered_metrics(names: Any) -> list[str]:
    names = set(names)
    known = [m for m in EVALUATION_METRICS if m in names]
    return known + sorted(names - set(known))


def summary_table(card: ModelCard) -> Table:
    champ, chall = card.champion, card.challenger
    rows: list[list[Cell]] = [
        [Cell("Model", "key"), Cell(card.model, "code")],
        [Cell("Owner", "key"), Cell(card.owner or MISSING)],
        [Cell("Description", "key"), Cell(card.description or MISSING)],
    ]
    if champ:
        when = fmt_ts(champ.get("promoted_at"))
        rows.append([Cell("Champion", "key"), Cell(f"v{champ['version']} (promoted {when})")])
    else:
        rows.append([Cell("Champion", "key"), Cell("none: no version serves yet", "warn")])
    if chall:
        state = chall.get("validation_status") or "not validated"
        rows.append([Cell("Challenger", "key"), Cell(f"v{chall['version']} (validation {state})")])
    else:
        rows.append([Cell("Challenger", "key"), Cell("none", "muted")])
    rows.append(
        [
            Cell("Previous champion", "key"),
            Cell(f"v{card.previous_champion}" if card.previous_champion else "none", ""),
        ]
    )
    rows.append([Cell("Registered versions", "key"), Cell(fmt_num(len(card.versions)), "")])
    rows.append([Cell("Primary metric", "key"), Cell(card.primary_metric, "code")])
    rows.append(
        [
            Cell("Champion changes", "key"),
            Cell(
                f"{sum(h['action'] == PROMOTED for h in card.champion_history)} promotion(s), "
                f"{sum(h['action'] == ROLLBACK for h in card.champion_history)} rollback(s)"
            ),
        ]
    )
    rows.append([Cell("Audit chain", "key"), _audit_cell(card.audit)])
    rows.append([Cell("Generated", "key"), Cell(fmt_ts(card.generated_at))])
    return Table(["", ""], rows, kind="kv")


def _audit_cell(a: AuditStatus) -> Cell:
    if a.ok is None:
        return Cell(f"not verified: {a.problem or 'unknown reason'}", "warn")
    if a.ok:
        return Cell(f"intact ({fmt_num(a.records)} records)", "ok")
    return Cell(f"BROKEN: {a.problem or 'unknown problem'}", "bad")


def versions_table(card: ModelCard) -> Table:
    p = card.primary_metric
    rows, styles = [], []
    for v in sorted(card.versions, key=lambda d: _version_key(str(d["version"])), reverse=True):
        ver = str(v["version"])
        role = (
            "champion"
            if ver == card.champion_version
            else "challenger"
            if ver == card.challenger_version
            else ""
        )
        status = v.get("validation_status")
        rows.append(
            [
                Cell(f"v{ver}", "key"),
                Cell(role or "—", "" if role else "muted"),
                Cell(v.get("lifecycle") or "candidate"),
                Cell(status or "not validated", _tone(status)),
                Cell(fmt_num((v.get("metrics") or {}).get(p)), "num"),
                Cell(fmt_ts(v.get("created_at"))),
                Cell(short(v.get("artifact_sha256")), "code"),
            ]
        )
        styles.append("hl" if role == "champion" else "")
    return Table(
        ["version", "alias", "lifecycle", "validation", p, "registered", "artifact SHA-256"],
        rows,
        styles,
    )


def _tone(status: str | None) -> str:
    return {"passed": "ok", "failed": "bad"}.get(status or "", "muted")


def metrics_table(card: ModelCard) -> Table | None:
    """Champion vs challenger on every holdout metric either reports."""
    sides = [
        (f"champion v{d['version']}", d.get("metrics") or {})
        for d in (card.champion,)
        if d is not None
    ] + [
        (f"challenger v{d['version']}", d.get("metrics") or {})
        for d in (card.challenger,)
        if d is not None
    ]
    if not sides:
        return None
    both = len(sides) == 2
    names = _ordered_metrics(k for _, m in sides for k in m)
    rows, styles = [], []
    for m in names:
        row = [Cell(m + (" (primary)" if m == card.primary_metric else ""), "key")]
        values = [m_.get(m) for _, m_ in sides]
        row += [Cell(fmt_num(v), "num") for v in values]
        if both:
            a, b = values[1], values[0]
            if a is None or b is None:
                row.append(Cell(MISSING, "num muted"))
            else:
                d = a - b
                better = (d < 0) if m in LOWER_IS_BETTER else (d > 0)
                tone = "muted" if d == 0 else ("ok" if better else "bad")
                row.append(Cell(fmt_delta(d), f"num {tone}".strip()))
        rows.append(row)
        styles.append("hl" if m == card.primary_metric else "")
    header = ["metric", *[name for name, _ in sides]] + (
        [f"Δ challenger {MINUS} champion"] if both else []
    )
    note = "log_loss and brier: lower is better; every other metric: higher is better."
    return Table(header, rows, styles, note=note)


def section_metrics_table(section: VersionSection) -> Table | None:
    if not section.metrics:
        return None
    names = _ordered_metrics(section.metrics)
    return Table(names, [[Cell(fmt_num(section.metrics[m]), "num") for m in names]])


def lineage_table(section: VersionSection) -> Table:
    lin = section.lineage
    start, end = lin.get("time_range") or (None, None)
    dirty = lin.get("git_dirty")
    commit = lin.get("git_commit") or MISSING
    commit_text = commit + (" (uncommitted changes)" if dirty == "true" else "")
    repro = lin.get("reproduction")
    repro_tone = "" if not repro else ("ok" if repro.startswith("identical") else "bad")
    rows = [
        ("Data digest", Cell(lin.get("data_digest") or MISSING, "code")),
        ("Snapshot", Cell(_text(lin.get("snapshot")), "code")),
        ("Data source", Cell(_text(lin.get("data_source")), "code")),
        ("Feature service", Cell(_text(lin.get("feature_service")), "code")),
        ("Features", Cell(_text(lin.get("features")))),
        ("Training rows", Cell(fmt_num(lin.get("training_rows")))),
        ("Split sizes", Cell(_text(lin.get("split_sizes")))),
        ("Time range", Cell(f"{fmt_ts(start)} → {fmt_ts(end)}" if start or end else MISSING)),
        ("Hyperparameters", Cell(_text(lin.get("params")), "code")),
        ("Seed / max evals", Cell(f"{_text(lin.get('seed'))} / {_text(lin.get('max_evals'))}")),
        ("Training execution", Cell(execution_text(lin.get("execution")))),
        ("Git commit", Cell(commit_text, "code" + (" warn" if dirty == "true" else ""))),
        ("uv.lock SHA-256", Cell(lin.get("lock_sha256") or MISSING, "code")),
        ("Config SHA-256", Cell(lin.get("config_sha256") or MISSING, "code")),
        ("Libraries", Cell(_text(lin.get("libraries")), "code")),
        ("Artifact SHA-256", Cell(lin.get("artifact_sha256") or MISSING, "code")),
        ("Training-set digest", Cell(lin.get("training_set_digest") or MISSING, "code")),
        ("Recipe SHA-256", Cell(lin.get("recipe_sha256") or MISSING, "code")),
        ("Last reproduction", Cell(repro or "never", repro_tone)),
        ("MLflow run", Cell(section.run_id or MISSING, "code")),
    ]
    return Table(["", ""], [[Cell(k, "key"), c] for k, c in rows], kind="kv")


def execution_text(execution: Any) -> str:
    """Where the search and the refit ran, in words; the parts that change the result (batch
    size, and for xgboost.dask the worker count and chunking) are the ones named."""
    if not isinstance(execution, dict):
        return MISSING
    runner = execution.get("runner", "?")
    text = f"{runner}, TPE batches of {execution.get('batch_size', 1)}"
    dist = execution.get("distributed")
    if isinstance(dist, dict):
        text += (
            f"; {dist.get('engine')} on {dist.get('workers')} worker slots, "
            f"{dist.get('partitions')} partitions from chunks of {fmt_num(dist.get('chunk_rows'))} "
            "rows"
        )
    return text


def history_table(events: list[AuditEvent]) -> Table:
    rows, styles = [], []
    for e in events:
        rows.append(
            [
                Cell(fmt_ts(e.ts)),
                Cell(EVENT_LABELS.get(e.action, e.action), EVENT_TONE.get(e.action, "")),
                Cell(e.actor or MISSING),
                Cell(e.reason or MISSING),
                Cell(f"#{e.seq}", "num muted"),
            ]
        )
        styles.append("")
    return Table(["when", "event", "who", "why", "audit"], rows, styles)


def _fairness_tables(details: dict[str, Any]) -> list[Table]:
    tables = []
    min_size = details.get("min_group_size")
    for attr, a in (details.get("attributes") or {}).items():
        limits = a.get("limits") or {}
        checks = a.get("checks") or {}
        metric_rows, metric_styles = [], []
        for m, v in (a.get("metrics") or {}).items():
            passed = checks.get(m)
            metric_rows.append(
                [
                    Cell(m, "key"),
                    Cell(fmt_num(v), "num"),
                    Cell(fmt_num((limits.get(m) or {}).get("min")), "num muted"),
                    Cell(fmt_num((limits.get(m) or {}).get("max")), "num muted"),
                    _status_cell(passed),
                ]
            )
            metric_styles.append("fail" if passed is False else "")
        tables.append(
            Table(
                ["metric", "value", "min", "max", "result"],
                metric_rows,
                metric_styles,
                title=f"Attribute: {attr}",
                note=a.get("note") or "",
            )
        )
        group_rows, group_styles = [], []
        for g in a.get("groups") or []:
            gated = g.get("gated", True)
            group_rows.append(
                [
                    Cell(str(g.get("group")), "key"),
                    Cell(fmt_num(g.get("size")), "num"),
                    Cell(fmt_num(g.get("positives")), "num"),
                    Cell(fmt_num(g.get("selection_rate")), "num"),
                    Cell(fmt_num(g.get("tpr")), "num"),
                    Cell(fmt_num(g.get("fpr")), "num"),
                    Cell(fmt_num(g.get("roc_auc")), "num"),
                    Cell("yes", "ok") if gated else Cell("no: small group", "warn"),
                ]
            )
            group_styles.append("" if gated else "small")
        if group_rows:
            note = (
                f"In metrics: groups of at least {fmt_num(min_size)} rows enter the "
                "fairness metrics; smaller ones are only reported."
                if min_size is not None
                else ""
            )
            tables.append(
                Table(
                    [
                        "group",
                        "n",
                        "positives",
                        "selection rate",
                        "TPR",
                        "FPR",
                        "ROC-AUC",
                        "in metrics",
                    ],
                    group_rows,
                    group_styles,
                    title=f"Groups of {attr}",
                    note=note,
                )
            )
    return tables


def _threshold_tables(details: dict[str, Any]) -> list[Table]:
    checks = details.get("checks") or {}
    tables = []
    if checks:
        rows, styles = [], []
        for m, c in checks.items():
            rows.append(
                [
                    Cell(m, "key"),
                    Cell(fmt_num(c.get("value")), "num"),
                    Cell(fmt_num(c.get("min")), "num muted"),
                    Cell(fmt_num(c.get("max")), "num muted"),
                    _status_cell(c.get("passed")),
                ]
            )
            styles.append("fail" if c.get("passed") is False else "")
        tables.append(Table(["metric", "value", "min", "max", "result"], rows, styles))
    return tables


def _comparison_tables(details: dict[str, Any]) -> list[Table]:
    tables = []
    p = details.get("primary") or {}
    champ = details.get("champion_version")
    if p and champ is not None:
        tables.append(
            Table(
                ["primary metric", "challenger", f"champion v{champ}", "improvement", "needed"],
                [
                    [
                        Cell(str(p.get("metric")), "key"),
                        Cell(fmt_num(p.get("challenger")), "num"),
                        Cell(fmt_num(p.get("champion")), "num"),
                        Cell(fmt_delta(p.get("improvement")), "num"),
                        Cell(
                            f"{'> 0' if not p.get('min_delta') else '≥ ' + fmt_num(p['min_delta'])}"
                            f" ({p.get('delta_mode', 'absolute')}, {p.get('direction', '')})"
                        ),
                    ]
                ],
                ["fail" if p.get("passed") is False else ""],
            )
        )
    fair = details.get("fairness") or {}
    rows, styles = [], []
    for attr, per in fair.items():
        for m, v in per.items():
            rows.append(
                [
                    Cell(attr, "key"),
                    Cell(m),
                    Cell(fmt_num(v.get("challenger")), "num"),
                    Cell(fmt_num(v.get("champion")), "num"),
                    Cell(fmt_delta(v.get("worsening")), "num"),
                    _status_cell(v.get("passed")),
                ]
            )
            styles.append("fail" if v.get("passed") is False else "")
    if rows:
        tol = details.get("fairness_tolerance")
        tables.append(
            Table(
                ["attribute", "metric", "challenger", "champion", "worsening", "result"],
                rows,
                styles,
                title="Fairness vs champion",
                note=f"Tolerance {fmt_num(tol)}." if tol is not None else "",
            )
        )
    return tables


def _generic_tables(details: dict[str, Any]) -> list[Table]:
    rows = [[Cell(k, "key"), Cell(_text(v), "code")] for k, v in details.items()]
    return [Table(["", ""], rows, kind="kv")] if rows else []


_GATE_TABLES = {
    "metric_thresholds": _threshold_tables,
    "champion_comparison": _comparison_tables,
    "fairness": _fairness_tables,
}


def report_view(report: dict[str, Any]) -> ReportView:
    """A stored ``ValidationReport.to_dict()`` as tables."""
    gates = report.get("gates") or []
    passed = bool(report.get("passed", all(g.get("passed") for g in gates)))
    failed = [g["name"] for g in gates if not g.get("passed")]
    n_viol = sum(len(g.get("violations") or []) for g in gates)
    verdict = (
        f"Passed all {len(gates)} gate(s)"
        if passed
        else f"Rejected: failed {len(failed)} of {len(gates)} gate(s) "
        f"({', '.join(failed)}) with {n_viol} violation(s)"
    )
    overview = Table(
        ["gate", "result", "violations", "note"],
        [
            [
                Cell(GATE_TITLES.get(g["name"], g["name"]), "key"),
                _status_cell(bool(g.get("passed"))),
                Cell(fmt_num(len(g.get("violations") or [])), "num"),
                Cell(g.get("note") or "—", "muted" if not g.get("note") else ""),
            ]
            for g in gates
        ],
        ["" if g.get("passed") else "fail" for g in gates],
    )
    views = []
    for g in gates:
        builder = _GATE_TABLES.get(g["name"], _generic_tables)
        views.append(
            GateView(
                name=g["name"],
                title=GATE_TITLES.get(g["name"], g["name"]),
                passed=bool(g.get("passed")),
                note=g.get("note") or "",
                violations=list(g.get("violations") or []),
                tables=builder(g.get("details") or {}),
            )
        )
    return ReportView(
        verdict=verdict,
        passed=passed,
        created_at=fmt_ts(report.get("created_at")),
        overview=overview,
        gates=views,
    )


def _timeline_title(e: AuditEvent) -> str:
    label = EVENT_LABELS.get(e.action, e.action)
    if e.action in (PROMOTED, ROLLBACK):
        before = e.details.get("from")
        after = e.details.get("to") or e.version
        return f"{label}: v{before} → v{after}" if before else f"{label}: v{after}"
    if e.action in DRIFT_ACTIONS:  # the version is the champion measured, not a new one
        return f"{label} (champion v{e.version})" if e.version else label
    return f"{label}: v{e.version}" if e.version else label


def _timeline_extra(e: AuditEvent) -> str:
    d = e.details
    if e.action == PROMOTED and isinstance(d.get("approval"), dict):
        a = d["approval"]
        return f"approved by {a.get('approver', MISSING)} ({a.get('channel', 'unknown channel')})"
    if e.action == "approval_requested" and d.get("timeout_seconds"):
        return f"timeout {fmt_num(d['timeout_seconds'])} s"
    if e.action == "integrity_failed" and d.get("expected_sha256"):
        return f"expected SHA-256 {short(d['expected_sha256'], 16)}"
    if e.action in DRIFT_ACTIONS:
        check = DriftCheck.from_event(e)
        return f"drifted: {_columns_text(check)}, share {fmt_num(check.drift_share)}"
    return ""


def timeline_items(card: ModelCard) -> list[TimelineItem]:
    return [
        TimelineItem(
            ts=fmt_ts(e.ts),
            title=_timeline_title(e),
            tone=EVENT_TONE.get(e.action, "info"),
            actor=e.actor or MISSING,
            reason=e.reason,
            extra=_timeline_extra(e),
        )
        for e in card.timeline
    ]


def audit_table(a: AuditStatus) -> Table:
    rows = [
        [Cell("Status", "key"), _audit_cell(a)],
        [Cell("Records checked", "key"), Cell(fmt_num(a.records))],
        [Cell("Head hash", "key"), Cell(a.head_hash or MISSING, "code")],
    ]
    if a.first_bad_seq is not None:
        rows.append([Cell("First bad record", "key"), Cell(f"#{a.first_bad_seq}", "bad")])
    if a.problem and a.ok is not None:
        rows.append([Cell("Problem", "key"), Cell(a.problem, "bad")])
    return Table(["", ""], rows, kind="kv")


def _columns_text(c: DriftCheck) -> str:
    if c.drifted_columns is None:
        return MISSING
    return ", ".join(c.drifted_columns) or "none"


def _prediction_cell(drifted: bool | None) -> Cell:
    if drifted is None:
        return Cell(MISSING, "muted")
    return Cell("drifted", "warn") if drifted else Cell("no", "muted")


def _decision_cell(c: DriftCheck) -> Cell:
    if c.retrain is None:  # a record without the decision: its reason is all there is
        return Cell(c.reason or MISSING, "muted")
    if not c.retrain:
        return Cell("no retrain", "muted")
    return Cell(("retrain: " + "; ".join(c.reasons)) if c.reasons else "retrain", "warn")


def _outcome_cell(c: DriftCheck) -> Cell:
    if c.outcome is None:
        return Cell("—", "muted")
    if c.outcome_label == "triggered":
        return Cell("triggered", "info")
    return Cell(f"suppressed: {c.outcome.reason or 'no reason recorded'}", "warn")


def _report_cell(c: DriftCheck) -> Cell:
    """The report's path, and when the check compared samples, how many rows of how many (so
    the card never passes a sample's statistics off as the whole window's)."""
    from mlsteward.monitoring.drift import sampling_lines

    text = c.report or MISSING
    lines = sampling_lines(c.sampling) if c.sampling else []
    return Cell(" · ".join([text, *(f"sampled {line}" for line in lines)]), "code")


def drift_table(card: ModelCard) -> Table | None:
    """The newest :data:`MAX_DRIFT_ROWS` drift checks, or None when none has run."""
    if not card.drift:
        return None
    shown = card.drift[:MAX_DRIFT_ROWS]
    rows = [
        [
            Cell(fmt_ts(c.ts)),
            Cell(f"v{c.version}" if c.version else MISSING, "key"),
            Cell(_columns_text(c), "muted" if not c.drifted_columns else ""),
            Cell(fmt_num(c.drift_share), "num"),
            _prediction_cell(c.prediction_drift),
            _decision_cell(c),
            _outcome_cell(c),
            _report_cell(c),
        ]
        for c in shown
    ]
    note = (
        "Newest first. Each Evidently report is an HTML file written where the drift run ran "
        "and logged to the champion's MLflow run under drift/v<version>."
    )
    omitted = len(card.drift) - len(shown)
    if omitted:
        note += (
            f" Showing the latest {len(shown)} of {len(card.drift)} checks; "
            f"{omitted} older check(s) not shown (mlsteward audit log lists them)."
        )
    return Table(
        [
            "when",
            "champion",
            "drifted columns",
            "drift share",
            "prediction drift",
            "decision",
            "retrain",
            "Evidently report",
        ],
        rows,
        note=note,
    )


ROLLOUT_DECISIONS = {
    "promoted": ("promoted", "ok"),
    "rejected": ("all steps passed; promotion rejected", "warn"),
    "rolled_back": ("rolled back", "bad"),
    "aborted": ("aborted", "warn"),
    "running": ("running / unfinished", "info"),
}


def _breach_text(r: RolloutRun) -> str:
    if not r.breaches:
        return "—" if r.decision != "rolled_back" else r.reason or MISSING
    return "; ".join(
        f"{b.get('check', '?')}: {b.get('message') or _numbers(b.get('observed'))}"
        for b in r.breaches
    )


def _numbers(observed: Any) -> str:
    if not isinstance(observed, dict):
        return MISSING
    return ", ".join(f"{k} {fmt_num(v)}" for k, v in observed.items() if v is not None)


def _steps_text(r: RolloutRun) -> str:
    planned = len(r.planned_steps)
    if not planned:
        return str(r.steps_reached) if r.steps_reached else MISSING
    at = r.planned_steps[r.steps_reached - 1] if 0 < r.steps_reached <= planned else None
    share = f" ({at:.0%})" if at is not None else ""
    return f"{r.steps_reached} of {planned}{share}"


def rollouts_table(card: ModelCard) -> Table | None:
    """The newest :data:`MAX_ROLLOUT_ROWS` canary rollouts, or None when none has run."""
    if not card.rollouts:
        return None
    shown = card.rollouts[:MAX_ROLLOUT_ROWS]
    rows = []
    for r in shown:
        label, tone = ROLLOUT_DECISIONS.get(r.decision, (r.decision, ""))
        rows.append(
            [
                Cell(fmt_ts(r.started_at or r.ended_at)),
                Cell(f"v{r.version}" if r.version else MISSING, "key"),
                Cell(f"v{r.champion}" if r.champion else MISSING),
                Cell(_steps_text(r), "num"),
                Cell(label, tone),
                Cell(_breach_text(r), "bad" if r.breaches else "muted"),
                Cell(r.actor or MISSING, "muted"),
                Cell(r.rollout_id, "code"),
            ]
        )
    note = (
        "Newest first. Steps reached is the step a rollout was at when it ended; a breach "
        "rolls back at once (all traffic to the champion, the version rejected). Every step's "
        "numbers are in the audit trail (mlsteward audit log)."
    )
    omitted = len(card.rollouts) - len(shown)
    if omitted:
        note += f" Showing the latest {len(shown)} of {len(card.rollouts)} rollouts."
    return Table(
        ["when", "version", "against", "steps reached", "decision", "breached guardrail",
         "by", "rollout id"],
        rows,
        note=note,
    )  # fmt: skip


@dataclass
class SectionView:
    section: VersionSection
    anchor: str
    title: str
    facts: Table
    metrics: Table | None
    report: ReportView | None
    lineage: Table
    history: Table


def section_view(s: VersionSection) -> SectionView:
    facts = [
        ("Lifecycle", Cell(s.lifecycle)),
        ("Validation", Cell(s.validation_status or "not validated", _tone(s.validation_status))),
        ("Registered", Cell(fmt_ts(s.created_at))),
    ]
    if s.promoted_at:
        by = f" by {s.promoted_by}" if s.promoted_by else ""
        facts.append(("Promoted", Cell(fmt_ts(s.promoted_at) + by)))
    if s.retired_at:
        facts.append(("Retired", Cell(fmt_ts(s.retired_at))))
    return SectionView(
        section=s,
        anchor=f"v{re.sub(r'[^A-Za-z0-9_-]', '-', s.version)}",
        title=f"Version {s.version}",
        facts=Table(["", ""], [[Cell(k, "key"), c] for k, c in facts], kind="kv"),
        metrics=section_metrics_table(s),
        report=report_view(s.validation) if s.validation else None,
        lineage=lineage_table(s),
        history=history_table(s.history),
    )


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = fmt_ts
    env.filters["num"] = fmt_num
    env.filters["short"] = short
    return env


def render_html(card: ModelCard) -> str:
    """One self-contained HTML page: inline CSS, no scripts, no external resources."""
    env = _environment()
    return env.get_template(TEMPLATE).render(
        card=card,
        summary=summary_table(card),
        versions=versions_table(card),
        metrics=metrics_table(card),
        sections=[section_view(s) for s in card.sections],
        timeline=timeline_items(card),
        drift=drift_table(card),
        rollouts=rollouts_table(card),
        audit=audit_table(card.audit),
        event_labels=EVENT_LABELS,
    )


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def md_escape(text: Any) -> str:
    """Text safe inside a markdown table cell: HTML entities (markdown passes raw HTML
    through), escaped pipes, no line breaks."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_cell(c: Cell) -> str:
    text = md_escape(c.text)
    if "bad" in c.style.split() and text:
        return f"**{text}**"
    if "code" in c.style.split() and text and text != MISSING:
        return "`" + text.replace("`", "'") + "`"
    return text


def md_table(t: Table) -> list[str]:
    out: list[str] = []
    if t.title:
        out += [f"#### {md_escape(t.title)}", ""]
    if t.kind == "kv":
        header, rows = ["", ""], t.rows
        out.append("| | |")
        out.append("| --- | --- |")
    else:
        header, rows = t.header, t.rows
        out.append("| " + " | ".join(md_escape(h) for h in header) + " |")
        out.append(
            "| "
            + " | ".join("---:" if _numeric(t, i) else "---" for i in range(len(header)))
            + " |"
        )
    for i, row in enumerate(rows):
        cells = [_md_cell(c) for c in row]
        if t.kind == "kv":
            cells[0] = f"**{md_escape(row[0].text)}**"
        if t.row_style(i) == "small":
            cells[0] += " †"
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if t.note:
        out += [f"_{md_escape(t.note)}_", ""]
    return out


def _numeric(t: Table, col: int) -> bool:
    return bool(t.rows) and all(col < len(r) and "num" in r[col].style.split() for r in t.rows)


def render_markdown(card: ModelCard) -> str:
    """The card as GitHub-flavoured markdown (same sections and numbers as the HTML)."""
    badges = []
    if card.champion_version:
        badges.append(f"champion **v{card.champion_version}**")
    if card.challenger_version:
        badges.append(f"challenger **v{card.challenger_version}**")
    badges.append(f"audit chain **{_audit_cell(card.audit).text}**")
    out = [
        f"# Model card: {md_escape(card.model)}",
        "",
        " · ".join(badges),
        "",
    ]
    if card.description:
        out += [md_escape(card.description), ""]
    if card.warnings:
        out += ["> **Incomplete report**", ">"]
        out += [f"> - {md_escape(w)}" for w in card.warnings]
        out.append("")
    out += ["## Summary", "", *md_table(summary_table(card))]
    out += ["### Registered versions", "", *md_table(versions_table(card))]
    out += ["## Metrics: champion vs challenger", ""]
    m = metrics_table(card)
    out += md_table(m) if m else ["No champion or challenger yet.", ""]
    for sv in (section_view(s) for s in card.sections):
        s = sv.section
        roles = ", ".join(s.roles)
        out += [f"## {md_escape(sv.title)} ({md_escape(roles)})", ""]
        out += md_table(sv.facts)
        if sv.metrics:
            out += ["### Test metrics", "", *md_table(sv.metrics)]
        out += ["### Validation", ""]
        out += _md_report(sv)
        out += ["### Lineage", "", *md_table(sv.lineage)]
        out += ["### History", ""]
        out += md_table(sv.history) if s.history else ["No audit events for this version.", ""]
    out += ["## Drift and retraining", ""]
    drift = drift_table(card)
    out += md_table(drift) if drift else ["No drift checks have run yet.", ""]
    out += ["## Rollouts", ""]
    rollouts = rollouts_table(card)
    out += md_table(rollouts) if rollouts else ["No canary rollouts yet.", ""]
    out += ["## Timeline", ""]
    items = timeline_items(card)
    if items:
        out += ["| when | event | who | why |", "| --- | --- | --- | --- |"]
        for it in items:
            why = it.reason + (f" ({it.extra})" if it.extra else "")
            title = md_escape(it.title)
            if it.tone == "bad":
                title = f"**{title}**"
            out.append(
                f"| {md_escape(it.ts)} | {title} | {md_escape(it.actor)} | {md_escape(why)} |"
            )
        out.append("")
    else:
        out += ["No promotions, rollbacks or approvals yet.", ""]
    out += ["## Audit chain", "", *md_table(audit_table(card.audit))]
    out += [f"_Generated by mlsteward at {fmt_ts(card.generated_at)}._", ""]
    if any(t.row_style(i) == "small" for t in _all_tables(card) for i in range(len(t.rows))):
        out += ["† small group: reported, not gated.", ""]
    return "\n".join(out).rstrip() + "\n"


def _all_tables(card: ModelCard) -> list[Table]:
    tables = []
    for s in card.sections:
        if s.validation:
            for g in report_view(s.validation).gates:
                tables += g.tables
    return tables


def _md_report(sv: SectionView) -> list[str]:
    s = sv.section
    if sv.report is None:
        if s.validation_error:
            return [f"Validation report could not be read: {md_escape(s.validation_error)}", ""]
        if s.validation_status:
            return [
                f"No validation report recorded (status: {md_escape(s.validation_status)}).",
                "",
            ]
        return ["Not validated yet.", ""]
    r = sv.report
    out = [
        f"**{md_escape(r.verdict)}** (report of {md_escape(r.created_at)})",
        "",
    ]
    out += md_table(r.overview)
    for g in r.gates:
        out += [f"#### Gate: {md_escape(g.title)}: {'passed' if g.passed else 'FAILED'}", ""]
        if g.note:
            out += [f"_{md_escape(g.note)}_", ""]
        if g.violations:
            out += ["Violations:", ""]
            out += [
                f"- **{md_escape(v.get('rule', ''))}**: {md_escape(v.get('message', ''))}"
                for v in g.violations
            ]
            out.append("")
        for t in g.tables:
            out += md_table(t)
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def reports_dir() -> Path:
    from mlsteward.config.settings import home

    path = home() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_card(card: ModelCard, out_dir: Path | None = None) -> dict[str, Any]:
    """Render a collected card to ``<out_dir>/<model>-model-card.{html,md}``."""
    out = Path(out_dir) if out_dir is not None else reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / f"{card.model}-model-card.html"
    md_path = out / f"{card.model}-model-card.md"
    html_path.write_text(render_html(card), encoding="utf-8")
    md_path.write_text(render_markdown(card), encoding="utf-8")
    return {
        "model": card.model,
        "html": str(html_path),
        "markdown": str(md_path),
        "champion": card.champion_version,
        "challenger": card.challenger_version,
        "versions": [s.version for s in card.sections],
        "audit_ok": card.audit.ok,
        "drift_checks": len(card.drift),
        "drift_history": [c.to_dict() for c in card.drift[:MAX_DRIFT_ROWS]],
        "rollouts": [r.to_dict() for r in card.rollouts[:MAX_ROLLOUT_ROWS]],
        "warnings": list(card.warnings),
    }


def write_report(model: str, out_dir: Path | None = None) -> dict[str, Any]:
    """Collect and write the model card; default location ``<MLSTEWARD_HOME>/reports/``.

    Returns:
        ``{"model", "html", "markdown", "champion", "challenger", "versions", "audit_ok",
        "drift_checks", "drift_history", "rollouts", "warnings"}`` with the two paths as
        strings; ``drift_checks`` counts every drift check, ``drift_history`` holds the newest
        :data:`MAX_DRIFT_ROWS` of them (:meth:`DriftCheck.to_dict`), ``rollouts`` the newest
        :data:`MAX_ROLLOUT_ROWS` canary rollouts (:meth:`RolloutRun.to_dict`).
    """
    return write_card(collect_model_card(model), out_dir)
