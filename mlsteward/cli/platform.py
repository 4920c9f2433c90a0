"""Platform commands: what is configured (``models``, ``profile``), the Prefect deployments
written from it (``deployments``), where state lives and what runs (``where``), housekeeping
(``gc``), the CI webhook (``gateway``, ``trigger``) and people's MLflow logins
(``mlflow-access``)."""

from __future__ import annotations

import os

import typer

from mlsteward.cli.output import JsonOpt, model_name, run
from mlsteward.cli.runtime import use_local_platform

commands = typer.Typer()


@commands.command()
def models(as_json: bool = JsonOpt) -> None:
    """List the models declared in config/models (validating every file), with their
    deployments."""
    from mlsteward.config.models import load_all_model_configs
    from mlsteward.platform.prefect_yaml import deployment_names, model_slug

    def action() -> dict:
        cfgs = load_all_model_configs()
        return {
            "models": [
                {
                    "name": c.name,
                    "task": c.task,
                    "features": len(c.features),
                    "source": c.source.path,
                    "deployments": deployment_names(c.name),
                }
                for c in cfgs.values()
            ]
        }

    def line(m: dict) -> str:
        # eleven names on one line: their shared suffix once, shell-brace style
        suffix = f"-{model_slug(m['name'])}"
        kinds = ",".join(d.removesuffix(suffix) for d in m["deployments"])
        return (
            f"{m['name']:<24} {m['task']:<22} {m['features']} features  {m['source']}  "
            f"deployments {{{kinds}}}{suffix}"
        )

    run(
        as_json, action, lambda p: "\n".join(map(line, p["models"])) or "no models in config/models"
    )


deployments_app = typer.Typer(
    help="The Prefect deployments: prefect.yaml and its Kubernetes variant, written from "
    "config/models.",
    no_args_is_help=True,
)
commands.add_typer(deployments_app, name="deployments")


@deployments_app.command("render")
def deployments_render(
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 naming each file that differs."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write prefect.yaml and deploy/prefect.kubernetes.yaml from the model configs: eleven
    deployments per model, its schedules from the config, then the model-independent ones
    (make deploy and make up run this first)."""
    from mlsteward.config.paths import project_root
    from mlsteward.platform.prefect_yaml import (
        RENDER_COMMAND,
        SHARED,
        declared_models,
        models_dir,
        stale_files,
        write,
    )
    from mlsteward.platform.services import PlatformError

    def action() -> dict:
        root = project_root()
        models = declared_models(models_dir(root))
        if check:
            stale = stale_files(root)
            if stale:
                raise PlatformError(
                    f"{', '.join(stale)} differ from config/models: run `{RENDER_COMMAND}`"
                )
            written: list[str] = []
        else:
            written = write(root)
        return {
            "written": written,
            "models": [m.to_dict() for m in models],
            "shared_deployments": [e.name for e in SHARED],
        }

    def human(p: dict) -> str:
        count = sum(len(m["deployments"]) for m in p["models"])
        what = (
            f"{len(p['models'])} model(s) with {count} deployments, "
            f"{len(p['shared_deployments'])} for all models"
        )
        if p["written"]:
            return f"wrote {', '.join(p['written'])} ({what})"
        return f"prefect.yaml and deploy/prefect.kubernetes.yaml are up to date ({what})"

    run(as_json, action, human)


@commands.command()
def where(as_json: bool = JsonOpt) -> None:
    """Show where state lives and how to open the MLflow and Prefect UIs."""
    run(as_json, _where, lambda p: "\n".join(f"{k:<20} {v}" for k, v in p.items()))


def _where() -> dict:
    from mlsteward.config.settings import home, mlflow_artifact_root, mlflow_tracking_uri
    from mlsteward.platform.command import urls
    from mlsteward.platform.lifecycle import status
    from mlsteward.platform.services import PlatformConfig

    uri = mlflow_tracking_uri()
    cfg = PlatformConfig.from_env()
    states = status(cfg)
    if any(s.running for s in states):
        links = urls(cfg, states)
        local = "running (make down stops it): " + ", ".join(
            f"{k} {v}" for k, v in links.items() if v
        )
    else:
        local = (
            f"not running; make up starts the Prefect UI ({cfg.url(cfg.prefect_port)}), "
            f"the MLflow UI ({cfg.url(cfg.mlflow_port)}), the CI webhook "
            f"({cfg.url(cfg.gateway_port, '/hooks/ci')}), the prediction service "
            f"({cfg.url(cfg.serving_port)}) and the governance API "
            f"({cfg.url(cfg.api_port, '/api/v1')})"
        )
    return {
        "home": str(home()),
        "mlflow_tracking_uri": uri,
        "local_platform": local,
        "mlflow_ui": "make mlflow-ui, or: "
        f"mlflow ui --backend-store-uri {uri} "
        f"--default-artifact-root {mlflow_artifact_root()} --port 5000",
        "prefect_ui": (
            f"make prefect-ui, or: PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')}"
            " prefect server start --host 127.0.0.1 --port 4200; then open "
            "http://127.0.0.1:4200 (flow runs, logs, metric and lineage artifacts)"
        ),
    }


@commands.command()
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
    min_age: float = typer.Option(
        1.0, "--min-age", help="Hours; younger unreferenced files are kept (in-flight runs)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Remove data snapshots no registered version, pointer, Feast source or run references."""
    from mlsteward.platform.gc import collect_garbage

    def human(p: dict) -> str:
        remove, drop = ("would remove", "would drop") if p["dry_run"] else ("removed", "dropped")
        lines = [
            f"{remove} {r['model']} {r['digest'] or 'temp file'}  {r['bytes']} bytes  {r['path']}"
            for r in p["removed"]
        ]
        lines += [
            f"{drop} offline table {t['table']} ({t['model']} {t['digest']}, {t['rows']} rows)"
            for t in p["dropped_tables"]
        ]
        lines += [f"{drop} left-over join table {name}" for name in p["dropped_scratch"]]
        lines += [
            f"{remove} abandoned training partitions {d['path']}  {d['bytes']} bytes"
            for d in p["removed_staging"]
        ]
        lines.append(
            f"{'would free' if p['dry_run'] else 'freed'} {p['bytes_freed']} bytes; kept "
            f"{len(p['kept'])} referenced, {len(p['too_young'])} younger than {min_age:g} h, "
            f"{len(p['unknown'])} unknown file(s) left alone"
        )
        return "\n".join(lines)

    run(
        as_json,
        lambda: collect_garbage(dry_run=dry_run, min_age_seconds=min_age * 3600).to_dict(),
        human,
    )


profile_app = typer.Typer(
    help="Deployment profiles (MLSTEWARD_PROFILE): where state lives.", no_args_is_help=True
)
commands.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(as_json: bool = JsonOpt) -> None:
    """Show where each kind of state lives under the active profile (passwords masked)."""
    from mlsteward.config.settings import locations

    run(as_json, locations, lambda p: "\n".join(f"{k:<20} {v}" for k, v in p.items()))


@profile_app.command("provision")
def profile_provision(as_json: bool = JsonOpt) -> None:
    """Create the active profile's missing databases (and pg_trgm); check Redis answers."""
    from mlsteward.config import profiles
    from mlsteward.platform.provision import provision

    def human(p: dict) -> str:
        lines = [f"created  {x}" for x in p["created"]] + [f"exists   {x}" for x in p["existing"]]
        return "\n".join(lines) or "nothing to provision (this profile uses local files)"

    run(as_json, lambda: provision(profiles.active()), human)


@commands.command()
def trigger(
    action: str = typer.Argument(..., help="train, drift or score"),
    model: str = typer.Argument(..., help="a model in config/models/", callback=model_name),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="KEY=VALUE flow parameter (VALUE as JSON when it parses); repeatable",
    ),
    url: str = typer.Option(
        ...,
        "--url",
        envvar="MLSTEWARD_WEBHOOK_URL",
        help="the gateway, e.g. http://127.0.0.1:8787 (from make up)",
    ),
    secret: str = typer.Option(
        ...,
        "--secret",
        envvar="MLSTEWARD_WEBHOOK_SECRET",
        show_default=False,
        help="shared HMAC secret (prefer the environment variable)",
    ),
    delivery: str | None = typer.Option(
        None, "--delivery", help="delivery id (default: a new UUID); a repeated id is a replay"
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="seconds to wait for the gateway"),
    as_json: bool = JsonOpt,
) -> None:
    """Sign and send a CI trigger to the webhook gateway: start a deployment run."""
    from mlsteward.gateway.client import describe, parse_params
    from mlsteward.gateway.client import trigger as send

    run(
        as_json,
        lambda: send(
            action, model, parse_params(param), url, secret, delivery=delivery, timeout=timeout
        ),
        describe,
    )


