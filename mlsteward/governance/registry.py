"""The MLflow model registry, as mlsteward uses it: aliases, version tags, verified loading.

Aliases (``champion``, ``challenger``) replace the deprecated stages. MLflow moves an alias in
one call, which is what makes a promotion atomic; everything else about a version (lifecycle,
validation status, timestamps) lives in version tags. Loading always goes through
:func:`load_verified`, which checks the stored artifact first (its hash, and its signature by the
governance key) and then loads exactly the bytes it checked, so a tampered file can neither be
promoted nor scored.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from mlsteward.errors import IntegrityError, NotFoundError, SignatureError
from mlsteward.features.encoding import FeatureEncoding
from mlsteward.governance import signatures
from mlsteward.governance.mlflow_adapter import ARTIFACT_NAME, MODEL_FILE, client
from mlsteward.governance.mlflow_outage import call, connection_failure, unavailable
from mlsteward.integrity import sha256_file

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

CHAMPION = "champion"
CHALLENGER = "challenger"
SHA_TAG = "model_artifact_sha256"


class TrainedVersion(BaseModel):
    """A version the training run just registered: what it is, how it scored, where it came
    from. The training flow's result adds what governance decided about it."""

    model: str
    version: str
    model_uri: str
    run_id: str
    artifact_sha256: str
    test_metrics: dict[str, float]
    best_params: dict[str, Any]
    trials: int
    threshold: float | None
    """The label cut-off; None for a regression model."""
    lineage: dict[str, Any]
    task: str = "binary_classification"
    objective: str = "binary:logistic"


@dataclass(frozen=True)
class VersionInfo:
    """One registered version with what governance reads from it."""

    name: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_at_ms: int = 0

    @property
    def lifecycle(self) -> str:
        return self.tags.get("lifecycle", "candidate")

    @property
    def validation_status(self) -> str | None:
        return self.tags.get("validation_status")

    @property
    def artifact_sha256(self) -> str | None:
        return self.tags.get(SHA_TAG)

    @property
    def decision_threshold(self) -> float:
        return float(self.tags.get("decision_threshold", 0.5))

    @property
    def encoding(self) -> FeatureEncoding:
        return FeatureEncoding.from_dict(json.loads(self.tags["feature_encoding"]))

    @property
    def task(self) -> str:
        """As tagged at registration (versions from before regression are classifiers)."""
        return self.tags.get("task", "binary_classification")

    def metric(self, name: str) -> float | None:
        value = self.tags.get(f"test_{name}")
        return float(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "lifecycle": self.lifecycle,
            "validation_status": self.validation_status,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "artifact_sha256": self.artifact_sha256,
            "created_at_ms": self.created_at_ms,
        }


def _info(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        aliases=tuple(getattr(mv, "aliases", None) or ()),
        created_at_ms=int(mv.creation_timestamp or 0),
    )


def _missing(exc: MlflowException) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower()


def get_version(name: str, version: str | int) -> VersionInfo:
    try:
        return _info(client().get_model_version(name, str(version)))
    except MlflowException as exc:
        if _missing(exc):
            raise NotFoundError(f"{name} has no registered version {version}") from exc
        raise


