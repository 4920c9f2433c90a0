"""The drift HTML: every column's widget and one test summary over all columns, on one page."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from mlsteward.config import ModelConfig
from mlsteward.drift import compute_drift

N = 2_000


def _frame(rng: np.random.Generator, shift: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "moved": rng.normal(shift, 1.0, N),
            "still": rng.normal(0.0, 1.0, N),
            "colour": np.where(rng.random(N) < 0.5, "red", "blue").astype(object),
            "y": (rng.random(N) < 0.3).astype(np.int64),
            "prediction_proba": rng.random(N),
        }
    )


def test_one_page_with_every_column_and_one_summary(tmp_path):
    cfg = ModelConfig.model_validate(
        {
            "name": "toy",
            "task": "binary_classification",
            "source": {"path": "x.parquet", "entity": "id", "timestamp": "ts"},
            "label": "y",
            "features": [
                {"name": "moved", "dtype": "float"},
                {"name": "still", "dtype": "float"},
                {"name": "colour", "dtype": "category", "categories": ["red", "blue"]},
            ],
        }
    )
    rng = np.random.default_rng(11)
    path = tmp_path / "drift.html"
    result = compute_drift(_frame(rng, 0.0), _frame(rng, 3.0), cfg, html_path=path)

    assert result.report_path == str(path)
    html = path.read_text(encoding="utf-8")
    checked = ["moved", "still", "colour", "prediction_proba", "y"]
    for column in checked:
        assert html.count(f"Drift in column '{column}'") == 1, column
        assert html.count(f'"title": "Value Drift for column {column}"') == 1, column
    # one summary over all the columns' tests, with Evidently's own verdicts
    summaries = re.findall(r'"counters": (\[\{"value": "\d+", "label": "SUCCESS"\}[^\]]*\])', html)
    assert len(summaries) == 1
    counts = {c["label"]: int(c["value"]) for c in json.loads(summaries[0])}
    assert counts["FAIL"] == 1  # moved
    assert counts["SUCCESS"] == len(checked) - 1
