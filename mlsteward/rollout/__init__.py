"""Rollouts: what a canary must keep to go on, and the state machine that drives it."""
