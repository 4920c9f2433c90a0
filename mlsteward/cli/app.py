"""The ``mlsteward`` command line: the face on top of the flows.

Every command prints a human summary, or with ``--json`` one JSON document for CI, and exits
non-zero on failure. Flows (and with them Prefect) are imported inside commands: ``--help`` and
config checks stay fast, and nothing heavy runs at import.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mlsteward.errors import MlstewardError

app = typer.Typer(
    name="mlsteward",
    help="Governed, closed-loop ML pipelines on Prefect, Feast, MLflow and XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

JsonOpt = typer.Option(False, "--json", help="Print one JSON document (for CI) instead of text.")


@app.callback()
def _setup() -> None:
    """Process-wide settings for a CLI run, applied before any command (never at import)."""
    # A cold ephemeral Prefect API (no PREFECT_API_URL set) can take longer than Prefect's
    # default start-up wait on a small machine; an explicit setting from the user wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if os.environ.get("PREFECT_HOME"):  # Prefect does not create missing parents of its home
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    # Deprecation chatter from libraries (ibis, SQLAlchemy, Prefect) is not for CLI users.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _emit(as_json: bool, payload: Any, human: Callable[[Any], str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(human(payload))


def _fail(as_json: bool, message: str, details: Any = None) -> None:
    if as_json:
        doc = {"ok": False, "error": message, "details": details}
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _run(as_json: bool, action: Callable[[], Any], human: Callable[[Any], str]) -> None:
    """Run a command body; any failure becomes one message (or JSON document) and exit 1."""
    try:
        # stdout carries only our result (one JSON document with --json); libraries that print
        # progress there (Feast's materialize does) are moved to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            payload = action()
    except MlstewardError as exc:
        _fail(as_json, str(exc), getattr(exc, "report", None))
    except Exception as exc:  # an unexpected failure still honours --json and the exit code
        _fail(as_json, f"{type(exc).__name__}: {exc}")
    _emit(as_json, payload, human)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    keys = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1")
    return "\n".join(f"    {k:<10} {metrics[k]:.4f}" for k in keys if k in metrics)


@app.command()
def models(as_json: bool = JsonOpt) -> None:
    """List the models declared in config/models (validating every file)."""
    from mlsteward.config.models import load_all_model_configs

    def action() -> dict:
        cfgs = load_all_model_configs()
        return {
            "models": [
                {
                    "name": c.name,
                    "task": c.task,
                    "features": len(c.features),
                    "source": c.source.path,
                }
                for c in cfgs.values()
            ]
        }

    _run(
        as_json,
        action,
        lambda p: (
            "\n".join(
                f"{m['name']:<24} {m['task']:<22} {m['features']} features  {m['source']}"
                for m in p["models"]
            )
            or "no models in config/models"
        ),
    )


@app.command()
def generate(
    model: str = typer.Argument("heart_disease", help="Only the built-in heart_disease cohort."),
    rows: int = typer.Option(50_000, help="Number of visit rows."),
    seed: int = typer.Option(0, help="Generator seed (same seed, same data)."),
    out: Path | None = typer.Option(None, help="Output path (default: the config's source)."),
    start: str | None = typer.Option(
        None, help="A later batch of new patients from this date (e.g. 2025-07-01), not a cohort."
    ),
    days: int = typer.Option(30, help="Length of a batch's time window (with --start)."),
    id_offset: int | None = typer.Option(
        None, "--id-offset", help="Batch patient ids start above this (with --start)."
    ),
    shift: list[str] = typer.Option(
        [], "--shift", help="Covariate shift COLUMN=SDs, e.g. bmi=1.5 (repeatable)."
    ),
    prevalence: float | None = typer.Option(None, help="Label shift: target positive rate."),
    concept: float = typer.Option(0.0, help="Concept shift strength, 0 (none) to 1."),
    append_to_source: bool = typer.Option(
        False,
        "--append-to-source",
        help="Also append the rows to the model's source file, as new visits arriving upstream.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write the built-in synthetic patient cohort (or a later, optionally shifted, batch)."""
    from mlsteward.config.models import get_model_config
    from mlsteward.data.synthetic import (
        BATCH_ID_OFFSET,
        Shift,
        append_dataset,
        generate_batch,
        generate_cohort,
        write_dataset,
    )

    def action() -> dict:
        if model != "heart_disease":
            raise MlstewardError(f"only heart_disease has a built-in dataset, not {model!r}")
        cfg = get_model_config(model)
        try:
            how = Shift(covariate=_parse_shifts(shift), prevalence=prevalence, concept=concept)
        except ValueError as exc:
            raise MlstewardError(f"invalid shift: {exc}") from exc
        if start is None:
            if append_to_source:
                raise MlstewardError("--append-to-source needs a batch (--start DATE)")
            df = generate_cohort(n_rows=rows, seed=seed, shift=how)
        else:
            offset = BATCH_ID_OFFSET if id_offset is None else id_offset
            df = generate_batch(rows, seed, start=start, days=days, shift=how, id_offset=offset)
        source = cfg.source.resolved_path()
        path = write_dataset(df, out or source)
        appended = None
        if append_to_source and path != source:
            try:
                appended = str(append_dataset(df, source))
            except ValueError as exc:
                raise MlstewardError(str(exc)) from exc
        ts = df["event_timestamp"]
        return {
            "model": model,
            "path": str(path),
            "rows": len(df),
            "positive_rate": round(float(df[cfg.label].mean()), 4),
            "time_range": [ts.min().isoformat(), ts.max().isoformat()],
            "shift": {"covariate": how.covariate, "prevalence": prevalence, "concept": concept},
            "appended_to": appended,
        }

    def human(p: dict) -> str:
        text = (
            f"wrote {p['rows']} rows to {p['path']} "
            f"(positive rate {p['positive_rate']:.1%}, "
            f"{p['time_range'][0]} .. {p['time_range'][1]})"
        )
        if p["shift"]["covariate"]:
            moved = ", ".join(f"{c} {k:+g} SD" for c, k in p["shift"]["covariate"].items())
            text += f"\n  covariate shift: {moved}"
        if p["appended_to"]:
            text += f"\n  appended to the source {p['appended_to']}"
        return text

    _run(as_json, action, human)


