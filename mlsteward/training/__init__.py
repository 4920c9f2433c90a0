"""Training: preparation, Hyperopt tuning, XGBoost fitting, distributed runs, reproduction."""
