"""Monitoring: scoring, the prediction log, outcomes, drift and the retraining decision."""
