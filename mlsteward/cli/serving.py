"""Serving commands: run the prediction service (``serve``), ask it (``predict``), and canary a
version through it (``rollout``)."""

from __future__ import annotations

import os

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, ModelName, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.errors import MlstewardError
from mlsteward.identity.roles import Permission

commands = typer.Typer()

ServingUrlOpt = typer.Option(
    None, "--url", help="The prediction service (default: MLSTEWARD_SERVING_URL / make up)."
)


@commands.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8800, help="port"),
    model: list[str] = typer.Option(None, "--model", help="serve only this model (repeatable)"),
) -> None:
    """Run the prediction service: POST /v1/models/MODEL/predict, /readyz, /metrics, /docs
    (make up runs it for you)."""
    from mlsteward.serving.__main__ import main as run_serving

    args = ["--host", host, "--port", str(port)]
    for m in model or []:
        args += ["--model", m]
    raise typer.Exit(run_serving(args))


@commands.command()
def predict(
    model: ModelName,
    entity: list[str] = typer.Option(..., "--entity", "-e", help="Entity id (repeatable)."),
    explain: bool = typer.Option(False, "--explain", help="Add the top SHAP contributions."),
    url: str | None = ServingUrlOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Ask the running prediction service about entities (features from the online store),
    with MLSTEWARD_SERVING_TOKEN or MLSTEWARD_TOKEN as the bearer token."""
    import httpx

    from mlsteward.config.settings import serving_headers, serving_url

    base = (url or serving_url()).rstrip("/")
    ids: list[int | str] = [int(e) if e.lstrip("-").isdigit() else e for e in entity]

    def action() -> dict:
        try:
            r = httpx.post(
                f"{base}/v1/models/{model}/predict",
                json={"entity_ids": ids, "explain": explain},
                headers=serving_headers(),
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise MlstewardError(
                f"no prediction service at {base}: {exc} (make up starts it)"
            ) from exc
        if r.status_code != 200:
            json_reply = "json" in r.headers.get("content-type", "")
            detail = r.json().get("detail") if json_reply else r.text
            hint = ""
            if r.status_code in (401, 403):
                hint = (
                    " (set MLSTEWARD_TOKEN to a token whose principal may predict: "
                    "mlsteward tokens create)"
                )
            raise MlstewardError(f"HTTP {r.status_code} from {base}: {detail}{hint}")
        return r.json()

    run(as_json, action, _predict_human)


def _predict_human(p: dict) -> str:
    """A classifier's rows as probability, label and threshold, explained in log-odds; a
    regression model's (no probability in its answer) as the predicted value, explained in
    the label's units."""
    lines = []
    for row in p["predictions"]:
        regression = "probability" not in row
        if regression:
            lines.append(f"{row['entity_id']}: {row['prediction']:.4g}  v{row['version']}")
        else:
            lines.append(
                f"{row['entity_id']}: p={row['probability']:.3f} label {row['label']} "
                f"(threshold {row['threshold']:.3f})  v{row['version']}"
            )
        exp = row.get("explanation")
        if exp:
            top = ", ".join(f"{c['feature']} {c['value']:+.3f}" for c in exp["contributions"])
            if regression:
                lines.append(f"    base {exp['base_value']:.4g} in the label's units; {top}")
            else:
                lines.append(f"    base {exp['base_value']:+.3f} log-odds; {top}")
    return "\n".join(lines)


@commands.command()
def rollout(
    model: ModelName,
    version: str | None = typer.Argument(None, help="Version to canary (default: challenger)."),
    url: str | None = ServingUrlOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Canary-release a validated version through the prediction service: each rollout step
    judged on the guardrails, rolled back on a breach, promoted by the policy after the last.
    Exits 1 unless promoted."""
    use_local_platform()
    from flows.rollout import rollout_flow

    if url:
        os.environ["MLSTEWARD_SERVING_URL"] = url
    outcome = run(
        as_json,
        lambda: rollout_flow(
            model=model,
            version=version,
            requested_by=acting_as(Permission.ROLLOUT, model).identity,
        ),
        _rollout_human,
    )
    if outcome.get("decision") != "promoted":
        raise typer.Exit(1)


def _rollout_human(p: dict) -> str:
    lines = [
        f"{p['model']} v{p['version']} against champion v{p['champion']} "
        f"(rollout {p['rollout_id']}): {p['decision'].upper().replace('_', ' ')}"
    ]
    for s in p.get("steps", []):
        verdict = s.get("verdict") or {}
        checks = ", ".join(
            f"{c['name']} {'ok' if c['passed'] else 'BREACH'}"
            + ("" if c.get("evaluable", True) else " (not enough data)")
            for c in verdict.get("checks", [])
        )
        lines.append(f"  step {s.get('step')}: {s.get('fraction', 0):.0%}  {checks}")
    if p.get("reason"):
        lines.append(f"  {p['reason']}")
    return "\n".join(lines)
