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
