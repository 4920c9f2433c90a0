"""Lineage: everything needed to say exactly what produced a model version and to rebuild it.

Recorded as flat ``lineage.*`` tags on the registered version (searchable in the MLflow UI and
API) and as one JSON document on the run. A value we cannot determine is recorded as
``unknown`` rather than omitted, so a missing fact is visible instead of silently absent.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mlsteward.errors import MlstewardError
from mlsteward.integrity import sha256_file

TRACKED_LIBRARIES = (
    "mlsteward",
    "prefect",
    "mlflow",
    "feast",
    "xgboost",
    "hyperopt",
    "evidently",
    "shap",
    "pandas",
    "numpy",
    "scikit-learn",
    "pyarrow",
    "duckdb",
)
UNKNOWN = "unknown"


def git_info(root: Path) -> dict[str, str]:
    """Commit and dirty flag of the code that trained; 'unknown' outside a git checkout."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = run("rev-parse", "HEAD")
    if not commit:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": UNKNOWN if status is None else str(bool(status)).lower()}


def require_git_ref(root: Path, ref: str) -> str:
    """The commit ``ref`` names, provided it is the commit checked out at ``root``.

    Why: CI asks for a training run of the commit it tested, but a deployment runs whatever its
    working directory holds. Training other code than requested would register a version whose
    lineage says one commit while the request meant another, so the run refuses to start.

    Raises:
        MlstewardError: ``ref`` is unknown to the checkout, or names another commit than HEAD.
    """

    def rev(name: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None

    head = rev("HEAD")
    if head is None:
        raise MlstewardError(f"git ref {ref!r} requested, but {root} is not a git checkout")
    wanted = rev(ref)
    if wanted is None:
        raise MlstewardError(
            f"git ref {ref!r} is unknown to the checkout at {root} (at {head[:12]}): fetch it "
            "and check it out where the deployment runs"
        )
    if wanted != head:
        raise MlstewardError(
            f"git ref {ref!r} is commit {wanted[:12]}, but the deployment's checkout at {root} "
            f"is at {head[:12]}: check out {wanted[:12]} there (or leave git_ref empty to "
            "train the checked-out code)"
        )
    return head


def file_sha256(path: Path) -> str:
    if not path.exists():
        return UNKNOWN
    return sha256_file(path)


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = UNKNOWN
    out["python"] = platform.python_version()
    return out


@dataclass
class Lineage:
    model: str
    data_digest: str
    data_path: str
    data_source: str
    feature_service: str
    features: list[str]
    training_rows: int
    time_range: tuple[str, str]
    split_sizes: dict[str, int]
    best_params: dict[str, Any]
    seed: int
    max_evals: int
    git_commit: str
    git_dirty: str
    lock_sha256: str
    config_sha256: str
    training_set_digest: str = UNKNOWN
    best_iteration: int = -1
    libraries: dict[str, str] = field(default_factory=dict)
    tuning_execution: dict[str, Any] | str = UNKNOWN
    """Runner, batch size and per-trial XGBoost threads of the search. The batch size decides
    which trials TPE suggested, so a full rebuild must use it; the runner and threads only
    say where and how fast the trials ran."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_tags(self) -> dict[str, str]:
        """Flat ``lineage.*`` strings: MLflow tags are strings, and flat keys are searchable."""
        d = self.to_dict()
        tags = {
            f"lineage.{k}": v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in d.items()
            if k not in ("libraries", "time_range")
        }
        tags["lineage.time_range_start"], tags["lineage.time_range_end"] = self.time_range
        tags.update({f"lineage.lib.{k}": v for k, v in self.libraries.items()})
        return tags


def build_lineage(
    *,
    model: str,
    data_digest: str,
    data_path: str,
    data_source: str,
    feature_service: str,
    features: list[str],
    training_rows: int,
    time_range: tuple[str, str],
    split_sizes: dict[str, int],
    best_params: dict[str, Any],
    seed: int,
    max_evals: int,
    project_root: Path,
    config_path: Path,
    training_set_digest: str = UNKNOWN,
    best_iteration: int = -1,
    tuning_execution: dict[str, Any] | None = None,
) -> Lineage:
    git = git_info(project_root)
    return Lineage(
        model=model,
        data_digest=data_digest,
        data_path=data_path,
        data_source=data_source,
        feature_service=feature_service,
        features=features,
        training_rows=training_rows,
        time_range=time_range,
        split_sizes=split_sizes,
        best_params=best_params,
        seed=seed,
        max_evals=max_evals,
        git_commit=git["commit"],
        git_dirty=git["dirty"],
        lock_sha256=file_sha256(project_root / "uv.lock"),
        config_sha256=file_sha256(config_path),
        training_set_digest=training_set_digest,
        best_iteration=best_iteration,
        libraries=library_versions(),
        tuning_execution=UNKNOWN if tuning_execution is None else tuning_execution,
    )


REQUIRED_TAGS = (
    "lineage.data_digest",
    "lineage.data_path",
    "lineage.feature_service",
    "lineage.features",
    "lineage.training_rows",
    "lineage.time_range_start",
    "lineage.time_range_end",
    "lineage.best_params",
    "lineage.seed",
    "lineage.git_commit",
    "lineage.git_dirty",
    "lineage.lock_sha256",
    "lineage.lib.xgboost",
    "lineage.training_set_digest",
    "lineage.best_iteration",
    "lineage.recipe_sha256",
    "model_artifact_sha256",
)
