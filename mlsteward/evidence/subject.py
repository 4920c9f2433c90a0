"""The version a pack is about, read once: its registry entry, its model's audit records, its
recorded recipe and configuration; and what each collector adds to the pack (:class:`Pieces`).

A version counts as registered when the registry holds it and the audit trail holds its
``version_registered`` record: a version put into MLflow by hand has no governed history, so
there is nothing an evidence pack could vouch for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.governance import mlflow_adapter, registry
from mlsteward.governance.registry import VersionInfo
from mlsteward.training.recorded import RecordedVersion, load_recorded


@dataclass
class Pieces:
    """What collectors wrote: pack-relative files by evidence kind, why a kind has nothing for
    this version, and what a reader should know that stopped nothing."""

    files: dict[str, list[str]] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, kind: str, *rels: str) -> None:
        self.files.setdefault(kind, []).extend(rels)
        self.absent.pop(kind, None)

    def none(self, kind: str, why: str) -> None:
        if kind not in self.files:
            self.absent.setdefault(kind, why)

    def merge(self, other: Pieces) -> None:
        for kind, rels in other.files.items():
            self.add(kind, *rels)
        for kind, why in other.absent.items():
            self.none(kind, why)
        self.warnings.extend(other.warnings)


@dataclass
class Subject:
    """One registered version and everything collectors read about it."""

    model: str
    version: str
    info: VersionInfo
    own: list[AuditRecord]
    """Every record of the model, oldest first."""
    registered: AuditRecord
    recorded: RecordedVersion[VersionInfo] | None
    recorded_problem: str | None
    cfg: ModelConfig | None
    """The configuration the version was trained with (its recipe's), else today's, else None."""
    cfg_source: str

    @property
    def version_records(self) -> list[AuditRecord]:
        return [r for r in self.own if r.version == self.version]

    @property
    def since_registration(self) -> list[AuditRecord]:
        return [r for r in self.own if r.seq >= self.registered.seq]

    @property
    def data_digest(self) -> str | None:
        tagged = self.info.tags.get("lineage.data_digest")
        recorded = self.registered.details.get("data_digest")
        return tagged or (str(recorded) if recorded else None)

    @property
    def recipe(self) -> dict[str, Any] | None:
        return self.recorded.recipe if self.recorded is not None else None


def resolve_subject(model: str, version: str, store: AuditStore) -> Subject:
    """Read the version from the registry and the audit trail.

    Raises:
        NotFoundError: the registry has no such version, or the audit trail has no record of
            its registration.
    """
    info = registry.get_version(model, version)
    own = store.query(model=model)
    registered = next(
        (r for r in own if r.action == Action.VERSION_REGISTERED and r.version == info.version),
        None,
    )
    if registered is None:
        raise NotFoundError(
            f"{model} v{info.version} is in the registry but the audit trail has no "
            "version_registered record of it: it was not registered through mlsteward, so no "
            "governed history exists to pack"
        )
    recorded, problem = _recorded(info)
    cfg, source = _configuration(model, recorded)
    return Subject(
        model=model,
        version=info.version,
        info=info,
        own=own,
        registered=registered,
        recorded=recorded,
        recorded_problem=problem,
        cfg=cfg,
        cfg_source=source,
    )


def _recorded(info: VersionInfo) -> tuple[RecordedVersion[VersionInfo] | None, str | None]:
    try:
        recorded = load_recorded(info, registry.download_run_file, mlflow_adapter.run_metrics)
    except MlstewardError as exc:
        return None, str(exc)
    return recorded, recorded.recipe_problem


def _configuration(
    model: str, recorded: RecordedVersion[VersionInfo] | None
) -> tuple[ModelConfig | None, str]:
    if recorded is not None and recorded.recipe is not None and recorded.recipe_problem is None:
        try:
            return recorded.config, "the training recipe (lineage/recipe.json)"
        except (MlstewardError, ValueError):
            pass  # a recipe whose config no longer validates: today's configuration stands in
    try:
        return get_model_config(model), "today's model configuration (no usable recipe)"
    except MlstewardError:
        return None, "none"
