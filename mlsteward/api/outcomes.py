"""``POST /models/{model}/outcomes``: late labels, the contract of ``mlsteward labels``
(``monitoring.outcomes.ingest_labels``) for rows sent as JSON (``outcomes`` permission).

The rows are written to a file in the model's source format and read back by the very
function the command uses, so the API can never accept a row the command would refuse: a
missing column, an unparsable time or an outcome the model's task refuses (a classifier's label
outside ``label_values``; a regression outcome that is no finite number, or a negative or
fractional count under ``count:poisson``) is a 422 naming the rows and the rule, and nothing is
attached.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends

from mlsteward.api.auth import allowed, path_model
from mlsteward.api.errors import BadInput, responses
from mlsteward.api.schemas import OutcomesBody, OutcomesOut
from mlsteward.audit import audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.errors import ContractViolation
from mlsteward.identity import Permission, Principal
from mlsteward.monitoring.outcomes import ingest_labels

router = APIRouter(tags=["outcomes"])
SOURCE = "api"


def table_file(cfg: ModelConfig, rows: list[dict[str, Any]], directory: Path) -> Path:
    """The rows as a file in the model's source format.

    Raises:
        BadInput: the rows do not form a table (objects where values belong, a column of
            numbers Arrow cannot store).
    """
    parquet = cfg.source.file_format() == "parquet"
    path = directory / ("outcomes.parquet" if parquet else "outcomes.csv")
    try:
        frame = pd.DataFrame.from_records(rows)
        if parquet:
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    except Exception as exc:  # whatever pandas or Arrow cannot tabulate is the caller's input
        raise BadInput(
            "rows", f"the rows do not form a table: {type(exc).__name__}: {exc}"
        ) from exc
    return path


def attach(cfg: ModelConfig, rows: list[dict[str, Any]], actor: str) -> dict[str, Any]:
    """The rows through ``ingest_labels``, as if from a file."""
    with tempfile.TemporaryDirectory(prefix="mlsteward-outcomes-") as d:
        path = table_file(cfg, rows, Path(d))
        with audit_store() as store:
            try:
                result = ingest_labels(cfg, path, actor=actor, audit=store)
            except ContractViolation as exc:  # named by row; the file is ours, not theirs
                raise BadInput("rows", str(exc).replace(f"{path}: ", "")) from exc
            except (ValueError, TypeError, OverflowError) as exc:
                # an entity that cannot be compared with the logged ones
                raise BadInput("rows", str(exc)) from exc
    result = {k: v for k, v in result.items() if k != "path"}
    return {**result, "source": SOURCE}


@router.post(
    "/models/{model}/outcomes",
    response_model=OutcomesOut,
    responses=responses(401, 403, 404, 422),
)
def post_outcomes(
    who: Annotated[Principal, Depends(allowed(Permission.OUTCOMES))],
    cfg: Annotated[ModelConfig, Depends(path_model)],
    body: OutcomesBody,
) -> dict[str, Any]:
    """Attach outcomes that arrived later (entity, event time, label: a classifier's label or a
    regression model's observed value) to the prediction log; answers how many matched logged
    predictions (the others wait for later predictions)."""
    return attach(cfg, body.rows, who.actor)
