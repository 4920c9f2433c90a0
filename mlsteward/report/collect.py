"""Reading the registry and the audit trail into a :class:`~mlsteward.report.model.ModelCard`.

:func:`collect_model_card` reads the registry (versions, aliases, ``lineage.*`` and ``test_*``
tags, the stored validation reports) and the audit trail (decisions, approvals, promotions,
rollbacks, integrity failures, drift checks and the retrain claims they made, rollouts, the
chain check). What cannot be read (a lost validation report, a chain check that cannot run, a
missing configuration) becomes a warning on the card instead of stopping the report.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlsteward.audit import AuditStore, audit_store
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.registry import VersionInfo
from mlsteward.report.actions import TIMELINE_ACTIONS, VERSION_ACTIONS
from mlsteward.report.history import drift_history, rollout_history
from mlsteward.report.model import (
    CLASSIFICATION,
    MAX_TIMELINE,
    REGRESSION,
    AuditEvent,
    AuditStatus,
    ModelCard,
    VersionSection,
    version_key,
)


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
    """The holdout metrics of the ``test_*`` tags; a value that is not a number is left out."""
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


def _section(
    info: VersionInfo,
    roles: list[str],
    events: list[AuditEvent],
    warnings: list[str],
    configured_measured_only: tuple[str, ...] = (),
) -> VersionSection:
    """One version's section; its stored validation report is read here, and one that cannot
    be read is noted on the section and in ``warnings``."""
    tags = dict(info.tags)
    uri = tags.get("validation_report")
    validation, error = None, None
    if uri:
        try:
            validation = _download_validation(uri)
        except Exception as exc:  # a missing artifact must not stop the report
            error = f"{type(exc).__name__}: {exc}"
            warnings.append(f"v{info.version}: validation report {uri} could not be read ({error})")
    lineage = lineage_from_tags(tags)
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
        lineage=lineage,
        metrics=metrics_from_tags(tags),
        validation=validation,
        validation_uri=uri,
        validation_error=error,
        history=[
            e for e in events if e.version == str(info.version) and e.action in VERSION_ACTIONS
        ],
        task=tags.get("task"),
        objective=tags.get("objective"),
        measured_only=measured_only(lineage, validation, configured_measured_only),
    )


def measured_only(
    lineage: dict[str, Any], validation: dict[str, Any] | None, configured: tuple[str, ...]
) -> list[str]:
    """The sensitive columns of a version that were measured but never given to the model.

    The version's own recorded features decide where they were recorded: the configuration
    may have changed since it was trained. Without them, the configuration's sensitive
    columns that are not features stand in."""
    features = lineage.get("features")
    if not isinstance(features, list):
        return list(configured)
    gates = (validation or {}).get("gates") or []
    fairness = next((g for g in gates if isinstance(g, dict) and g.get("name") == "fairness"), {})
    attributes = (fairness.get("details") or {}).get("attributes") or {}
    return [str(a) for a in attributes if a not in features]


def collect_model_card(model: str) -> ModelCard:
    """Read the registry and the audit trail into a :class:`ModelCard`.

    Raises:
        NotFoundError: the model has neither a configuration nor a registered version.
    """
    warnings: list[str] = []
    infos = {v.version: v for v in registry.list_versions(model)}
    conf = _configuration(model, infos, warnings)
    if not conf.found and not infos:
        raise NotFoundError(f"{model}: no model configuration and no registered version")

    events, history, status, audit = _read_audit(model, warnings)
    champion, challenger = status["champion"], status["challenger"]
    roles = _roles(champion, challenger, infos, history)
    sections = []
    for v, r in roles.items():
        info = infos.get(v)
        if info is None:
            warnings.append(f"v{v} appears in the audit trail but is not in the registry")
            continue
        sections.append(_section(info, r, events, warnings, conf.measured_only))

    versions = [_version_row(info) for info in infos.values()]
    timeline = [e for e in events if e.action in TIMELINE_ACTIONS]
    if len(timeline) > MAX_TIMELINE:
        warnings.append(f"timeline shortened to the latest {MAX_TIMELINE} of {len(timeline)}")
        timeline = timeline[-MAX_TIMELINE:]
    return ModelCard(
        model=model,
        description=conf.description,
        owner=conf.owner,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        champion=champion,
        challenger=challenger,
        primary_metric=conf.primary,
        task=conf.task,
        objective=conf.objective,
        previous_champion=status.get("previous_champion"),
        versions=versions,
        sections=sections,
        champion_history=history,
        timeline=timeline,
        drift=drift_history(events),
        rollouts=rollout_history(events),
        audit=audit,
        warnings=warnings,
        config=conf.cfg,
    )


@dataclass(frozen=True)
class _Configured:
    """What the card takes from the model's configuration, or without one, from the registry."""

    found: bool
    description: str = ""
    owner: str = "unknown"
    primary: str = "roc_auc"
    task: str = CLASSIFICATION
    objective: str | None = None
    measured_only: tuple[str, ...] = ()
    cfg: ModelConfig | None = None


