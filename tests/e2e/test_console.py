"""The governance console as people use it: a real ``mlsteward api`` (uvicorn) over the module's
trained home, driven in headless Chromium with Playwright.

A trainer sees the approval queue's evidence without the buttons and a forged approval is
refused (by the console and by the API); an approver approves with a reason, the champion
changes on the model page and the approval shows in the audit view; no request from any page
leaves 127.0.0.1; the pages read without JavaScript and the approval works from the keyboard.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from prefect.settings import PREFECT_API_URL

from mlsteward.alerts.engine import observe
from mlsteward.alerts.observation import Observation
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.governance import approving, canary, registry
from mlsteward.identity import Role, clear_cache, identity_store, local_principal
from tests.conftest import REPO_ROOT
from tests.e2e.test_prefect_ui import CHROMIUM_ARGS, chromium_executable
from tests.support.governance import MODEL, write_config
from tests.support.platform import free_port
from tests.support.serving import FAST_TUNING
from tests.support.stack import stop_process, wait_for

PEOPLE = {Role.TRAINER: "user:tom", Role.APPROVER: "user:ann", Role.VIEWER: "user:vera"}
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """The trained stack runs its flows in this process, and e2e tests have no session
    harness: a Prefect test server for the module (a temporary one may not start within its
    20 s on a busy machine with a fresh database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def stack(prefect_api: None, champion_and_challenger: dict[str, Any]) -> dict[str, Any]:
    return champion_and_challenger


@pytest.fixture(scope="module")
def console(
    stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The API on a free port; v2 waits for one approval under the manual policy, asked for
    by the trainer who trained it."""
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    write_config(
        config_dir, tuning=FAST_TUNING, promotion={"policy": "manual"}, approvals={"required": 1}
    )
    clear_cache()
    operator = local_principal()
    tokens: dict[Role, str] = {}
    principals = {}
    with identity_store() as store:
        for role, identity in PEOPLE.items():
            kind, name = identity.split(":")
            principals[role] = store.add_principal(name, kind=kind, roles=[role.value], by=operator)
            tokens[role] = store.create_token(identity, by=operator, description="console")[1]
    v2 = stack["challenger"]
    with audit_store() as audit:
        approving.request(audit, principals[Role.TRAINER], get_model_config(MODEL), v2)
    port = free_port()
    out = tmp_path_factory.mktemp("console")
    log_path = out / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.api", "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT,
            env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with suppress(httpx.HTTPError):
                return httpx.get(f"{base}/api/v1/health").status_code == 200
            return False

        try:
            wait_for("the API to answer", healthy, 60)
            yield {
                "base": base,
                "tokens": tokens,
                **stack,
                "shots": out,
                "log": log_path,
            }
        finally:
            stop_process(proc)
            write_config(config_dir, tuning=FAST_TUNING)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_executable()), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Session:
    """One person's browser context, recording every URL its pages ask for."""

    def __init__(self, browser: Browser, base: str, javascript: bool = True) -> None:
        self.base = base
        self.context = browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))

    def sign_in(self, token: str) -> Page:
        page = self.page
        page.goto(f"{self.base}/ui/models")
        assert page.get_by_role("heading", name="Sign in").is_visible()
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.base}/ui/models")
        return page

    def shot(self, folder: Path, name: str) -> None:
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()

    def outside(self) -> list[str]:
        """Requests to anywhere but this server (data: URLs stay in the page)."""
        return [u for u in self.requested if not (u.startswith(self.base) or u.startswith("data:"))]