def version_by_alias(name: str, alias: str) -> VersionInfo | None:
    """None when the alias (or the registered model) does not exist: "no champion yet" is a
    normal state, not an error."""
    try:
        return _info(client().get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def version_or_champion(name: str, version: str | None, *, purpose: str) -> VersionInfo:
    """The version named, or the champion when none is.

    Raises:
        NotFoundError: no such version, or no champion when no version is named (the message
            asks to name one to ``purpose``).
    """
    if version:
        return get_version(name, version)
    champion = version_by_alias(name, CHAMPION)
    if champion is None:
        raise NotFoundError(f"{name} has no champion; name the version to {purpose}")
    return champion


def list_versions(name: str) -> list[VersionInfo]:
    """Every version of a model, oldest first."""
    found = client().search_model_versions(f"name = '{name}'")
    return sorted((_info(mv) for mv in found), key=lambda v: int(v.version))


VersionKey = tuple[str, str]
"""(model, version): how a page looks up a version it has already read."""


def live_versions() -> dict[VersionKey, VersionInfo]:
    """Every model's champion, challenger and unvalidated candidates in one registry search.

    A page about all models would otherwise read two or three versions per model, one query
    each (20 models: 145 ms against 31). The filter only decides what is fetched ahead: a
    caller looks a version up here and reads it on its own when it is missing, so a version
    whose lifecycle tag is late or odd costs a query, never a wrong answer.
    """
    found = client().search_model_versions("tags.lifecycle LIKE 'c%'")
    return {(mv.name, str(mv.version)): _info(mv) for mv in found}


def get_known_version(
    name: str, version: str, known: dict[VersionKey, VersionInfo] | None
) -> VersionInfo:
    """``version`` from ``known`` (see :func:`live_versions`), else from the registry.

    Raises:
        NotFoundError: no such registered version.
    """
    hit = (known or {}).get((name, str(version)))
    return hit if hit is not None else get_version(name, version)


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    try:
        client().delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if not _missing(exc):
            raise


def point_alias(name: str, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it when there is none to point at."""
    if version is None:
        delete_alias(name, alias)
    else:
        set_alias(name, alias, version)


def set_tags(name: str, version: str, tags: dict[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        c.set_model_version_tag(name, str(version), key, text)


def delete_tag(name: str, version: str, key: str) -> None:
    try:
        client().delete_model_version_tag(name, str(version), key)
    except MlflowException as exc:
        if not _missing(exc):
            raise


def set_description(name: str, version: str, text: str) -> None:
    client().update_model_version(name, str(version), description=text)


def log_version_artifact(info: VersionInfo, local_path: Path, artifact_dir: str) -> str:
    """Attach a file to the run that produced a version; returns its artifact URI."""
    client().log_artifact(info.run_id, str(local_path), artifact_dir)
    return f"runs:/{info.run_id}/{artifact_dir}/{local_path.name}"


def download_run_file(run_id: str, path: str, dst: Path) -> Path:
    """One file of a run's artifacts, by the run's artifact URI: a ``runs:/`` address also
    searches the run's logged models, which doubles the cost (every load reads a signature)."""
    root = client().get_run(run_id).info.artifact_uri.rstrip("/")
    uri = f"{root}/{path.lstrip('/')}"
    return Path(
        call(
            f"downloading {path}",
            lambda: mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)),
        )
    )


@dataclass(frozen=True)
class VerifiedModel:
    """A model loaded from bytes whose SHA-256 matched the registered one and whose files the
    governance key signed."""

    info: VersionInfo
    model: xgb.XGBClassifier | xgb.XGBRegressor
    """A classifier, or a regressor when the signed artifact's objective is a regression one."""
    sha256: str
    objective: str = "binary:logistic"
    """XGBoost's objective as saved in the verified file (``count:poisson`` predicts through a
    log link, so its explanations are on the log scale until restated)."""

    @property
    def is_regression(self) -> bool:
        import xgboost as xgb  # already loaded: this object holds an XGBoost model

        return isinstance(self.model, xgb.XGBRegressor)

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        """What the model answers per encoded row, as float64: the positive class's
        probability, or a regression model's predicted value (no rows: an empty array)."""
        if not len(x):
            return np.zeros(0, dtype=np.float64)
        if self.is_regression:
            return np.asarray(self.model.predict(x), dtype=np.float64)
        return np.asarray(self.model.predict_proba(x)[:, 1], dtype=np.float64)


_MODEL_ID = re.compile(r"^model_id: (\S+)$", re.MULTILINE)