def _configuration(model: str, infos: dict[str, VersionInfo], warnings: list[str]) -> _Configured:
    """The configuration's facts; a card is still written for a model whose configuration is
    gone, as long as the registry knows it: its task is then the newest version's ``task``
    tag, and its primary metric that task's default."""
    try:
        cfg = get_model_config(model)
    except MlstewardError as exc:
        warnings.append(f"model configuration not available: {exc}")
        tagged = [infos[v] for v in sorted(infos, key=version_key) if "task" in infos[v].tags]
        if not tagged:
            return _Configured(found=False)
        task = tagged[-1].tags["task"]
        return _Configured(
            found=False,
            primary="rmse" if task == REGRESSION else "roc_auc",
            task=task,
            objective=tagged[-1].tags.get("objective"),
        )
    return _Configured(
        found=True,
        description=cfg.description,
        owner=cfg.owner,
        primary=cfg.promotion.primary_metric,
        task=cfg.task,
        objective=cfg.tuning.objective,
        measured_only=tuple(c.name for c in cfg.attribute_columns),
        cfg=cfg,
    )


def _read_audit(
    model: str, warnings: list[str]
) -> tuple[list[AuditEvent], list[dict[str, Any]], dict[str, Any], AuditStatus]:
    """The model's audit events, champion history, governance status and the chain check,
    read on one audit store that is closed again whatever happens."""
    store = audit_store()
    try:
        events = [AuditEvent.from_record(r) for r in store.query(model=model)]
        history = governance.champion_history(model, store)
        status = governance.status(model, store=store)
        audit = _verify(store, warnings)
    finally:
        store.close()
    return events, history, status, audit


def _verify(store: AuditStore, warnings: list[str]) -> AuditStatus:
    """The chain check; one that cannot run is reported on the card instead of failing it."""
    try:
        result = store.verify()
        return AuditStatus(
            ok=bool(result.ok),
            records=int(result.records),
            head_hash=result.head_hash,
            first_bad_seq=getattr(result, "first_bad_seq", None),
            problem=result.problem,
        )
    except Exception as exc:  # report what could not be checked instead of failing
        warnings.append(f"audit chain could not be verified: {exc}")
        return AuditStatus(ok=None, problem=f"{type(exc).__name__}: {exc}")


def _roles(
    champion: dict[str, Any] | None,
    challenger: dict[str, Any] | None,
    infos: dict[str, VersionInfo],
    history: list[dict[str, Any]],
) -> dict[str, list[str]]:
    """The versions the card describes, in order: champion, challenger, the newest version
    (so a rejected retrain and its reasons are visible too), then former champions, newest
    first."""
    roles: dict[str, list[str]] = {}
    if champion:
        roles.setdefault(str(champion["version"]), []).append("champion")
    if challenger:
        roles.setdefault(str(challenger["version"]), []).append("challenger")
    if infos:
        latest = max(infos, key=version_key)
        if latest not in roles:
            roles[latest] = ["latest"]
    former = {str(v) for h in history for v in (h.get("from"), h.get("to")) if v is not None}
    for v in sorted(former - set(roles), key=version_key, reverse=True):
        roles[v] = ["former champion"]
    return roles


def _version_row(info: VersionInfo) -> dict[str, Any]:
    """One registered version as the card's version table lists it."""
    return {
        "version": info.version,
        "lifecycle": info.lifecycle,
        "validation_status": info.validation_status,
        "aliases": list(info.aliases),
        "created_at": _iso_ms(info.created_at_ms),
        "metrics": metrics_from_tags(info.tags),
        "artifact_sha256": info.artifact_sha256,
    }
