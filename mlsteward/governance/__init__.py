"""Governance: gates, fairness, the MLflow registry, promotion, approvals, canary state."""
