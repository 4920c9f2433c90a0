"""Registered versions are signed by the governance key, and every load checks the signature:
MLflow on SQLite in a temporary home, real XGBoost artifacts, the model-signing CLI itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.audit import Action, audit_store
from mlsteward.config import settings
from mlsteward.errors import SignatureError, SigningError
from mlsteward.governance import mlflow_adapter, registry, signatures
from mlsteward.governance import promotion as governance
from mlsteward.integrity import sha256_file
from mlsteward.signing import keys
from tests.support.governance import MODEL

BIN = Path(sys.executable).parent


def _model(rounds: int) -> tuple[xgb.XGBClassifier, pd.DataFrame]:
    """A few stumps on 40 rows: a real XGBoost artifact, different for each ``rounds``."""
    rng = np.random.default_rng(7)
    x = pd.DataFrame(
        {
            "age": rng.integers(20, 80, 40).astype("float32"),
            "chol": rng.normal(200, 30, 40).astype("float32"),
        }
    )
    y = (x["age"] > 50).astype("int64")
    return xgb.XGBClassifier(n_estimators=rounds, max_depth=1, n_jobs=1).fit(x, y), x.head(2)


def _register(rounds: int = 2) -> registry.VersionInfo:
    model, example = _model(rounds)
    run_id = mlflow_adapter.start_run(MODEL, f"train-{rounds}", {})
    registered = mlflow_adapter.log_and_register(
        run_id, model, example, MODEL, ["xgboost"], {"lifecycle": "candidate"}
    )
    mlflow_adapter.end_run(run_id)
    return registry.get_version(MODEL, registered.version)


def _stored_dir(info: registry.VersionInfo) -> Path:
    """Where the artifact store keeps a version's model directory (what an attacker edits)."""
    logged = mlflow_adapter.client().get_logged_model(info.source.removeprefix("models:/"))
    return Path(unquote(urlparse(logged.artifact_location).path))


def _tools_env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri()}


def _download_as_documented(info: registry.VersionInfo, into: Path) -> tuple[Path, Path]:
    """The model directory and its signature, downloaded with the commands docs/governance.md
    gives (each prints where it put what it downloaded)."""
    model_dir, signature_dir = into / f"v{info.version}", into / f"v{info.version}-signature"
    printed = []
    for args in (
        ["--artifact-uri", f"models:/{info.name}/{info.version}", "--dst-path", str(model_dir)],
        ["--run-id", info.run_id, "--artifact-path", signatures.SIGNATURE_ARTIFACT,
         "--dst-path", str(signature_dir)],
    ):  # fmt: skip
        done = subprocess.run(
            [str(BIN / "mlflow"), "artifacts", "download", *args],
            env=_tools_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        printed.append(Path(done.stdout.strip().splitlines()[-1]))
    assert printed == [model_dir, signature_dir / signatures.SIGNATURE_FILE], printed
    return printed[0], printed[1]


def _model_signing_verify(model_dir: Path, signature: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "model_signing"), "verify", "key", "--signature", str(signature)]
    command += ["--public_key", str(keys.public_key_path()), str(model_dir)]
    return subprocess.run(command, capture_output=True, text=True)


def test_a_registered_version_is_signed_and_loads_verified(mlsteward_home: Path) -> None:
    info = _register()
    public = keys.load_public_key()
    assert info.tags[signatures.SIGNATURE_TAG] == "signature/model.sig"
    assert info.tags[signatures.KEY_ID_TAG] == keys.key_id(public)
    verified = registry.load_verified(info)
    assert verified.sha256 == info.artifact_sha256
    assert verified.model.predict(_model(2)[1]).shape == (2,)
    with audit_store() as store:  # the local profile made the key on first use
        made = store.query(action=Action.SIGNING_KEY_CREATED)
    assert [(r.actor, r.details["key_id"]) for r in made] == [("governance", keys.key_id(public))]


