"""A training run started the way a person starts one: in the Prefect UI of the local platform,
in a real (headless) Chromium, through the deployment's Run → Custom run form with a parameter
changed. The run must reach the platform's worker, complete, and register a model version that
records the form's value, and the deployment page is kept as a screenshot."""

from __future__ import annotations

import contextlib
import os
import re
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from playwright.sync_api import Page, sync_playwright

from mlsteward.platform import processes
from tests.conftest import REPO_ROOT
from tests.support.platform import (
    Platform,
    assert_nothing_left,
    get_json,
    post,
    service_processes,
)

# boots the whole platform with `make up`: run by `make test-platform` (and CI), not `make test`
pytestmark = pytest.mark.platform

# Debian's package by default; MLSTEWARD_CHROMIUM names another Chromium-based browser (e.g. the
# google-chrome that hosted CI runners ship).
CHROMIUM = Path(os.environ.get("MLSTEWARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
FLOW, DEPLOYMENT = "train-model", "train-heart-disease"
MODEL = "heart_disease"
# The worker asks for work every PREFECT_WORKER_QUERY_SECONDS (10 s by default), then starts a
# Python process that imports the stack (~7 s) and trains 4,000 rows with one trial and runs the
# gates (~6 s on 2 busy cores): generous, so a slow machine fails on a real error, not the clock.
RUN_TIMEOUT = 300.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium_executable() -> Path:
    """Debian's Chromium; Playwright cannot download its own browsers here, so it is required."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: this test drives Debian's Chromium with Playwright. Install "
            "it with `sudo apt-get install chromium` (.ci/run does so in CI), or point "
            "MLSTEWARD_CHROMIUM at another Chromium-based browser."
        )
    return CHROMIUM


def ingest(platform: Platform, source: Path) -> None:
    """Give the platform's home a data snapshot, as a person would from a shell."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", "ingest", MODEL, "--source", str(source)],
        cwd=REPO_ROOT,
        env=platform.client_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def start_custom_run(
    page: Page, platform: Platform, deployment_id: str
) -> tuple[dict[str, Any], datetime]:
    """Deployments → train-heart-disease → Run → Custom run, max_evals set to 1, Submit.

    Returns the flow run as the server answered the browser's request, and when Submit was
    clicked.
    """
    page.goto(platform.url("PREFECT", "/deployments"))
    # more deployments than one page lists: find it as a person would, with the search box
    page.get_by_placeholder("Search deployments").fill(DEPLOYMENT)
    page.get_by_role("link", name=DEPLOYMENT, exact=True).click()
    page.wait_for_url(f"**/deployments/deployment/{deployment_id}*")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run").click()
    page.wait_for_url(f"**/deployments/deployment/{deployment_id}/run*")

    # `int | None` is a choice of type in the form: pick int, then type the number.
    max_evals = page.locator(".schema-form-property").filter(
        has=page.locator(".schema-form-property__label", has_text=re.compile(r"^max_evals\b"))
    )
    max_evals.get_by_role("button", name="int", exact=True).click()
    max_evals.locator("input[type=number]").fill("1")

    def creates_run(response: Any) -> bool:
        return response.request.method == "POST" and response.url.endswith(
            f"/deployments/{deployment_id}/create_flow_run"
        )

    submitted_at = datetime.now(UTC)
    for _ in range(3):
        with page.expect_response(creates_run) as created:
            page.get_by_role("button", name="Submit", exact=True).click()
        response = created.value
        # Prefect answers 503 while its SQLite database is locked by its own services (seen on
        # a loaded 2-core machine); the UI keeps the form and a person submits again.
        if response.status != 503:
            break
        time.sleep(2)
    assert response.ok, f"create_flow_run answered HTTP {response.status}: {response.text()}"
    run = response.json()
    # The UI confirms the run by name (its toast may be mounted twice) and returns to the
    # deployment page.
    page.locator(".toast-flow-run-create").get_by_text(run["name"], exact=True).first.wait_for()
    page.wait_for_url(f"**/deployments/deployment/{deployment_id}*")
    return run, submitted_at


def wait_for_final_state(api: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    run = get_json(f"{api}/flow_runs/{run_id}")
    while run["state_type"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1.0)
        run = get_json(f"{api}/flow_runs/{run_id}")
    return run


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_custom_run_from_the_prefect_ui(platform: Platform, small_cohort_path: Path) -> None:
    chromium = chromium_executable()
    up = platform.make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    pids = platform.pids()
    family = set().union(*service_processes(pids).values())
    api = platform.url("PREFECT", "/api")
    deployment = get_json(f"{api}/deployments/name/{FLOW}/{DEPLOYMENT}")
    ingest(platform, small_cohort_path)

    screenshot = platform.home / "screenshots" / f"{DEPLOYMENT}.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)  # a cold UI on busy cores
        try:
            created, clicked_at = start_custom_run(page, platform, deployment["id"])
            run = wait_for_final_state(api, created["id"])
            # The deployment page as it stands after the run, with the run in its list.
            page.reload()
            row = page.locator(".flow-run-list-item").filter(
                has=page.locator(f'a[href="/runs/flow-run/{created["id"]}"]')
            )
            row.wait_for()
            shown_state = row.locator(".state-badge").inner_text().strip()
            page.screenshot(path=screenshot)
        except Exception as exc:
            # Where the UI stood when a step failed: the first thing to look at when it changes.
            failure = screenshot.with_name("failure.png")
            with contextlib.suppress(Exception):
                page.screenshot(path=failure, full_page=True)
                exc.add_note(f"the page at that moment: {failure}")
            raise
        finally:
            browser.close()

    assert png_size(screenshot) == (VIEWPORT["width"], VIEWPORT["height"]), screenshot
    assert screenshot.stat().st_size > 20_000, f"{screenshot} looks blank"
    print(f"screenshot of the deployment page: {screenshot}")

    # Exactly one run was created since the click: the form's, on this deployment.
    since_click = [
        r["id"]
        for r in post(
            f"{api}/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}},
        )
        if datetime.fromisoformat(r["created"]) >= clicked_at
    ]
    assert since_click == [created["id"]], since_click
    assert run["deployment_id"] == deployment["id"]
    assert run["parameters"]["max_evals"] == 1, run["parameters"]
    worker_log = platform.home / "logs" / "prefect-worker.log"
    assert run["state_type"] == "COMPLETED", (
        f"flow run {run['id']} is {run['state_type']} ({run['state_name']}) after at most "
        f"{RUN_TIMEOUT:.0f} s; the worker's log ({worker_log}):\n"
        f"{processes.tail(worker_log, 40)}\nscreenshot: {screenshot}"
    )
    assert shown_state == "Completed", f"the deployment page shows the run as {shown_state!r}"

    # The registry of this home has the version, made by this flow run with one trial.
    # Both URIs explicitly: MLflow's process-wide registry URI may still name another test's.
    store = f"sqlite:///{platform.home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"], [v.version for v in versions]
    version = client.get_model_version(MODEL, "1")
    tags = client.get_run(version.run_id).data.tags
    assert tags.get("mlsteward.prefect_flow_run_id") == run["id"], tags
    assert version.tags.get("lineage.max_evals") == "1", version.tags

    down = platform.make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert_nothing_left(platform, pids, family)