def test_without_a_token_the_console_asks_to_sign_in(console: dict[str, Any]) -> None:
    answer = httpx.get(f"{console['base']}/ui/models")
    assert answer.status_code == 401 and "Paste a token" in answer.text
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "form-action 'self'" in csp
    wrong = httpx.post(
        f"{console['base']}/ui/login", data={"token": "msw_not-a-token", "next": "/ui/models"}
    )
    assert wrong.status_code == 401 and "msw_not-a-token" not in wrong.text
    assert "set-cookie" not in wrong.headers
    htmx = httpx.get(f"{console['base']}/ui/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]


def test_a_trainer_sees_the_evidence_but_cannot_approve(
    console: dict[str, Any], browser: Browser
) -> None:
    base, v2 = console["base"], console["challenger"]
    trainer = Session(browser, base)
    try:
        page = trainer.sign_in(console["tokens"][Role.TRAINER])
        assert page.get_by_role("link", name=MODEL).is_visible()
        assert page.get_by_text("1 waiting").is_visible()
        page.get_by_role("link", name="Approvals").click()
        queue = page.get_by_role("region", name=f"{MODEL} v{v2}")
        assert queue.is_visible()
        assert queue.get_by_text("Gate report, fairness tables and champion comparison").count()
        assert page.get_by_role("button", name=f"Approve v{v2}").count() == 0
        assert page.get_by_text("deciding needs the approver role").is_visible()
        trainer.shot(console["shots"], "approvals-trainer")
        # A forged approval with the trainer's own session and form token: the console decides
        # through the same core as the API, which refuses it with 403 and records the attempt.
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        forged = page.request.post(
            f"{base}/ui/approvals/{MODEL}/{v2}/approve",
            form={"reason": "ship it", "csrf": csrf or ""},
            max_redirects=0,
        )
        assert forged.status == 403, forged.text()
        assert "user:tom may not approve" in forged.text()
        no_token = page.request.post(
            f"{base}/ui/approvals/{MODEL}/{v2}/approve",
            form={"reason": "ship it"},
            max_redirects=0,
        )
        assert no_token.status == 403 and "csrf" in no_token.text()
        api = httpx.post(
            f"{base}/api/v1/models/{MODEL}/versions/{v2}/approve",
            json={"reason": "ship it"},
            headers={"Authorization": f"Bearer {console['tokens'][Role.TRAINER]}"},
        )
        assert api.status_code == 403 and api.json()["permission"] == "approve"
        assert trainer.outside() == []
    finally:
        trainer.close()
    with audit_store() as store:
        refused = store.query(action=Action.ACCESS_DENIED)
    assert any(r.actor == "user:tom" and r.details.get("permission") == "approve" for r in refused)
    assert registry.version_by_alias(MODEL, "champion").version == console["champion"]


def test_a_rollout_is_stopped_from_the_console_by_whoever_may(
    console: dict[str, Any], browser: Browser
) -> None:
    """The running canary shows its traffic share; an approver (no ``rollout`` permission)
    gets no stop button, a trainer stops it with a reason and traffic is back on the
    champion."""
    base, v2 = console["base"], console["challenger"]
    opened = canary.open_canary(MODEL, v2, 0.2)
    try:
        with audit_store() as store:
            store.append(
                Action.ROLLOUT_STARTED,
                model=MODEL,
                version=v2,
                actor=f"flow-run:{uuid.uuid4()} for user:tom",
                reason="canary",
                details={"rollout_id": opened.rollout_id, "champion": console["champion"],
                         "steps": [0.2, 0.5]},
            )  # fmt: skip
        approver = Session(browser, base)
        try:
            page = approver.sign_in(console["tokens"][Role.APPROVER])
            assert page.get_by_text(f"v{v2} at 20%").is_visible()  # the Models page
            page.goto(f"{base}/ui/rollouts")
            assert page.get_by_role("img", name="20% to the challenger").is_visible()
            assert page.get_by_role("button", name="Stop rollout").count() == 0
        finally:
            approver.close()
        trainer = Session(browser, base)
        try:
            page = trainer.sign_in(console["tokens"][Role.TRAINER])
            page.goto(f"{base}/ui/rollouts")
            page.get_by_label("Reason for stopping").fill("p99 looks off")
            page.get_by_role("button", name="Stop rollout").click()
            page.wait_for_url(f"{base}/ui/rollouts?done=*")
            assert page.get_by_role("status").get_by_text("traffic is back").is_visible()
            assert page.get_by_text("aborted").first.is_visible()
            assert trainer.outside() == []
        finally:
            trainer.close()
        assert canary.read_target(MODEL).canary is None
        with audit_store() as store:
            stopped = store.query(model=MODEL, action=Action.ROLLOUT_ABORTED)[-1]
        assert stopped.actor == "user:tom" and "p99 looks off" in stopped.reason
    finally:
        if canary.read_target(MODEL).canary is not None:
            canary.close_canary(MODEL)


def test_an_approver_approves_and_the_champion_changes(
    console: dict[str, Any], browser: Browser
) -> None:
    base, v2 = console["base"], console["challenger"]
    approver = Session(browser, base)
    try:
        page = approver.sign_in(console["tokens"][Role.APPROVER])
        page.get_by_role("link", name="Approvals").click()
        page.wait_for_url(f"{base}/ui/approvals")
        item = page.get_by_role("region", name=f"{MODEL} v{v2}")
        item.get_by_text("Gate report, fairness tables and champion comparison").click()
        assert item.get_by_text("Champion comparison").first.is_visible()
        approver.shot(console["shots"], "approvals-approver")
        # From the keyboard: the reason field, then Tab to the Approve button and Enter.
        item.get_by_label("Reason").focus()
        page.keyboard.type("gates passed; fairness within limits")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        assert focused == f"Approve v{v2}"
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/ui/approvals?done=*")
        assert page.get_by_role("status").get_by_text("approve recorded (promoted)").is_visible()
        page.get_by_role("link", name="Models").click()
        page.get_by_role("link", name=MODEL).click()
        page.wait_for_url(f"{base}/ui/models/{MODEL}")
        champion_tile = page.locator(".tile", has_text="champion").first
        assert champion_tile.get_by_role("link", name=f"v{v2}").is_visible()
        approver.shot(console["shots"], "model")
        page.get_by_role("link", name="Audit").click()
        page.get_by_label("Action").select_option("approval_granted")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**action=approval_granted**")
        row = page.locator("#records tbody tr").first
        assert "user:ann" in row.inner_text() and "fairness within limits" in row.inner_text()
        assert page.get_by_text("chain intact").is_visible()
        approver.shot(console["shots"], "audit")
        assert approver.outside() == [], approver.outside()
    finally:
        approver.close()
    assert registry.version_by_alias(MODEL, "champion").version == v2


def test_a_version_page_shows_its_pictures(console: dict[str, Any], browser: Browser) -> None:
    """Every picture of the version loads from this server as an SVG image with a title and
    labelled axes, and its text alternative is on the page."""
    base, v2 = console["base"], console["challenger"]
    viewer = Session(browser, base)
    try:
        page = viewer.sign_in(console["tokens"][Role.VIEWER])
        page.goto(f"{base}/ui/models/{MODEL}/versions/{v2}")
        page.wait_for_load_state("networkidle")
        images = page.locator("figure img")
        sources = [images.nth(i).get_attribute("src") or "" for i in range(images.count())]
        keys = {src.rsplit("/", 1)[-1] for src in sources}
        assert {"roc.svg", "pr.svg", "calibration.svg", "shap-importance.svg"} <= keys, keys
        loaded = page.evaluate(
            "[...document.querySelectorAll('figure img')].map(i => i.naturalWidth)"
        )
        assert loaded and all(w > 0 for w in loaded), loaded
        roc = page.request.get(f"{base}{next(s for s in sources if s.endswith('/roc.svg'))}")
        assert roc.headers["content-type"].startswith("image/svg+xml")
        assert "False-positive rate" in roc.text() and "True-positive rate" in roc.text()
        assert page.get_by_role("img", name="ROC").first.is_visible()
        viewer.shot(console["shots"], "version")
        assert viewer.outside() == []
    finally:
        viewer.close()


def test_pages_read_without_javascript(console: dict[str, Any], browser: Browser) -> None:
    base = console["base"]
    viewer = Session(browser, base, javascript=False)
    try:
        page = viewer.sign_in(console["tokens"][Role.VIEWER])
        page.goto(f"{base}/ui/models/{MODEL}/versions/{console['challenger']}")
        assert page.get_by_role("heading", name="Lineage").is_visible()
        assert page.get_by_role("link", name="Check the artifact's digest").is_visible()
        page.get_by_role("link", name="Check the artifact's digest").click()
        assert page.get_by_text("verified").first.is_visible()
        page.goto(f"{base}/ui/rollouts")
        assert page.get_by_role("heading", name="Rollouts").is_visible()
        assert viewer.outside() == []
    finally:
        viewer.close()


def test_open_alerts_show_on_the_models_and_model_pages(
    console: dict[str, Any], browser: Browser
) -> None:
    """An incident of a standing rule is a pill on the Models page and a row of the Model
    page's alerts, until it resolves."""
    base = console["base"]
    cfg = get_model_config(MODEL)
    breach = Observation(
        rule="skew",
        breached=True,
        subject="cholesterol",
        summary="cholesterol differs from the offline store on 12.0% of rows (limit 1%)",
        value=0.12,
        limit=0.01,
        version=console["champion"],
    )
    observe(cfg, [breach, breach], actor="service:monitor")
    viewer = Session(browser, base)
    try:
        page = viewer.sign_in(console["tokens"][Role.VIEWER])
        page.get_by_role("link", name="skew cholesterol").click()
        page.wait_for_url(f"{base}/ui/models/{MODEL}#alerts")
        assert page.get_by_role("heading", name="Alerts").is_visible()
        row = page.locator("#alerts + .tablewrap tbody tr").first
        assert "cholesterol" in row.inner_text() and "2" in row.inner_text()
        page.get_by_text("Latest alerts").click()
        assert page.get_by_text("differs from the offline store on 12.0%").first.is_visible()
        viewer.shot(console["shots"], "model-alerts")
        assert viewer.outside() == []
        observe(cfg, [dataclasses.replace(breach, breached=False)], actor="service:monitor")
        page.goto(f"{base}/ui/models/{MODEL}")
        assert page.get_by_text("No open incidents.").is_visible()
    finally:
        viewer.close()


def test_the_process_page_shows_each_scope_and_its_charts(
    console: dict[str, Any], browser: Browser
) -> None:
    """From the nav: a section for all models and one for the model, each with its figures
    and verdict; every chart loads from this server as an SVG image; an unknown model in the
    filter is the console's refusal page."""
    base = console["base"]
    viewer = Session(browser, base)
    try:
        page = viewer.sign_in(console["tokens"][Role.VIEWER])
        page.get_by_role("link", name="Process", exact=True).click()
        page.wait_for_url(f"{base}/ui/process")
        page.wait_for_load_state("networkidle")
        for scope in ("All models", MODEL):
            section = page.get_by_role("region", name=scope)
            assert section.is_visible()
            assert section.get_by_text("First-pass yield").is_visible()
            # two trainings are too few points for control limits: nothing is judged yet
            assert section.locator(".verdict").inner_text().startswith("Too few points to judge")
        images = page.locator("section.scope figure img")
        sources = [images.nth(i).get_attribute("src") or "" for i in range(images.count())]
        assert any("/pictures/all/" in s for s in sources), sources
        assert any(f"/pictures/{MODEL}/" in s for s in sources), sources
        loaded = page.evaluate(
            "[...document.querySelectorAll('section.scope figure img')].map(i => i.naturalWidth)"
        )
        assert loaded and all(w > 0 for w in loaded), loaded
        for src in sources[:2]:
            picture = page.request.get(f"{base}{src}")
            assert picture.status == 200
            assert picture.headers["content-type"].startswith("image/svg+xml")
            assert "<svg" in picture.text()
        viewer.shot(console["shots"], "process")
        refused = page.goto(f"{base}/ui/process?model=no_such_model")
        assert refused is not None and refused.status == 404
        assert page.get_by_role("heading", name="Not found").is_visible()
        assert page.get_by_text(f"known: {MODEL}").is_visible()
        assert viewer.outside() == []
    finally:
        viewer.close()
