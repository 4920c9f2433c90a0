"""The platform's command line (``python -m mlsteward.platform up|down|status``, what ``make up``,
``make down`` and ``make status`` run): the report a person reads, or ``--json``.

A credential ``up`` has just made is printed here once, in the text report only; ``--json``
and every later ``up`` name its file instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mlsteward.config import profiles
from mlsteward.platform.credentials import Credential, Credentials
from mlsteward.platform.lifecycle import UpReport, down, status, up
from mlsteward.platform.mlflow_auth import GOVERNANCE_USER
from mlsteward.platform.services import PlatformConfig, PlatformError, ServiceState

MLFLOW_GRANT = "mlsteward mlflow-access grant"


def urls(cfg: PlatformConfig, states: list[ServiceState]) -> dict[str, str | None]:
    """Where a person opens each service; the webhook and the governance API only when they
    run (a checkout may lack them)."""
    by_name = {s.name: s for s in states}
    api = by_name["api"]
    return {
        "prefect_ui": by_name["prefect-server"].url,
        "prefect_api": cfg.prefect_api_url,
        "mlflow_ui": by_name["mlflow"].url,
        "webhook": by_name["gateway"].url if by_name["gateway"].running else None,
        "predictions": by_name["serving"].url,
        "governance_api": f"{api.url}/api/v1" if api.running else None,
    }


def _service_line(state: ServiceState, action: str | None = None) -> str:
    what = action or ("running" if state.running else "stopped")
    pid = f"pid {state.pid}" if state.pid else ""
    line = f"  {state.name:<15} {what:<16} {pid:<10} {state.url or ''}".rstrip()
    return line + (f"\n  {'':<15} {state.note}" if state.note else "")


def _print_up(cfg: PlatformConfig, report: UpReport) -> None:
    print(f"mlsteward platform (state in {cfg.home}; profile {report.profile})")
    for state in report.services:
        print(_service_line(state, report.actions[state.name]))
    print(f"  {report.deployments}")
    links = urls(cfg, report.services)
    print()
    print(f"Prefect UI   {links['prefect_ui']}")
    print(f"MLflow UI    {links['mlflow_ui']}   (a login is needed: {MLFLOW_GRANT} NAME)")
    print(f"Webhook      {links['webhook'] or 'not started (see gateway above)'}")
    print(f"Predictions  {links['predictions']}/v1/models/<model>/predict   (docs: /docs)")
    api = links["governance_api"]
    print(f"Governance   {api + '   (docs: /docs; a token is needed)' if api else 'not started'}")
    if api:
        print(f"Console      {api.rstrip('/')}/ui   (sign in with a token)")
    if report.credentials is not None:
        print_credentials(report.credentials)
    profile = os.environ.get("MLSTEWARD_PROFILE")
    same = f" (with MLSTEWARD_PROFILE={profile})" if profile else ""
    print(f"\nmlsteward commands find this Prefect server by themselves{same}; other clients:")
    print(f"  export PREFECT_API_URL={cfg.prefect_api_url}")
    print(f"Logs: {cfg.log_dir}   pids: {cfg.run_dir}")
    print("Stop with: make down   (or python -m mlsteward.platform down)")


def print_credentials(creds: Credentials) -> None:
    """The admin token and webhook secret in full when ``up`` has just made them, else where
    they are: what a person needs to use them, once."""
    admin, webhook = creds.admin_token, creds.webhook_secret
    use_admin = f"export MLSTEWARD_TOKEN=$(cat {admin.path})"
    print()
    _print_credential(
        admin,
        later=use_admin,
        first=["For the governance API and the CLI, as user:admin (role admin):", use_admin],
    )
    _print_credential(
        webhook,
        later=f"{webhook.path}   (CI signs webhook requests with it)",
        first=[
            "CI must sign its webhook requests with it (e.g. as the repository secret",
            "MLSTEWARD_WEBHOOK_SECRET); for mlsteward trigger on this machine:",
            f"export MLSTEWARD_WEBHOOK_SECRET=$(cat {webhook.path})",
        ],
    )
    if (key := creds.signing_key) is not None:
        made = "made now; " if key.created else ""
        print(f"{'Signing key':<15} governance key {key.key_id} ({made}private key {key.private})")
        print(f"{'':<16}verifiers need only {key.public} (mlsteward keys show)")
    if (mlflow := creds.mlflow_password) is not None:
        # Never printed: the platform's processes get it; people get logins of their own.
        made = "made now, " if mlflow.created else ""
        print(f"{'MLflow account':<15} {GOVERNANCE_USER} ({made}password in {mlflow.path})")
        print(f"{'':<16}the platform's own; people get a login with {MLFLOW_GRANT} NAME")
        if mlflow.note:
            print(f"{'':<16}{mlflow.note}")


def _print_credential(cred: Credential, *, later: str, first: list[str]) -> None:
    title = cred.what[0].upper() + cred.what[1:]
    if cred.created and cred.value is not None:
        made = f"; {cred.note}" if cred.note else ""
        print(f"{title}: made now and shown only this once (mode 0600 in {cred.path}{made})")
        print(f"\n  {cred.value}\n")
        print("\n".join(f"  {line}" for line in first))
    elif cred.source != "file":
        print(f"{title:<15} from {cred.source} (it wins over {cred.path})")
    else:
        print(f"{title:<15} {later if cred.value else 'none'}")
        if cred.note:
            print(f"{'':<16}{cred.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsteward.platform",
        description="Start, stop or show the local platform (Prefect, worker, MLflow, gateway, "
        "prediction service).",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    try:
        cfg = PlatformConfig.from_env()
        if args.command == "up":
            report = up(cfg)
            doc: dict[str, Any] = {
                "home": str(cfg.home),
                "services": [
                    {**s.to_dict(), "action": report.actions[s.name]} for s in report.services
                ],
                "deployments": report.deployments,
                "profile": report.profile,
                "urls": urls(cfg, report.services),
            }
            if report.credentials is not None:
                doc["credentials"] = report.credentials.to_dict()
            if not args.json:
                _print_up(cfg, report)
        elif args.command == "down":
            stopped = down(cfg)
            doc = {"home": str(cfg.home), "services": stopped}
            if not args.json:
                for entry in stopped:
                    pid = f"pid {entry['pid']}" if entry["pid"] else ""
                    print(f"  {entry['name']:<15} {entry['action']} {pid}".rstrip())
        else:
            states = status(cfg)
            # A service whose module is not in this checkout does not count as down.
            expected = [s for s in states if not (not s.running and s.note)]
            doc = {
                "home": str(cfg.home),
                "running": all(s.running for s in expected),
                "services": [s.to_dict() for s in states],
                "urls": urls(cfg, states),
            }
            if not args.json:
                profile = profiles.active().name
                print(f"mlsteward platform (state in {cfg.home}; profile {profile})")
                for state in states:
                    print(_service_line(state))
    except PlatformError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **doc}, indent=2))
    return 0
