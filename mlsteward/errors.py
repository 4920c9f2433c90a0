"""Errors users act on. Each carries a message that names the file, column or rule at fault."""

from __future__ import annotations


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


class PromotionError(MlstewardError):
    """A promotion or rollback was refused; the registry was left as it was."""


class ChampionChangedError(PromotionError):
    """The champion changed between a version's gates and its promotion (another run promoted
    meanwhile): the comparison is stale, and running the gates again settles it."""


class NotFoundError(MlstewardError):
    """A registered model, version or flow run that the user named does not exist."""