@commands.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8787, help="port"),
) -> None:
    """Run the CI webhook gateway (POST /hooks/ci); needs MLSTEWARD_WEBHOOK_SECRET and
    PREFECT_API_URL (make up runs it for you)."""
    use_local_platform()  # the runs it starts go to the platform's server when one runs
    from mlsteward.gateway.__main__ import main as run_gateway

    raise typer.Exit(run_gateway(["--host", host, "--port", str(port)]))


mlflow_access_app = typer.Typer(
    help="MLflow logins for people: read everything, edit their team's experiments.",
    no_args_is_help=True,
)
commands.add_typer(mlflow_access_app, name="mlflow-access")


@mlflow_access_app.command("grant")
def mlflow_access_grant(
    principal: str = typer.Argument(..., help="user:NAME (a bare NAME is a user)."),
    reset_password: bool = typer.Option(
        False, "--reset-password", help="Give an existing MLflow login a new password."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create or update a person's MLflow login and set its grants from their teams: EDIT on
    the experiments of their team's models, READ on every registered model (a new password is
    printed once). Needs the manage permission."""
    from mlsteward.identity import Permission, authorize, cli_principal
    from mlsteward.platform.mlflow_access import grant_mlflow_access

    def action() -> dict:
        caller = cli_principal()
        authorize(caller, Permission.MANAGE)
        granted = grant_mlflow_access(principal, reset_password=reset_password, actor=caller.actor)
        return granted.to_dict()

    def human(p: dict) -> str:
        lines = [
            f"{p['principal']}: MLflow user {p['mlflow_username']} "
            f"({'created' if p['created'] else 'updated'})"
        ]
        lines += [
            f"  {g['model']:<24} owner {g['owner']:<18} experiment {g['experiment']:<5} "
            f"registered model {g['registered_model']}"
            for g in p["grants"]
        ]
        if p.get("password"):
            lines += [
                "",
                "Password, shown only now (hand it over privately; the MLflow UI asks for it):",
                "",
                f"  {p['password']}",
            ]
        return "\n".join(lines)

    run(as_json, action, human)