def test_a_swapped_artifact_with_a_matching_sha_tag_is_refused(mlsteward_home: Path) -> None:
    info = _register(2)
    swapped = _stored_dir(info) / mlflow_adapter.MODEL_FILE
    _model(5)[0].save_model(str(swapped))
    registry.set_tags(MODEL, info.version, {registry.SHA_TAG: sha256_file(swapped)})
    tampered = registry.get_version(MODEL, info.version)

    with pytest.raises(
        SignatureError, match=rf"{MODEL} v1: the files differ .* model\.ubj changed"
    ):
        registry.load_verified(tampered)
    # loading it by version through governance is refused the same way, and audited
    with pytest.raises(SignatureError):
        governance.load_version(MODEL, info.version, actor="user:scorer")
    with audit_store() as store:
        [failed] = store.query(model=MODEL, action=Action.SIGNATURE_FAILED)
    assert failed.actor == "user:scorer" and "model.ubj changed" in failed.reason


def test_another_versions_genuine_artifact_and_signature_are_refused(mlsteward_home: Path) -> None:
    """v1's files and v1's signature verify with the governance key; they are still not v2."""
    first, second = _register(2), _register(5)
    shutil.copytree(_stored_dir(first), _stored_dir(second), dirs_exist_ok=True)
    first_signature = Path(
        registry.download_run_file(first.run_id, signatures.SIGNATURE_ARTIFACT, mlsteward_home)
    )
    mlflow_adapter.client().log_artifact(
        second.run_id, str(first_signature), signatures.SIGNATURE_DIR
    )
    registry.set_tags(MODEL, second.version, {registry.SHA_TAG: first.artifact_sha256})
    replayed = registry.get_version(MODEL, second.version)

    with pytest.raises(SignatureError, match=r"v2: the signed artifact is m-\w+, not the logged"):
        registry.load_verified(replayed)
    registry.load_verified(first)  # the original still loads


def test_a_version_registered_unsigned_is_refused(mlsteward_home: Path) -> None:
    info = _register()
    registry.delete_tag(MODEL, info.version, signatures.SIGNATURE_TAG)
    with pytest.raises(SignatureError, match="v1 was registered unsigned"):
        registry.load_verified(registry.get_version(MODEL, info.version))


def test_a_deleted_signature_is_refused(mlsteward_home: Path) -> None:
    info = _register()
    run_dir = Path(
        unquote(urlparse(mlflow_adapter.client().get_run(info.run_id).info.artifact_uri).path)
    )
    (run_dir / signatures.SIGNATURE_ARTIFACT).unlink()
    with pytest.raises(SignatureError, match=r"signature signature/model\.sig is missing"):
        registry.load_verified(info)


def test_model_signing_cli_verifies_a_downloaded_version_and_refuses_a_swap(
    mlsteward_home: Path, tmp_path: Path
) -> None:
    info = _register()
    model_dir, signature = _download_as_documented(info, tmp_path / "downloads")
    assert (model_dir / "registered_model_meta").exists()  # written by MLflow's download
    ok = _model_signing_verify(model_dir, signature)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stderr

    _model(5)[0].save_model(str(_stored_dir(info) / mlflow_adapter.MODEL_FILE))
    swapped_dir, _ = _download_as_documented(info, tmp_path / "after-swap")
    refused = _model_signing_verify(swapped_dir, signature)
    assert refused.returncode == 1
    assert "Hash mismatch for 'model.ubj'" in refused.stderr


def test_outside_the_local_profile_registration_needs_a_given_key(
    mlsteward_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile on this machine's files but not ``local``: no key is made for it."""
    profile = tmp_path / "airgapped.yaml"
    profile.write_text("description: one machine, keys managed elsewhere\n")
    monkeypatch.setenv("MLSTEWARD_PROFILE", str(profile))

    with pytest.raises(SigningError, match=r"no governance signing key for profile 'airgapped'"):
        _register()
    assert registry.list_versions(MODEL) == []
    assert not keys.private_key_path().exists()

    given = keys.init_keys()  # what a deployment mounts, then passes as the PEM text
    pem = given.private.read_text()
    given.private.unlink()
    given.public.unlink()
    monkeypatch.setenv(keys.PRIVATE_PEM_ENV, pem)
    info = _register()
    assert info.tags[signatures.KEY_ID_TAG] == given.key_id
    assert registry.load_verified(info).info.version == info.version
