"""The governance key (where it comes from, how it is stored) and model directories signed and
verified in the OpenSSF model-signing format, on plain files without MLflow."""

from __future__ import annotations

import base64
import json
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlsteward.audit import Action, audit_store
from mlsteward.errors import SignatureError, SigningError
from mlsteward.governance import signatures
from mlsteward.signing import keys


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory as MLflow downloads one (the client-side meta file included)."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.ubj").write_bytes(bytes(range(256)) * 64)
    (d / "MLmodel").write_text("model_id: m-0123\nflavors: {}\n")
    (d / "registered_model_meta").write_text("model_name: m\nmodel_version: '1'\n")
    return d


# -- the key -----------------------------------------------------------------------------------


def test_init_keys_writes_a_private_key_only_its_owner_reads(mlsteward_home: Path) -> None:
    made = keys.init_keys()
    assert made.created and made.private == mlsteward_home / "keys" / "governance.key"
    assert stat.S_IMODE(made.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.public.stat().st_mode) == 0o644
    assert made.key_id == keys.key_id(keys.load_public_key())

    again = keys.init_keys()  # an existing key is kept: old signatures keep verifying
    assert not again.created and again.key_id == made.key_id
    replaced = keys.init_keys(force=True)
    assert replaced.created and replaced.key_id != made.key_id


def test_pem_variable_wins_over_the_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    keys.init_keys()
    mounted = ec.generate_private_key(ec.SECP256R1())
    monkeypatch.setenv(keys.PRIVATE_PEM_ENV, _pem(mounted))
    assert keys.key_id(keys.load_private_key().public_key()) == keys.key_id(mounted.public_key())

    monkeypatch.setenv(keys.PRIVATE_PEM_ENV, "not a key")
    with pytest.raises(SigningError, match=keys.PRIVATE_PEM_ENV):
        keys.load_private_key()


def test_public_key_is_derived_from_a_mounted_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounted = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "secret" / "governance.pem"
    path.parent.mkdir()
    path.write_text(_pem(mounted))
    monkeypatch.setenv(keys.PRIVATE_FILE_ENV, str(path))
    assert keys.configured() and not keys.public_key_path().exists()
    assert keys.public_pem(keys.load_public_key()) == keys.public_pem(mounted.public_key())


def test_no_key_names_how_to_make_one() -> None:
    assert not keys.configured()
    with pytest.raises(SigningError, match="mlsteward keys init"):
        keys.load_private_key()
    with pytest.raises(SigningError, match="mlsteward keys init"):
        keys.load_public_key()


def test_signed_bytes_verify_and_tampered_ones_do_not() -> None:
    keys.init_keys()
    signature = keys.sign_bytes(b"promote heart_disease v3")
    assert keys.verify_bytes(b"promote heart_disease v3", signature)
    assert not keys.verify_bytes(b"promote heart_disease v4", signature)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not keys.verify_bytes(b"promote heart_disease v3", signature, other)


# -- the key for signing models ----------------------------------------------------------------


def test_first_use_in_the_local_profile_makes_the_key_and_audits_it(
    mlsteward_home: Path,
) -> None:
    key = signatures.signing_key_for_use()
    assert (mlsteward_home / "keys" / "governance.key").exists()
    assert keys.key_id(key.public_key()) == keys.key_id(keys.load_public_key())
    signatures.signing_key_for_use()  # the second use finds it
    with audit_store() as store:
        made = store.query(action=Action.SIGNING_KEY_CREATED)
    assert [(r.actor, r.details["key_id"]) for r in made] == [
        ("governance", keys.key_id(key.public_key()))
    ]


def test_a_missing_key_outside_the_local_profile_is_refused(
    mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")
    with pytest.raises(SigningError) as err:
        signatures.signing_key_for_use()
    message = str(err.value)
    assert "'production'" in message
    for source in (keys.PRIVATE_FILE_ENV, keys.PRIVATE_PEM_ENV, keys.PRIVATE_BLOCK_ENV):
        assert source in message
    assert not (mlsteward_home / "keys").exists()


# -- signing and verifying a model directory ---------------------------------------------------


def test_a_signed_directory_verifies_and_ignores_mlflows_meta_file(
    model_dir: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "model.sig"
    kid = signatures.sign_model_dir(model_dir, signature)
    assert kid == keys.key_id(keys.load_public_key())
    signatures.verify_model_dir(model_dir, signature)
    # MLflow writes the name and version it was asked for on each download
    (model_dir / "registered_model_meta").write_text("model_name: m\nmodel_version: '7'\n")
    signatures.verify_model_dir(model_dir, signature)


def test_a_changed_added_or_removed_file_is_named(model_dir: Path, tmp_path: Path) -> None:
    signature = tmp_path / "model.sig"
    signatures.sign_model_dir(model_dir, signature)
    model = model_dir / "model.ubj"
    original = model.read_bytes()

    model.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    with pytest.raises(SignatureError, match=r"m v1: the files differ .* model\.ubj changed"):
        signatures.verify_model_dir(model_dir, signature, label="m v1")
    model.write_bytes(original)

    (model_dir / "extra.py").write_text("import os")
    with pytest.raises(SignatureError, match=r"unsigned file\(s\) extra\.py"):
        signatures.verify_model_dir(model_dir, signature)
    (model_dir / "extra.py").unlink()

    model.unlink()
    with pytest.raises(SignatureError, match=r"missing file\(s\) model\.ubj"):
        signatures.verify_model_dir(model_dir, signature)


def test_another_key_an_altered_or_a_missing_signature_is_refused(
    model_dir: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "model.sig"
    signatures.sign_model_dir(model_dir, signature)

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureError, match="signed by another key"):
        signatures.verify_model_dir(model_dir, signature, other)

    bundle = json.loads(signature.read_text())
    sig = bundle["dsseEnvelope"]["signatures"][0]
    raw = bytearray(base64.b64decode(sig["sig"]))
    raw[-1] ^= 0x01
    sig["sig"] = base64.b64encode(bytes(raw)).decode("ascii")
    altered = tmp_path / "altered.sig"
    altered.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="does not verify with the governance key"):
        signatures.verify_model_dir(model_dir, altered)

    altered.write_text("{}")
    with pytest.raises(SignatureError, match="cannot be read"):
        signatures.verify_model_dir(model_dir, altered)
    with pytest.raises(SignatureError, match="no signature at"):
        signatures.verify_model_dir(model_dir, tmp_path / "absent.sig")


def test_a_key_from_a_variable_signs_through_a_private_file_that_is_removed(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    mounted = ec.generate_private_key(ec.SECP256R1())
    monkeypatch.setenv(keys.PRIVATE_PEM_ENV, _pem(mounted))
    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")  # a key is given, none is made

    with signatures._private_key_file(mounted) as path:
        assert path.is_relative_to(scratch)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists()

    signature = tmp_path / "model.sig"
    assert signatures.sign_model_dir(model_dir, signature) == keys.key_id(mounted.public_key())
    assert list(scratch.iterdir()) == []
    signatures.verify_model_dir(model_dir, signature, mounted.public_key())


def test_a_key_file_is_used_where_it_lies(mlsteward_home: Path) -> None:
    made = keys.init_keys()
    with signatures._private_key_file(keys.load_private_key()) as path:
        assert path == made.private
    assert made.private.exists()
