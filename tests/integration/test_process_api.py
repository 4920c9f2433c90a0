"""``GET /api/v1/process`` and the console's Process page: the module's home (the demo model's
config, an empty audit trail), the session's Prefect server, tokens from the identity store.
Nothing is trained: a report of nothing must still answer, and say there is nothing to chart;
then a planted history (``tests/support/process_history.py``) fills the charts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlsteward.api.app import create_app
from mlsteward.api.console.session import COOKIE
from mlsteward.identity import Role, clear_cache, identity_store, local_principal
from tests.support.governance import MODEL
from tests.support.process_history import write_synthetic_history

API = "/api/v1/process"


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def viewer_token(mlsteward_home: Path) -> str:
    clear_cache()
    with identity_store() as store:
        store.add_principal("vera", kind="user", roles=[Role.VIEWER.value], by=local_principal())
        return store.create_token("user:vera", by=local_principal(), description="tests")[1]


@pytest.fixture(scope="module")
def client(viewer_token: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_reader_gets_the_report_of_every_model_and_all_of_them(
    client: TestClient, viewer_token: str
) -> None:
    # a quarter before anything happened (the session's Prefect server holds other modules' runs)
    quiet = {"since": "2020-01-01", "until": "2020-04-01"}
    answer = client.get(API, params=quiet, headers=bearer(viewer_token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["format"] == "mlsteward-process/1"
    assert set(body["scopes"]) == {"all", MODEL}
    for scope in body["scopes"].values():
        assert scope["charts"] == [] and scope["special_causes"] == []
        assert scope["metrics"]["versions_validated"] == 0
    one = client.get(
        API, params={"model": MODEL, "since": "2026-01-01"}, headers=bearer(viewer_token)
    )
    assert one.status_code == 200, one.text
    assert list(one.json()["scopes"]) == [MODEL]
    assert one.json()["since"].startswith("2026-01-01T00:00:00")


def test_the_report_needs_a_token(client: TestClient) -> None:
    answer = client.get(API)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_an_unknown_model_is_a_404_naming_the_known_ones(
    client: TestClient, viewer_token: str
) -> None:
    answer = client.get(API, params={"model": "no_such_model"}, headers=bearer(viewer_token))
    assert answer.status_code == 404, answer.text
    assert "no_such_model" in answer.json()["error"] and MODEL in answer.json()["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-06-01", "until": "2026-05-01"}, "since"),
    ],
)
def test_a_bad_period_is_a_422_naming_the_field(
    client: TestClient, viewer_token: str, params: dict[str, str], field: str
) -> None:
    answer = client.get(API, params=params, headers=bearer(viewer_token))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert answer.json()["error"].startswith(f"{field}: ")


def test_the_console_page_says_there_is_nothing_to_chart(
    client: TestClient, viewer_token: str
) -> None:
    """Each scope has its section, its figures and no picture; an unknown model is the
    console's refusal page."""
    client.cookies.set(COOKIE, viewer_token, path="/ui")
    try:
        page = client.get("/ui/process?since=2020-01-01&until=2020-04-01")
        assert page.status_code == 200, page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        for scope in ("all", MODEL):
            assert f'id="scope-{scope}"' in page.text
        assert page.text.count("Nothing to chart in this period") == 2
        assert "<img" not in page.text and "No flow run finished in the period." in page.text
        assert 'aria-current="page">Process' in page.text
        missing = client.get("/ui/process/pictures/all/lead_time_to_decision.svg")
        assert missing.status_code == 404 and "no process chart" in missing.text
        refused = client.get("/ui/process", params={"model": "no_such_model"})
        assert refused.status_code == 404 and "Not found" in refused.text
        assert "unknown model &#39;no_such_model&#39;" in refused.text
        bad = client.get("/ui/process", params={"until": "soon"})
        assert bad.status_code == 422 and "until: " in bad.text
    finally:
        client.cookies.clear()


def test_a_planted_history_fills_the_page_and_its_pictures_load(
    client: TestClient, viewer_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fourteen weeks whose lead time quadruples after the tenth: the special cause is on the
    page and in the API's answer, and the charts and the rejection Pareto load as SVG."""
    url = f"sqlite:///{tmp_path}/audit.db"
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", url)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    write_synthetic_history(
        url,
        models=[MODEL],
        start=start,
        weeks=14,
        versions_per_week=2,
        shift_at=start + timedelta(weeks=10),
        lead_time_hours=(10.0, 40.0),
        gate_failure_rate=(0.3, 0.3),
        seed=3,
    )
    period = {"model": MODEL, "since": "2024-01-01", "until": "2024-04-15"}
    body = client.get(API, params=period, headers=bearer(viewer_token)).json()
    causes = body["scopes"][MODEL]["special_causes"]
    assert any(c["chart"] == "lead_time_to_decision" for c in causes), causes
    client.cookies.set(COOKIE, viewer_token, path="/ui")
    try:
        page = client.get("/ui/process", params=period)
        assert page.status_code == 200, page.text
        assert "Special causes" in page.text and "earlier in the period" in page.text
        sources = re.findall(r'<img src="([^"]+)"', page.text)
        wanted = [s for s in sources if "/lead_time_to_decision.svg" in s or "/rejections.svg" in s]
        assert len(wanted) == 2, sources
        for src in wanted:
            picture = client.get(src.replace("&amp;", "&"))
            assert picture.status_code == 200, picture.text
            assert picture.headers["content-type"].startswith("image/svg+xml")
            assert picture.text.startswith("<svg") and "<script" not in picture.text
    finally:
        client.cookies.clear()
