"""The audit actions the model card reads, and how it names them.

The values of ``mlsteward.audit.Action``, kept here as text so that rendering a card never needs
the audit store: a card can be built by hand (tests) or from a JSON dump and rendered alone.
"""

from __future__ import annotations

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
