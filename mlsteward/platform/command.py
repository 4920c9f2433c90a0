"""The platform's command line (``python -m mlsteward.platform up|down|status``, what ``make up``,
``make down`` and ``make status`` run): the report a person reads, or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mlsteward.config import profiles
from mlsteward.platform.lifecycle import UpReport, down, status, up
from mlsteward.platform.services import PlatformConfig, PlatformError, ServiceState


def urls(cfg: PlatformConfig, states: list[ServiceState]) -> dict[str, str | None]:
    """Where a person opens each service; the webhook only when the gateway runs."""
    by_name = {s.name: s for s in states}
    return {
        "prefect_ui": by_name["prefect-server"].url,
        "prefect_api": cfg.prefect_api_url,
        "mlflow_ui": by_name["mlflow"].url,
        "webhook": by_name["gateway"].url if by_name["gateway"].running else None,
        "predictions": by_name["serving"].url,
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
    print(f"MLflow UI    {links['mlflow_ui']}")
    print(f"Webhook      {links['webhook'] or 'not started (see gateway above)'}")
    print(f"Predictions  {links['predictions']}/v1/models/<model>/predict   (docs: /docs)")
    profile = os.environ.get("MLSTEWARD_PROFILE")
    same = f" (with MLSTEWARD_PROFILE={profile})" if profile else ""
    print(f"\nmlsteward commands find this Prefect server by themselves{same}; other clients:")
    print(f"  export PREFECT_API_URL={cfg.prefect_api_url}")
    print(f"Logs: {cfg.log_dir}   pids: {cfg.run_dir}")
    print("Stop with: make down   (or python -m mlsteward.platform down)")


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
            # A gateway that cannot run here (no module or no secret) does not count as down.
            expected = [s for s in states if not (s.name == "gateway" and s.note)]
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