def _download_signature(info: VersionInfo, artifact: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return download_run_file(info.run_id, artifact, dst)
    except (MlflowException, OSError) as exc:
        if connection_failure(exc) is not None:
            # an outage says nothing about the signature: no refusal, no tampering reported
            raise unavailable(exc, f"downloading {artifact}") from exc
        raise SignatureError(
            f"{info.name} v{info.version}: its signature {artifact} is missing from run "
            f"{info.run_id} ({exc}); refusing to use it"
        ) from None


def _check_logged_model(info: VersionInfo, model_dir: Path) -> None:
    """The signed files name the logged model the version was registered from (``MLmodel``
    records it): another version's artifact and signature, both genuine, are refused here."""
    expected = info.source.removeprefix("models:/")
    if info.source == expected or "/" in expected:
        return  # not a logged-model source (versions registered before MLflow 3)
    found = _MODEL_ID.search((model_dir / "MLmodel").read_text(encoding="utf-8"))
    if found is None or found.group(1).strip("'\"") != expected:
        named = found.group(1) if found else "no logged model"
        raise SignatureError(
            f"{info.name} v{info.version}: the signed artifact is {named}, not the logged model "
            f"{expected} the version was registered from; refusing to use it"
        )


def check_artifact(info: VersionInfo, dst: Path) -> tuple[Path, str]:
    """Download the stored artifact once, then check it two ways: its ``model.ubj`` against the
    SHA-256 tag (a hint: a swapped file with an unchanged tag is named as such), and every file
    against the signature by the governance key (the proof: the tag lives in the same writable
    store as the artifact, the private key does not).

    Raises:
        IntegrityError: digests differ or no digest was recorded; the message carries both.
        SignatureError: the version was registered unsigned, its signature is missing or does
            not verify with the governance public key, or it signs another logged model.
        SigningError: no governance public key to verify with.
    """
    label = f"{info.name} v{info.version}"
    expected = info.artifact_sha256
    if not expected:
        raise IntegrityError(
            f"{label}: no {SHA_TAG} tag was recorded at registration, so the artifact cannot be "
            "verified"
        )
    signature_at = info.tags.get(signatures.SIGNATURE_TAG)
    if not signature_at:
        raise SignatureError(
            f"{label} was registered unsigned (no {signatures.SIGNATURE_TAG} tag): nothing proves "
            "its artifact is the one governance registered; train a new version to use it"
        )
    model_dir = dst / ARTIFACT_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    local = Path(
        call(
            f"downloading {label}",
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=info.source, dst_path=str(model_dir)
            ),
        )
    )
    path = local / MODEL_FILE
    if not path.exists():
        raise IntegrityError(f"{label}: artifact {MODEL_FILE} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{label}: model artifact SHA-256 {actual} does not match the registered "
            f"{expected}; refusing to use it"
        )
    signature = _download_signature(info, signature_at, dst / signatures.SIGNATURE_DIR)
    signatures.verify_model_dir(local, signature, label=label)
    _check_logged_model(info, local)
    return path, actual


def load_verified(info: VersionInfo) -> VerifiedModel:
    """Check, then load the very file that was checked (no window for a swap in between)."""
    with tempfile.TemporaryDirectory(prefix="mlsteward-model-") as d:
        path, digest = check_artifact(info, Path(d))
        model, objective = _wrapper(path)
    return VerifiedModel(info=info, model=model, sha256=digest, objective=objective)


def _wrapper(path: Path) -> tuple[xgb.XGBClassifier | xgb.XGBRegressor, str]:
    """The scikit-learn model the file holds, decided by the objective saved in the verified
    file itself, not by a tag anyone with registry access could edit."""
    # Imported here: xgboost (with scikit-learn and SciPy) costs ~0.7 s, and commands that only
    # read the registry (status, report) never load a model.
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(path))
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    model = xgb.XGBClassifier() if objective.startswith("binary:") else xgb.XGBRegressor()
    model.load_model(str(path))
    return model, str(objective)