def _parse_shifts(items: list[str]) -> dict[str, float]:
    shifts: dict[str, float] = {}
    for item in items:
        col, sep, amount = item.partition("=")
        try:
            shifts[col.strip()] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not col.strip():
            raise MlstewardError(f"--shift {item!r}: expected COLUMN=SDS, e.g. bmi=1.5")
    return shifts


@app.command()
def ingest(
    model: str,
    source: Path | None = typer.Option(None, help="Source file (default: the config's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Check a source against the data contract and make it the model's feature data."""
    from flows.ingestion import ingestion_flow

    def action() -> dict:
        return ingestion_flow(model=model, source=str(source) if source else None)

    def human(p: dict) -> str:
        c = p["contract"]
        lines = [
            f"ingested {p['rows']} rows for {p['model']}: data version "
            f"{p['data_version'][:12]} ({p['time_range'][0]} .. {p['time_range'][1]})",
            f"  snapshot: {p['snapshot_path']}",
        ]
        if c["bad_rows"]:
            lines.append(
                f"  quarantined {c['bad_rows']} rows ({c['bad_share']:.2%}) in "
                f"{p['quarantine_path']}"
            )
            lines += [f"    {v['rule']} on {v['column']}: {v['rows']}" for v in c["violations"]]
        return "\n".join(lines)

    _run(as_json, action, human)


@app.command()
def materialize(model: str, as_json: bool = JsonOpt) -> None:
    """Load the latest feature values into the online store (for low-latency serving)."""
    from flows.ingestion import materialize_flow

    _run(
        as_json,
        lambda: materialize_flow(model=model),
        lambda p: f"materialized {p['model']} into the online store up to {p['end']}",
    )


@app.command()
def train(
    model: str,
    max_evals: int | None = typer.Option(None, "--max-evals", help="Hyperopt trials."),
    seed: int | None = typer.Option(None, help="Seed for Hyperopt and XGBoost."),
    promote: bool = typer.Option(
        True, help="--no-promote: stop after the gates (a passing version stays challenger)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Tune, train, evaluate and register a new version of MODEL; gates, then promotion."""
    from flows.training import training_flow

    def human(p: dict) -> str:
        return "\n".join(
            [
                f"registered {p['model']} version {p['version']}  ({p['model_uri']})",
                f"  trials: {p['trials']}   decision threshold: {p['threshold']:.3f}",
                f"  best params: {json.dumps(p['best_params'], sort_keys=True)}",
                "  test metrics:",
                _fmt_metrics(p["test_metrics"]),
                f"  data version: {p['lineage']['data_digest'][:12]}  "
                f"artifact sha256: {p['artifact_sha256'][:12]}",
                _governance_human(p["governance"]),
            ]
        )

    _run(
        as_json,
        lambda: training_flow(model=model, max_evals=max_evals, seed=seed, promote=promote),
        human,
    )


def _governance_human(p: dict) -> str:
    lines = [f"{p['model']} v{p['version']}: {p['decision'].upper()}"]
    lines += [f"  - {r}" for r in p.get("reasons", [])]
    promo = p.get("promotion")
    if promo:
        prev = promo["previous_champion"] or "none"
        lines.append(
            f"  champion is now v{promo['version']} (previous: {prev}; artifact sha256 "
            f"{promo['artifact_sha256'][:12]} verified; audit #{promo['audit_seq']})"
        )
    return "\n".join(lines)


@app.command()
def promote(
    model: str,
    version: str,
    approver: str | None = typer.Option(
        None, help="Under the manual policy: approve now as NAME instead of pausing for a form."
    ),
    reason: str | None = typer.Option(None, help="Why (recorded in the audit trail)."),
    revalidate: bool = typer.Option(False, help="Re-run the gates even if the report is current."),
    as_json: bool = JsonOpt,
) -> None:
    """Promote VERSION to champion: runs the gates if needed and follows the model's policy."""
    from flows.governance import promotion_flow
    from mlsteward.audit import default_actor

    def action() -> dict:
        if approver is not None and not (reason or "").strip():
            raise MlstewardError("--approver needs --reason TEXT (it goes into the audit trail)")
        return promotion_flow(
            model=model,
            version=version,
            approver=approver,
            reason=reason,
            revalidate=revalidate,
            requested_by=approver or default_actor(),
        )

    _run(as_json, action, _governance_human)


@app.command()
def rollback(
    model: str,
    reason: str = typer.Option(..., help="Why (required; recorded in the audit trail)."),
    to: str | None = typer.Option(None, "--to", help="An earlier champion version."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore the previous (or a named earlier) champion; the current one is retired."""
    from flows.governance import rollback_flow
    from mlsteward.audit import default_actor

    def action() -> dict:
        if not reason.strip():
            raise MlstewardError("--reason must not be empty")
        return rollback_flow(
            model=model, reason=reason, to_version=to, requested_by=default_actor()
        )

    _run(
        as_json,
        action,
        lambda p: (
            f"{p['model']}: champion v{p['previous_champion']} -> v{p['version']} "
            f"(artifact sha256 {p['artifact_sha256'][:12]} verified; audit #{p['audit_seq']})"
        ),
    )


@app.command()
def status(model: str, as_json: bool = JsonOpt) -> None:
    """Champion and challenger of MODEL, with their numbers and the latest decisions."""
    from mlsteward.config.models import get_model_config
    from mlsteward.governance.promotion import status as governance_status

    def action() -> dict:
        get_model_config(model)  # unknown models fail with the list of known ones
        return governance_status(model)

    def human(p: dict) -> str:
        def line(role: str) -> str:
            v = p[role]
            if v is None:
                return f"{role:<11} none"
            m = v["metrics"]
            return (
                f"{role:<11} v{v['version']}  roc_auc {m.get('roc_auc', float('nan')):.4f}  "
                f"lifecycle {v['lifecycle']}  validation {v['validation_status']}"
            )

        lines = [f"{p['model']}", line("champion"), line("challenger")]
        if p["previous_champion"]:
            lines.append(f"{'rollback to':<11} v{p['previous_champion']}")
        if p.get("canary"):
            c = p["canary"]
            lines.append(
                f"{'canary':<11} v{c['challenger_version']} on {c['fraction']:.0%} of traffic "
                f"(step {c['step']}, rollout {c['rollout_id']})"
            )
        lines.append("recent decisions:")
        lines += [
            f"  #{r['seq']:<5} {r['ts'][:19]}  {r['action']:<20} v{r['version'] or '-':<4} "
            f"{r['actor']}: {r['reason'][:80]}"
            for r in p["recent_decisions"]
        ] or ["  none"]
        return "\n".join(lines)

    _run(as_json, action, human)


@app.command()
def approve(
    flow_run_id: str,
    approver: str = typer.Option(..., help="Who decides."),
    reason: str = typer.Option(..., help="Why (recorded in the audit trail)."),
    reject: bool = typer.Option(False, "--reject", help="Reject instead of approving."),
    as_json: bool = JsonOpt,
) -> None:
    """Answer a promotion waiting for approval (a paused flow run), as in the Prefect UI form."""
    from mlsteward.governance.approvals import answer_approval

    def action() -> dict:
        return answer_approval(flow_run_id, approve=not reject, approver=approver, reason=reason)

    _run(
        as_json,
        action,
        lambda p: f"{p['decision']} sent to flow run {p['flow_run_id']} ({p['flow_run_name']})",
    )


@app.command()
def score(
    model: str,
    source: Path | None = typer.Option(
        None, help="CSV/parquet in the model's source format; default: the online store."
    ),
    entities: Path | None = typer.Option(
        None,
        help="CSV/parquet of entity id + event time: offline-store features as of each time.",
    ),
    start: str | None = typer.Option(
        None,
        help="ISO time (UTC if naive): score the current snapshot's rows from START "
        "(inclusive) with offline-store features as of their times.",
    ),
    end: str | None = typer.Option(
        None, help="ISO time (UTC if naive): ... before END (exclusive); each bound is optional."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Score with the verified champion (+ top-k SHAP); write a scored parquet and log it.

    One input: --source, --entities, or --start/--end; none scores the online store."""
    from flows.scoring import scoring_flow

    _run(
        as_json,
        lambda: scoring_flow(
            model=model,
            source=str(source) if source else None,
            entities=str(entities) if entities else None,
            start=start,
            end=end,
        ),
        lambda p: (
            f"scored {p['rows']} rows from {p['source']} with {p['model']} v{p['version']} "
            f"(mean probability {p['mean_probability']}, positive rate {p['positive_rate']})\n"
            f"  scored file:    {p['scored_path']}\n  prediction log: {p['prediction_log_path']}"
        ),
    )


@app.command()
def drift(
    model: str,
    current: Path | None = typer.Option(
        None, help="A file in the model's source format (label optional) instead of the log."
    ),
    window: float | None = typer.Option(
        None, "--window", help="Prediction-log window in days (default: drift.window_days)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Compare recent data with the champion's reference (Evidently); retrain if the policy
    says so, within the cooldown."""
    from flows.drift import drift_flow

    _run(
        as_json,
        lambda: drift_flow(
            model=model, current=str(current) if current else None, window_days=window
        ),
        _drift_human,
    )


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _drift_human(p: dict) -> str:
    """What a person reading a drift run wants first: what moved, the decision, what followed."""
    lines = [
        f"drifted columns: {', '.join(p['drifted_columns']) or 'none'} "
        f"(share {p['dataset_drift_share']:.2f})",
        f"decision: {'RETRAIN' if p['decision']['retrain'] else 'no retrain'}",
    ]
    lines += [f"  - {r}" for r in p["decision"]["reasons"]]
    lines += [f"note: {n}" for n in p.get("notes") or []]
    perf = p.get("performance")
    if perf:
        rows = perf["current"].get("rows")
        labelled = "?" if rows is None else int(rows)  # metrics carry the count as a float
        lines.append(
            f"quality on {labelled} labelled rows: "
            + ", ".join(
                f"{m} {_num(perf['reference'].get(m))} -> {_num(perf['current'].get(m))}"
                for m in ("roc_auc", "pr_auc", "brier")
            )
        )
    if p.get("retrain"):
        r = p["retrain"]
        state = f"triggered ({r.get('mode')})" if r["triggered"] else "suppressed"
        lines.append(f"retrain: {state}: {r['reason']}")
        if r.get("training"):
            lines.append("retraining run: " + _governance_human(r["training"]))
        elif r.get("mode") == "deployment":
            lines.append(
                "retraining run: started by the train deployment's trigger "
                f"(event {r.get('event_id')}); see the Prefect UI"
            )
    lines.append(f"report: {p['report_path']}")
    return "\n".join(lines)


@app.command()
def labels(model: str, path: Path, as_json: bool = JsonOpt) -> None:
    """Attach outcomes that arrived later (entity, event time, label) to the prediction log."""
    from mlsteward.audit import audit_store, default_actor
    from mlsteward.config.models import get_model_config
    from mlsteward.monitoring.outcomes import ingest_labels

    def action() -> dict:
        cfg = get_model_config(model)
        with audit_store() as store:
            return ingest_labels(cfg, path, actor=default_actor(), audit=store)

    _run(
        as_json,
        action,
        lambda p: (
            f"{p['matched']} of {p['rows']} outcomes matched logged predictions of {p['model']}"
            f" ({p['unmatched']} not (yet) matched, kept for later predictions)"
        ),
    )


@app.command()
def predict(
    model: str,
    entity: list[str] = typer.Option(..., "--entity", "-e", help="Entity id (repeatable)."),
    explain: bool = typer.Option(False, "--explain", help="Add the top SHAP contributions."),
    url: str | None = typer.Option(
        None, "--url", help="The prediction service (default: MLSTEWARD_SERVING_URL / make up)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Ask the running prediction service about entities (features from the online store)."""
    import httpx

    from mlsteward.config.settings import serving_url

    base = (url or serving_url()).rstrip("/")
    ids: list[int | str] = [int(e) if e.lstrip("-").isdigit() else e for e in entity]

    def action() -> dict:
        try:
            r = httpx.post(
                f"{base}/v1/models/{model}/predict",
                json={"entity_ids": ids, "explain": explain},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise MlstewardError(
                f"no prediction service at {base}: {exc} (make up starts it)"
            ) from exc
        if r.status_code != 200:
            json_reply = "json" in r.headers.get("content-type", "")
            detail = r.json().get("detail") if json_reply else r.text
            raise MlstewardError(f"HTTP {r.status_code} from {base}: {detail}")
        return r.json()

    def human(p: dict) -> str:
        lines = []
        for row in p["predictions"]:
            lines.append(
                f"{row['entity_id']}: p={row['probability']:.3f} label {row['label']} "
                f"(threshold {row['threshold']:.3f})  v{row['version']} {row['arm']}"
            )
            exp = row.get("explanation")
            if exp:
                top = ", ".join(f"{c['feature']} {c['value']:+.3f}" for c in exp["contributions"])
                lines.append(f"    base {exp['base_value']:+.3f} log-odds; {top}")
        return "\n".join(lines)

    _run(as_json, action, human)


@app.command()
def rollout(
    model: str,
    version: str | None = typer.Argument(None, help="Version to canary (default: challenger)."),
    url: str | None = typer.Option(
        None, "--url", help="The prediction service (default: MLSTEWARD_SERVING_URL / make up)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Canary-release a validated version through the prediction service: each rollout step
    judged on the guardrails, rolled back on a breach, promoted by the policy after the last.
    Exits 1 unless promoted."""
    from flows.rollout import rollout_flow

    if url:
        os.environ["MLSTEWARD_SERVING_URL"] = url
    outcome: dict[str, Any] = {}

    def action() -> dict:
        outcome.update(rollout_flow(model=model, version=version))
        return outcome

    _run(as_json, action, _rollout_human)
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


@app.command()
def reproduce(
    model: str,
    version: str | None = typer.Argument(None, help="Version to rebuild (default: champion)."),
    full: bool = typer.Option(
        False, "--full", help="Re-run the whole Hyperopt search with the recorded seed."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse if commit, uv.lock or library versions differ."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild a registered version from its recorded snapshot, params and seed; print
    `identical` or the first step that diverged. Exits 1 unless identical."""
    from flows.reproduce import reproduce_flow

    outcome: dict[str, Any] = {}

    def action() -> dict:
        outcome.update(reproduce_flow(model=model, version=version, full=full, strict=strict))
        return outcome

    _run(as_json, action, _reproduce_human)
    if outcome.get("result") != "identical":
        raise typer.Exit(1)


def _reproduce_human(p: dict) -> str:
    lines = [f"{p['model']} v{p['version']} ({p['mode']}): {p['summary'].upper()}"]
    if p["result"] == "refused":
        lines.append("  --strict: the environment differs from the one that trained:")
    for env in p["environment"]:
        lines.append(f"  env  {env['what']}: recorded {env['recorded']}, now {env['current']}")
    for step in p["steps"]:
        mark = {"same": "ok  ", "differs": "DIFF"}.get(step["status"], "--  ")
        took = "" if step["status"] == "not_run" else f"  ({step['seconds']:.1f} s)"
        lines.append(f"  {mark} {step['name']:<16} {step['detail']}{took}")
    for name, delta in p["metric_deltas"].items():
        lines.append(f"       {name}: {delta:+.3g}")
    if p["config_changes"]:
        keys = ", ".join(c["key"] for c in p["config_changes"])
        lines.append(f"  info: config changed since training (recorded config used): {keys}")
    original = p.get("original_training_seconds")
    lines.append(
        f"  took {p['seconds']:.1f} s"
        + (f" (original training run {original:.1f} s)" if original else "")
        + f"; report {p['report_path']}"
    )
    return "\n".join(lines)


@app.command()
def report(model: str, as_json: bool = JsonOpt) -> None:
    """Write the governance report (model card) as self-contained HTML and markdown."""
    from mlsteward.report.card import write_report

    def human(p: dict) -> str:
        lines = [f"model card written: {p['html']}", f"                    {p['markdown']}"]
        lines += [f"  warning: {w}" for w in p.get("warnings", [])]
        return "\n".join(lines)

    _run(as_json, lambda: write_report(model), human)


audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("log")
def audit_log(
    model: str | None = typer.Option(None, help="Only this model."),
    action_name: str | None = typer.Option(None, "--action", help="Only this action."),
    since: str | None = typer.Option(None, help="ISO time or date, e.g. 2026-11-01."),
    limit: int = typer.Option(200, help="The most recent N matching records."),
    as_json: bool = JsonOpt,
) -> None:
    """Show audit records, oldest first."""
    from mlsteward.audit import audit_store

    def action() -> dict:
        with audit_store() as store:
            records = store.query(model=model, action=action_name, since=since, limit=limit)
        return {"records": [r.to_dict() for r in records]}

    def human(p: dict) -> str:
        return (
            "\n".join(
                f"#{r['seq']:<6} {r['ts'][:19]}  {r['action']:<20} {r['model'] or '-':<16} "
                f"v{r['version'] or '-':<4} {r['actor']}: {r['reason'][:100]}"
                for r in p["records"]
            )
            or "no audit records match"
        )

    _run(as_json, action, human)


@audit_app.command("verify")
def audit_verify(
    expect_head: str | None = typer.Option(
        None, help="A head hash stored elsewhere earlier; catches a rewritten chain."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check the hash chain; report the first broken link. Exit 1 if the trail was altered."""
    from mlsteward.audit import audit_store

    with audit_store() as store:
        result = store.verify(expect_head=expect_head)
    if result.ok:
        _emit(
            as_json,
            result.to_dict(),
            lambda p: f"audit trail intact: {p['records']} records, head {p['head_hash']}",
        )
        return
    _fail(as_json, f"audit trail broken: {result.problem}", result.to_dict())


profile_app = typer.Typer(
    help="Deployment profiles (MLSTEWARD_PROFILE): where state lives.", no_args_is_help=True
)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(as_json: bool = JsonOpt) -> None:
    """Show where each kind of state lives under the active profile (passwords masked)."""
    from mlsteward.config.settings import locations

    _run(as_json, locations, lambda p: "\n".join(f"{k:<20} {v}" for k, v in p.items()))


@profile_app.command("provision")
def profile_provision(as_json: bool = JsonOpt) -> None:
    """Create the active profile's missing databases (and pg_trgm); check Redis answers."""
    from mlsteward.config import profiles
    from mlsteward.platform.provision import provision

    def human(p: dict) -> str:
        lines = [f"created  {x}" for x in p["created"]] + [f"exists   {x}" for x in p["existing"]]
        return "\n".join(lines) or "nothing to provision (this profile uses local files)"

    _run(as_json, lambda: provision(profiles.active()), human)


@app.command()
def trigger(
    action: str = typer.Argument(..., help="train, drift or score"),
    model: str = typer.Argument(..., help="a model in config/models/"),
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

    _run(
        as_json,
        lambda: send(
            action, model, parse_params(param), url, secret, delivery=delivery, timeout=timeout
        ),
        describe,
    )


@app.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8787, help="port"),
) -> None:
    """Run the CI webhook gateway (POST /hooks/ci); needs MLSTEWARD_WEBHOOK_SECRET and
    PREFECT_API_URL (make up runs it for you)."""
    from mlsteward.gateway.__main__ import main as run_gateway

    raise typer.Exit(run_gateway(["--host", host, "--port", str(port)]))


@app.command()
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


@app.command()
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

    _run(
        as_json,
        lambda: collect_garbage(dry_run=dry_run, min_age_seconds=min_age * 3600).to_dict(),
        human,
    )


@app.command()
def where(as_json: bool = JsonOpt) -> None:
    """Show where state lives and how to open the MLflow and Prefect UIs."""
    from mlsteward.config.settings import home, mlflow_artifact_root, mlflow_tracking_uri
    from mlsteward.platform import services as platform

    def action() -> dict:
        uri = mlflow_tracking_uri()
        cfg = platform.PlatformConfig.from_env()
        states = platform.status(cfg)
        if any(s.running for s in states):
            links = platform.urls(cfg, states)
            local = "running (make down stops it): " + ", ".join(
                f"{k} {v}" for k, v in links.items() if v
            )
        else:
            local = (
                f"not running; make up starts the Prefect UI ({cfg.url(cfg.prefect_port)}), "
                f"the MLflow UI ({cfg.url(cfg.mlflow_port)}), the CI webhook "
                f"({cfg.url(cfg.gateway_port, '/hooks/ci')}) and the prediction service "
                f"({cfg.url(cfg.serving_port)})"
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

    _run(as_json, action, lambda p: "\n".join(f"{k:<20} {v}" for k, v in p.items()))


def main() -> None:  # pragma: no cover - console entry point
    app()
