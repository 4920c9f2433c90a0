"""A registered version as a rebuild reads it: its recipe, checked against the SHA-256 recorded
at registration, and the metrics its training run logged.

The registry is governance's (``mlsteward.governance.registry``), a room above this one, so the
caller reads it and hands over the version and two reads (a run's file, a run's metrics); the
version is anything shaped like governance's ``VersionInfo`` (:class:`RegisteredVersion`), and
comes back out unchanged (``recorded.info``) for the registry calls a reproduction still makes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from mlsteward.config.models import ModelConfig
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import MlstewardError
from mlsteward.training.recipe import (
    RECIPE_ARTIFACT,
    RECIPE_SHA_TAG,
    recipe_sha256,
    recorded_config,
    recorded_snapshot,
)
from mlsteward.training.spec import TrainingSpec

RECORDED_METRIC_PREFIXES = ("test_", "val_")
"""The metrics a rebuild compares: those the training run logged for the refit model."""

DownloadRunFile = Callable[[str, str, Path], Path]
"""``(run id, artifact path, directory) -> local file`` (``registry.download_run_file``)."""
ReadRun = Callable[[str], tuple[dict[str, float], float | None]]
"""``run id -> (its metrics, its wall time in seconds or None)``."""


class RegisteredVersion(Protocol):
    """What a rebuild reads of a registered version (``governance.registry.VersionInfo``)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def tags(self) -> dict[str, str]: ...

    @property
    def artifact_sha256(self) -> str | None: ...


V = TypeVar("V", bound=RegisteredVersion)


@dataclass
class RecordedVersion(Generic[V]):
    """A registered version with the recipe and metrics it was registered with."""

    info: V
    recipe: dict[str, Any] | None
    recipe_problem: str | None
    """Why the recipe cannot be trusted (unreadable, or changed after registration), if so."""
    metrics: dict[str, float]
    training_seconds: float | None

    @cached_property
    def config(self) -> ModelConfig:
        """Validated once: every rebuild step reads the recorded config."""
        assert self.recipe is not None
        return recorded_config(self.recipe)

    @cached_property
    def spec(self) -> TrainingSpec:
        """The recorded search's settings (trials, seed, batch size, Dask plan), resolved once;
        no runner package is needed to rebuild."""
        assert self.recipe is not None
        tuning = self.recipe["tuning"]
        return TrainingSpec.resolve(
            self.config,
            max_evals=tuning["max_evals"],
            seed=tuning["seed"],
            require_runner=False,
        )

    @cached_property
    def snapshot(self) -> SnapshotInfo:
        assert self.recipe is not None
        return recorded_snapshot(self.recipe)


def load_recorded(info: V, download: DownloadRunFile, read_run: ReadRun) -> RecordedVersion[V]:
    """The version, its recipe (checked against the SHA-256 recorded at registration) and the
    metrics its training run logged.

    A recipe that cannot be read or does not hash to its tag is not an error here: the
    reproduction reports it as its first step (``recipe_problem``) and rebuilds nothing.

    Raises:
        MlstewardError: the version was registered without a recipe.
    """
    expected = info.tags.get(RECIPE_SHA_TAG)
    if not expected:
        raise MlstewardError(
            f"{info.name} v{info.version} was registered without a training recipe "
            f"({RECIPE_SHA_TAG} tag), so it cannot be rebuilt; versions trained from now on can"
        )
    recipe, problem = _read_recipe(info.run_id, expected, download)
    metrics, seconds = read_run(info.run_id)
    recorded = {k: v for k, v in metrics.items() if k.startswith(RECORDED_METRIC_PREFIXES)}
    return RecordedVersion(info, recipe, problem, recorded, seconds)


def _read_recipe(
    run_id: str, expected: str, download: DownloadRunFile
) -> tuple[dict[str, Any] | None, str | None]:
    with tempfile.TemporaryDirectory(prefix="mlsteward-recipe-") as d:
        try:
            recipe = json.loads(download(run_id, RECIPE_ARTIFACT, Path(d)).read_text())
        except Exception as exc:  # MLflow raises its own types; any failure is reported
            return None, f"recipe {RECIPE_ARTIFACT} of run {run_id}: {exc}"
    actual = recipe_sha256(recipe)
    if actual == expected:
        return recipe, None
    return recipe, (
        f"recipe {RECIPE_ARTIFACT} hashes to {actual}, not the registered {expected}: "
        "it was changed after registration"
    )
