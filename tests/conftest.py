"""Shared fixtures: every test gets its own MLSTEWARD_HOME, so state never leaks between tests.

Each folder is a marker (``pytest -m unit``, ``-m integration``, ``-m e2e``): unit tests are pure
functions and the real stack on small data in-process; integration tests add the session's
Prefect test harness; end-to-end tests start the real servers and drive them from outside;
fault tests (``make test-faults``) break those servers, disks and processes on purpose and
record what happened for the reliability page (those marked ``fault_subset`` also run in
``make test``).

The fixtures that make resources (databases, profiles, the platform, trained stacks, the
prediction service) are plugins in ``tests/fixtures/``; pytest takes ``pytest_plugins`` only
from this, the root conftest.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("unit", "integration", "e2e", "faults")

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.production",
    "tests.fixtures.platform",
    "tests.fixtures.shared_home",
    "tests.fixtures.serving",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("FEAST_USAGE", "False")
# XGBoost's nthread=0 means every core, and its threads meet at a barrier many times a round:
# with one xdist worker per core, two workers' threads on two cores wait on each other (the same
# trials measured 2-10x slower under contention). One thread per worker process keeps the
# cores busy with work; a test that sets nthread itself still gets what it asks for.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Drawing a version's pictures into its Prefect artifact costs about a second a training run,
# and the suite trains some ninety times; the modules about pictures turn them back on
# (tests/integration/test_model_card_pictures_flow.py), and the card and the console draw
# from the stored report regardless.
os.environ.setdefault("MLSTEWARD_ARTIFACT_PICTURES", "false")


def _memoise_mlflow_schema() -> None:
    """Every test home gets a new MLflow store, and MLflow builds each new SQLite store by
    running its ~60 Alembic migrations: 1.4 s a store on an idle core, paid by a few hundred
    tests. The first store a process builds runs them for real; its schema (tables, indexes,
    the Alembic revision) is kept as SQL, and each later new SQLite store is given exactly
    that. Stores on PostgreSQL, and every process the tests start, migrate as usual."""
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils

    real = utils._initialize_tables
    schema: list[str] = []

    def initialize(engine: sqlalchemy.engine.Engine) -> None:
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            real(engine)
            return
        if not schema:
            with tempfile.TemporaryDirectory() as tmp:
                template = sqlalchemy.create_engine(f"sqlite:///{tmp}/template.db")
                real(template)
                template.dispose()
                with closing(sqlite3.connect(f"{tmp}/template.db")) as conn:
                    schema.append("\n".join(conn.iterdump()))
        with closing(sqlite3.connect(database)) as conn:
            conn.executescript(schema[0])

    utils._initialize_tables = initialize


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema_once() -> None:
    _memoise_mlflow_schema()


@pytest.fixture(autouse=True)
def mlsteward_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlsteward_home"
    monkeypatch.setenv("MLSTEWARD_HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg_state"))  # audit anchors live there
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
    monkeypatch.delenv("MLSTEWARD_CONFIG_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLSTEWARD_PROFILE", raising=False)
    return home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the folder it lives in, so no file has to remember to."""
    for item in items:
        folder = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture
def small_cohort_path(tmp_path: Path) -> Path:
    """A small built-in cohort on disk (the real generator, few rows so tests stay quick)."""
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    return write_dataset(generate_cohort(n_rows=4_000, seed=7), tmp_path / "cohort.parquet")
