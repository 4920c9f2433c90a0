"""Training: the run's settings (spec), the prepared set, Hyperopt tuning, XGBoost fitting, the
build on a prepared set (in process or on Dask), the trial cache, reproduction."""
