"""Every validation gate on one version, now, without Prefect.

The validation tasks wrap these same steps one by one (so each gate shows as a task run in the
UI); ``governance.decisions`` calls ``run_gates`` whole when a promotion, an approval or an API
request finds a version's report stale, so every channel judges a version the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mlsteward.config.models import ModelConfig
from mlsteward.governance import champion as champion_record
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.champion_gate import champion_comparison_gate
from mlsteward.governance.fairness import fairness_gate
from mlsteward.governance.gates import GateResult, ValidationReport
from mlsteward.governance.registry import VersionInfo
from mlsteward.governance.validation import (
    HoldoutScore,
    holdout_metrics_gate,
    load_holdout,
    score_holdout,
)


def score_with_champion(
    cfg: ModelConfig, version: str, actor: str
) -> tuple[HoldoutScore, HoldoutScore | None, VersionInfo, int]:
    """Score the version and the current champion (if another one) on the version's holdout,
    both from SHA-256-verified artifacts (a mismatch is audited and refuses).

    Returns:
        (the version's score, the champion's or None, the version, the holdout's row count).
    """
    info = registry.get_version(cfg.name, version)
    holdout = load_holdout(info)
    with governance.open_audit() as audit:
        verified = governance.load_verified(info, audit, actor, "validation")
        challenger = score_holdout(cfg, verified, holdout)
        recorded, _ = champion_record.recorded(cfg.name, audit)  # the record, not the alias
        champ_info = registry.get_version(cfg.name, recorded) if recorded else None
        champion = None
        if champ_info is not None and champ_info.version != info.version:
            verified = governance.load_verified(champ_info, audit, actor, "validation (champion)")
            champion = score_holdout(cfg, verified, holdout, explain=False)
    return challenger, champion, info, len(holdout)


def champion_gate(
    cfg: ModelConfig, challenger: HoldoutScore, champion: HoldoutScore | None
) -> GateResult:
    """The challenger-vs-champion gate on two scores of the same holdout."""
    return champion_comparison_gate(
        challenger.metrics,
        champion.metrics if champion else None,
        challenger.gated_fairness(cfg),
        champion.gated_fairness(cfg) if champion else None,
        cfg.promotion,
        champion_version=champion.version if champion else None,
    )


def run_gates(cfg: ModelConfig, version: str, actor: str) -> ValidationReport:
    """Score, run every gate, record the report on the version (tags, artifacts, audit record
    with ``actor``, the challenger alias when it passed) and return it."""
    challenger, champion, _, _ = score_with_champion(cfg, version, actor)
    report = ValidationReport(
        model=cfg.name,
        version=str(version),
        gates=[
            holdout_metrics_gate(cfg, challenger),
            fairness_gate(challenger.fairness, cfg),
            champion_gate(cfg, challenger, champion),
        ],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    governance.record_validation(
        cfg,
        str(version),
        report,
        actor=actor,
        champion_version=champion.version if champion else None,
    )
    return report
