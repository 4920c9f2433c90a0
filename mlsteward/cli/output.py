"""How every command answers: a human summary, or with ``--json`` one JSON document for CI, and
exit 1 with one message when it fails.

stdout carries only the result; whatever libraries print while a command runs goes to stderr.
A flow's typed result is shown as its ``model_dump()``, the document ``--json`` has always
printed, and the human summaries read the same document.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel

from mlsteward.config.names import check_model_name
from mlsteward.errors import MlstewardError

JsonOpt = typer.Option(False, "--json", help="Print one JSON document (for CI) instead of text.")


def model_name(value: str | None) -> str | None:
    """A MODEL argument is a name, never a path: refused as a usage error before anything runs."""
    if value is None:
        return None
    try:
        return check_model_name(value)
    except MlstewardError as exc:
        raise typer.BadParameter(str(exc)) from None


ModelName = Annotated[str, typer.Argument(callback=model_name, show_default=False)]

METRIC_KEYS = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1")
"""A classifier's metrics, in the order a person compares them."""
REGRESSION_METRIC_KEYS = (
    "rmse",
    "mae",
    "r2",
    "median_absolute_error",
    "mean_poisson_deviance",
    "mean_tweedie_deviance",
    "calibration_ratio",
)
"""A regression model's metrics: errors in the label's units first, then R², the objective's
deviance where it has one, and calibration (mean prediction / mean outcome)."""
REGRESSION_HEADLINE = ("rmse", "mae", "r2")
"""What a one-line summary of a regression model shows (a classifier's shows roc_auc)."""


def emit(as_json: bool, payload: Any, human: Callable[[Any], str]) -> None:
    """Print a command's result: JSON for machines, ``human(payload)`` for people."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(human(payload))


def fail(as_json: bool, message: str, details: Any = None) -> NoReturn:
    """One message (``error: ...`` on stderr, or a JSON document with ``ok: false``), exit 1."""
    if as_json:
        doc = {"ok": False, "error": message, "details": details}
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def as_document(result: Any) -> Any:
    """A typed result as the plain document it stands for; anything else as it is."""
    return result.model_dump() if isinstance(result, BaseModel) else result


def run(as_json: bool, action: Callable[[], Any], human: Callable[[Any], str]) -> Any:
    """Run a command body and print its result, which it returns (as a plain document) for
    commands whose exit code depends on it. Any failure becomes one message (or JSON document)
    and exit 1.

    A refusal (:class:`MlstewardError`) prints its own message, which names the file, column or
    rule at fault; anything else prints its type too, and still honours ``--json`` and the
    exit code.
    """
    try:
        # stdout carries only our result (one JSON document with --json); libraries that print
        # progress there (Feast's materialize does) are moved to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            payload = as_document(action())
    except MlstewardError as exc:
        fail(as_json, str(exc), getattr(exc, "report", None))
    except Exception as exc:  # an unexpected failure still honours --json and the exit code
        fail(as_json, f"{type(exc).__name__}: {exc}")
    emit(as_json, payload, human)
    return payload


def is_regression_metrics(metrics: dict[str, Any]) -> bool:
    """Whether a metrics document is a regression model's: results carry the metrics, not the
    task, and the two tasks share no metric name."""
    return any(k in metrics for k in REGRESSION_METRIC_KEYS) and not any(
        k in metrics for k in METRIC_KEYS
    )


def fmt_metrics(metrics: dict[str, float]) -> str:
    """The evaluation metrics a person compares, one per line, in a fixed order: a classifier's,
    or a regression model's with the two means its calibration ratio divides."""
    if not is_regression_metrics(metrics):
        return "\n".join(f"    {k:<10} {metrics[k]:.4f}" for k in METRIC_KEYS if k in metrics)
    keys = [k for k in REGRESSION_METRIC_KEYS if k in metrics]
    width = max(len(k) for k in keys)
    lines = [f"    {k:<{width}} {metrics[k]:.4f}" for k in keys]
    if "calibration_ratio" in metrics and {"mean_prediction", "mean_outcome"} <= set(metrics):
        lines[keys.index("calibration_ratio")] += (
            f"  (mean prediction {metrics['mean_prediction']:.4f} / mean outcome "
            f"{metrics['mean_outcome']:.4f}; closer to 1 is better)"
        )
    return "\n".join(lines)


def fmt_headline(metrics: dict[str, Any]) -> str:
    """A version's numbers on one line: ``rmse 2.4570  mae 1.9704  r2 0.5052`` for a
    regression model, ``roc_auc 0.8612`` for a classifier (n/a where one is missing)."""
    keys = REGRESSION_HEADLINE if is_regression_metrics(metrics) else ("roc_auc",)
    return "  ".join(f"{k} {metrics.get(k, float('nan')):.4f}" for k in keys)


def fmt_number(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
