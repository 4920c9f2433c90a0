"""Errors users act on. Each carries a message that names the file, column or rule at fault.

They are refusals, not bugs: :func:`quiet_refusals` keeps their tracebacks out of Prefect's run
logs, where a bug's traceback still goes.
"""

from __future__ import annotations

import logging


class MlstewardError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class ConfigError(MlstewardError):
    """A model config file is missing, unparsable or breaks the schema."""


class ContractViolation(MlstewardError):
    """Input data broke the data contract so badly that nothing may be ingested or trained."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class NoSnapshotError(MlstewardError):
    """Training was asked for before any data passed ingestion."""


class IntegrityError(MlstewardError):
    """A model artifact's SHA-256 differs from the one recorded at registration."""


class SignatureError(IntegrityError):
    """A model artifact's signature by the governance key is missing, made by another key, or
    does not cover the files that were downloaded."""


class PromotionError(MlstewardError):
    """A promotion or rollback was refused; the registry was left as it was."""


class ChampionChangedError(PromotionError):
    """The champion changed between a version's gates and its promotion (another run promoted
    meanwhile): the comparison is stale, and running the gates again settles it."""


class AliasMismatchError(PromotionError):
    """The MLflow ``champion`` alias names another version than the governance record: someone
    moved it outside governance, or a promotion was interrupted. Nothing is loaded from the
    alias until ``mlsteward audit reconcile --repair`` puts it back."""

    def __init__(self, message: str, *, model: str, alias: str | None, recorded: str | None):
        super().__init__(message)
        self.model, self.alias, self.recorded = model, alias, recorded


class SigningError(MlstewardError):
    """No governance key where one is needed, or a signature that does not verify."""


class NotFoundError(MlstewardError):
    """A registered model, version or flow run that the user named does not exist."""


class AuthenticationError(MlstewardError):
    """No credentials, or credentials that prove nobody: a missing, malformed, expired or revoked
    token (HTTP 401)."""


class PermissionDeniedError(MlstewardError):
    """An authenticated principal asked for something its roles do not allow (HTTP 403); the
    message names the permission."""

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
"""Prefect's loggers for flow and task runs (the engines log a run's exception through them)."""


class RefusalLogFilter(logging.Filter):
    """Prefect logs the exception of a failed task or flow run with its full traceback, then the
    state the run ends in. For a refusal the traceback says nothing the message does not, so its
    record is dropped and the run's state line ends in the message's first line instead."""

    def __init__(self) -> None:
        super().__init__()
        self._refused: dict[str, str] = {}  # run id -> first line of its refusal

    def filter(self, record: logging.LogRecord) -> bool:
        run = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, MlstewardError):
            if run is not None:
                self._refused[str(run)] = str(exc).split("\n", 1)[0]
            return False
        if run is not None and isinstance(record.msg, str):
            state = record.msg.removeprefix("Finished in state ")
            if state != record.msg and str(run) in self._refused:
                why = self._refused.pop(str(run))
                record.msg, record.args = f"Finished in state {state.split('(')[0]}: {why}", ()
        return True


def quiet_refusals() -> None:
    """Log refusals in Prefect's run loggers as one line each (found by name: no Prefect
    import). Idempotent; a traceback of any other exception is logged as before."""
    shared = RefusalLogFilter()
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RefusalLogFilter) for f in logger.filters):
            logger.addFilter(shared)
