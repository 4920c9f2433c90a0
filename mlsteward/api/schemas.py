"""What the API accepts and answers, as pydantic models: the OpenAPI schema is built from
them, so ``/docs`` and schemathesis see exactly what the routes check.

Request bodies forbid unknown keys (a typo is a 422 naming the key, not a silently ignored
setting). Answers keep the nested documents of the registry and the audit trail as objects:
their keys are the ones ``mlsteward status`` / ``report --json`` print.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsteward.config.names import NAME_PATTERN

REASON_MAX = 2000
MAX_OUTCOME_ROWS = 100_000

Reason = Annotated[str, Field(min_length=1, max_length=REASON_MAX, description="Why (audited).")]
ModelField = Annotated[
    str,
    Field(
        max_length=63,
        description="A model name.",
        json_schema_extra={"pattern": NAME_PATTERN.pattern},
    ),
]
VersionField = Annotated[str, Field(pattern=r"^[0-9]{1,9}$", description="A version number.")]
FilePath = Annotated[
    str, Field(min_length=1, max_length=4096, description="A file under the runs' data roots.")
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Answers may carry more keys than documented (a newer core adds some)."""

    model_config = ConfigDict(extra="allow")


# -- errors and identity ----------------------------------------------------------------------


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every refusal: the message names the field, rule or permission at fault."""

    error: str
    field: str | None = None
    permission: str | None = None
    errors: list[FieldError] | None = None


class Health(BaseModel):
    ok: bool
    service: str
    version: str


class Whoami(Answer):
    identity: str
    actor: str
    kind: str
    name: str
    roles: list[str]
    teams: list[str]
    authenticated: bool
    method: str
    permissions: list[str]


# -- models and versions ----------------------------------------------------------------------


class ModelItem(Answer):
    name: str
    description: str | None = None
    owner: str | None = None
    policy: str | None = None
    champion: str | None = Field(
        default=None, description="The champion the governance record names."
    )
    challenger: str | None = None
    canary: dict[str, Any] | None = None
    champion_check: dict[str, Any] | None = Field(
        default=None, description="The MLflow alias against the record (alias_mismatch)."
    )
    config_error: str | None = None


class ModelList(BaseModel):
    models: list[ModelItem]


class ModelDetail(Answer):
    model: str
    description: str
    owner: str
    policy: str
    approvals_required: int
    champion: dict[str, Any] | None
    champion_check: dict[str, Any]
    challenger: dict[str, Any] | None
    previous_champion: str | None
    canary: dict[str, Any] | None
    versions: list[dict[str, Any]]
    last_drift: dict[str, Any] | None
    active_rollout: dict[str, Any] | None
    pending_approvals: list[dict[str, Any]]
    recent_decisions: list[dict[str, Any]]


class VersionItem(Answer):
    version: str
    lifecycle: str
    validation_status: str | None
    aliases: list[str]
    run_id: str
    artifact_sha256: str | None
    created_at: str | None
    metrics: dict[str, float]


class VersionList(BaseModel):
    model: str
    versions: list[VersionItem]


class VersionDetail(VersionItem):
    model: str
    promoted_at: str | None
    promoted_by: str | None
    retired_at: str | None
    lineage: dict[str, Any]
    validation: dict[str, Any] | None
    validation_error: str | None
    gates: list[dict[str, Any]]
    fairness: dict[str, Any] | None
    approvals: list[dict[str, Any]]
    history: list[dict[str, Any]]


# -- decisions --------------------------------------------------------------------------------


class PromoteBody(Body):
    reason: Reason | None = None
    override: bool = Field(
        default=False,
        description="Promote a version a person rejected or that was rolled back from "
        "(needs the override permission and a reason).",
    )


class ReasonBody(Body):
    reason: Reason


class RollbackBody(Body):
    reason: Reason
    to: VersionField | None = Field(default=None, description="An earlier champion version.")
    override: bool = Field(
        default=False,
        description="Roll back to a version a person rejected or that was rolled back from "
        "(needs the override permission).",
    )


class ApprovalTokenBody(Body):
    decision: Literal["approve", "reject"]
    reason: Reason


class ApprovalTokenOut(BaseModel):
    model: str
    version: str
    decision: str
    approval_token: str
    expires_in_minutes: int


class DecisionOut(Answer):
    model: str
    version: str
    decision: str
    reasons: list[str] = []
    approvals: list[str] = []
    approvals_required: int = 1
    promotion: dict[str, Any] | None = None
    audit_seq: int | None = None


class PromotionOut(Answer):
    model: str
    action: str
    version: str
    previous_champion: str | None
    artifact_sha256: str
    audit_seq: int


class ApprovalList(BaseModel):
    approvals: list[dict[str, Any]]


# -- runs and rollouts ------------------------------------------------------------------------


class TrainRun(Body):
    action: Literal["train"]
    max_evals: int | None = Field(default=None, ge=1, description="Hyperopt trials.")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    promote: bool | None = Field(default=None, description="False: stop after the gates.")
    reason: Reason | None = None
    git_ref: str | None = Field(default=None, min_length=1, max_length=200)


class DriftRun(Body):
    action: Literal["drift"]
    current: FilePath | None = None
    window_days: float | None = Field(default=None, gt=0, le=3660)


class ScoreRun(Body):
    action: Literal["score"]
    source: FilePath | None = None
    entities: FilePath | None = None
    start: str | None = Field(default=None, max_length=64, description="ISO-8601 time.")
    end: str | None = Field(default=None, max_length=64, description="ISO-8601 time.")


RunBody = Annotated[TrainRun | DriftRun | ScoreRun, Field(discriminator="action")]


class StartedRunOut(Answer):
    action: str
    model: str
    deployment: str
    flow_run_id: str
    flow_run_name: str
    ui_url: str | None
    parameters: dict[str, Any]


class RolloutStartBody(Body):
    model: ModelField
    version: VersionField | None = Field(default=None, description="Default: the challenger.")


class RolloutStopBody(Body):
    reason: Reason


class RolloutOut(Answer):
    model: str
    rollout_id: str
    version: str | None
    decision: str
    flow_run_id: str | None = None


class RolloutList(BaseModel):
    rollouts: list[RolloutOut]


class RolloutStopped(Answer):
    model: str
    rollout_id: str
    version: str | None
    canary_closed: bool
    flow_run_id: str | None
    flow_run_cancelled: bool
    note: str


# -- outcomes, audit, dashboard -----------------------------------------------------------------


class OutcomesBody(Body):
    rows: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_OUTCOME_ROWS,
        description="One object per outcome with the model's entity, event-time and label "
        "columns (as in the file `mlsteward labels` reads).",
    )


class OutcomesOut(Answer):
    model: str
    rows: int
    matched: int
    unmatched: int
    duplicates: int
    relabelled: int
    stored: int


class AuditRecordOut(Answer):
    seq: int
    ts: str
    actor: str
    action: str
    model: str | None
    version: str | None
    reason: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditList(BaseModel):
    records: list[AuditRecordOut]


class AuditVerified(Answer):
    ok: bool
    records: int
    head_hash: str | None
    first_bad_seq: int | None
    problem: str | None


class DashboardModel(Answer):
    model: str
    owner: str | None
    policy: str | None
    champion: dict[str, Any] | None
    champion_check: dict[str, Any] | None = None
    challenger: dict[str, Any] | None
    pending_approvals: list[dict[str, Any]]
    last_drift: dict[str, Any] | None
    active_rollout: dict[str, Any] | None
    open_alerts: list[dict[str, Any]]
    config_error: str | None = None


class Dashboard(BaseModel):
    generated_at: str
    models: list[DashboardModel]
