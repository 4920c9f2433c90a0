"""The governance key: what signs model artifacts, promotions and audit checkpoints."""
