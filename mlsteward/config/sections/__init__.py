"""The sections of a model's config, grouped by the room that reads them.

``ModelConfig`` (``mlsteward.config.models``) is made of these: ``data`` (source, features,
contract, Feast), ``training`` (tuning, distribution, split, decision threshold),
``governance`` (metrics, thresholds, fairness, promotion), ``monitoring`` (drift, scoring) and
``serving`` (online serving and canary rollouts).
"""
