"""The prediction service on the real stack: verified MLflow versions, Feast online store,
prediction log, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsteward.synthetic import generate_cohort, write_dataset
from tests.integration.governance_support import MODEL
from tests.integration.serving_support import module_home, serving, train_two_versions


@pytest.fixture(scope="module")
def mlsteward_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with module_home(tmp_path_factory, "serving") as home:
        yield home


@pytest.fixture(scope="module")
def stack(mlsteward_home: Path) -> dict[str, Any]:
    cohort = write_dataset(
        generate_cohort(n_rows=3_000, seed=5), mlsteward_home.parent / "c.parquet"
    )
    return train_two_versions(cohort)


def test_predict_by_entity_and_by_values(stack: dict[str, Any]) -> None:
    with serving() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        ids = stack["ids"][:3]
        r = client.post(f"/v1/models/{MODEL}/predict", json={"entity_ids": ids, "explain": True})
        assert r.status_code == 200, r.text
        out = r.json()
        print(out)
        assert [p["entity_id"] for p in out["predictions"]] == ids
