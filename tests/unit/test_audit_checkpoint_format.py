"""Audit checkpoints without a database: what the signature covers, the file anchor, and the
settings that say where checkpoints live and how old they may be."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mlsteward.audit import AuditError
from mlsteward.audit.anchors import FileAnchor, PostgresAnchor, open_anchor
from mlsteward.audit.checkpoints import FORMAT, Checkpoint
from mlsteward.config import profiles, settings
from mlsteward.errors import ConfigError
from mlsteward.signing import keys

KEY = ec.generate_private_key(ec.SECP256R1())


def signed(**changes: object) -> Checkpoint:
    fields: dict = dict(
        format=FORMAT,
        store="sqlite:/srv/audit/audit.db",
        seq=41,
        head_hash="ab" * 32,
        records=41,
        ts="2026-12-01T10:00:00.000000Z",
        key_id=keys.key_id(KEY.public_key()),
        signature="",
    )
    fields.update(changes)
    unsigned = Checkpoint(**fields)
    return replace(unsigned, signature=keys.sign_bytes(unsigned.payload(), KEY))


def test_the_signature_covers_every_field_but_itself() -> None:
    checkpoint = signed()
    payload = json.loads(checkpoint.payload())
    assert "signature" not in payload and payload["head_hash"] == "ab" * 32
    assert checkpoint.payload() == json.dumps(
        payload, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")  # canonical: keys sorted, no whitespace
    assert checkpoint.signed_by(KEY.public_key())
    for change in ({"seq": 42}, {"head_hash": "cd" * 32}, {"records": 40}, {"store": "x"},
                   {"ts": "2026-12-01T10:00:00.000001Z"}, {"key_id": "0" * 16}):  # fmt: skip
        assert not replace(checkpoint, **change).signed_by(KEY.public_key()), change
    other = ec.generate_private_key(ec.SECP256R1())
    assert not checkpoint.signed_by(other.public_key())


def test_a_stored_checkpoint_must_have_its_shape() -> None:
    data = signed().to_dict()
    assert Checkpoint.from_dict(data) == Checkpoint(**data)
    assert Checkpoint.from_dict(data).to_dict() == data
    with pytest.raises(AuditError, match="lacks signature"):
        Checkpoint.from_dict({k: v for k, v in data.items() if k != "signature"})
    with pytest.raises(AuditError, match="seq is not int"):
        Checkpoint.from_dict({**data, "seq": "41"})
    with pytest.raises(AuditError, match="records is not int"):
        Checkpoint.from_dict({**data, "records": True})


def test_the_file_anchor_appends_lines_and_finds_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "anchors" / "checkpoints.jsonl"
    anchor = open_anchor(path.as_uri())
    assert isinstance(anchor, FileAnchor) and anchor.describe() == str(path)
    assert anchor.newest("sqlite:/srv/audit/audit.db") is None  # no file yet
    other_key = ec.generate_private_key(ec.SECP256R1())
    anchor.append(signed(seq=10, records=10))
    anchor.append(signed(seq=12, records=12))
    anchor.append(signed(store="sqlite:/elsewhere.db", seq=99, records=99))
    anchor.append(signed(seq=13, records=13, key_id=keys.key_id(other_key.public_key())))
    assert len(path.read_text().splitlines()) == 4
    assert anchor.newest("sqlite:/srv/audit/audit.db")["seq"] == 13
    assert anchor.newest("sqlite:/srv/audit/audit.db", keys.key_id(KEY.public_key()))["seq"] == 12
    assert anchor.newest("sqlite:/elsewhere.db")["seq"] == 99
    assert anchor.newest("sqlite:/nowhere.db") is None


def test_a_torn_last_line_is_skipped_and_does_not_spoil_the_next(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    anchor = FileAnchor(path)
    anchor.append(signed(seq=5, records=5))
    with path.open("ab") as fh:
        fh.write(b'{"format":"mlsteward-audit-checkpoint/1","seq":9')  # a crash mid-write
    assert anchor.newest("sqlite:/srv/audit/audit.db")["seq"] == 5
    anchor.append(signed(seq=6, records=6))
    assert anchor.newest("sqlite:/srv/audit/audit.db")["seq"] == 6
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 6


def test_a_checkpoint_beyond_the_tail_is_still_found(tmp_path: Path) -> None:
    anchor = FileAnchor(tmp_path / "checkpoints.jsonl")
    anchor.append(signed(store="sqlite:/quiet.db", seq=1, records=1))
    for seq in range(1, 400):  # ~150 KiB of another store's checkpoints after it
        anchor.append(signed(seq=seq, records=seq))
    assert (tmp_path / "checkpoints.jsonl").stat().st_size > 128 * 1024
    assert anchor.newest("sqlite:/quiet.db")["seq"] == 1
    assert anchor.newest("sqlite:/srv/audit/audit.db")["seq"] == 399


def test_anchor_urls_that_cannot_work_are_refused_by_name() -> None:
    with pytest.raises(AuditError, match="unsupported audit anchor 'https://x/y'"):
        open_anchor("https://x/y")
    with pytest.raises(AuditError, match="names a host"):
        open_anchor("file://server/share/checkpoints.jsonl")
    with pytest.raises(AuditError, match=r"u:\*\*\*@h") as caught:
        open_anchor("mysql://u:topsecret@h/db")
    assert "topsecret" not in str(caught.value)
    pg = open_anchor("postgresql://app:topsecret@db:5432/acme_anchor")
    assert isinstance(pg, PostgresAnchor) and "topsecret" not in pg.describe()


def test_the_local_anchor_is_outside_the_home_and_per_store(
    mlsteward_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSTEWARD_AUDIT_ANCHOR", raising=False)
    monkeypatch.delenv("MLSTEWARD_AUDIT_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = settings.audit_anchor_url()
    path = Path(url.removeprefix("file://"))
    assert url.startswith("file:///") and path.suffix == ".jsonl"
    assert path.parent == tmp_path / "state" / "mlsteward" / "anchors"
    assert not path.is_relative_to(mlsteward_home)
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", "postgresql://u:one@db:5432/audit")
    first = settings.audit_anchor_url()
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", "postgresql://v:two@db:5432/audit")
    assert settings.audit_anchor_url() == first != url  # the place, not who logs in
    monkeypatch.setenv("MLSTEWARD_AUDIT_ANCHOR", "file:///var/lib/anchors/x.jsonl")
    assert settings.audit_anchor_url() == "file:///var/lib/anchors/x.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("MLSTEWARD_AUDIT_ANCHOR")
    assert "/.local/state/mlsteward/anchors/" in settings.audit_anchor_url()


def test_production_keeps_checkpoints_in_their_own_database(
    mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLSTEWARD_AUDIT_URL", "MLSTEWARD_AUDIT_ANCHOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")
    monkeypatch.setenv("MLSTEWARD_POSTGRES_URL", "postgresql://app:s%40cret@db.internal:6543")
    monkeypatch.setenv("MLSTEWARD_DB_PREFIX", "acme")
    assert settings.audit_url().endswith("/acme_audit")
    assert settings.audit_anchor_url() == "postgresql://app:s%40cret@db.internal:6543/acme_anchor"
    assert "anchor" in profiles.PURPOSES  # provisioned with the others
    assert "s%40cret" not in settings.locations()["audit_anchor"]


def test_the_checkpoint_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", raising=False)
    assert settings.audit_checkpoint_hours() == 1.0
    monkeypatch.setenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", "0.25")
    assert settings.audit_checkpoint_hours() == 0.25
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", bad)
        with pytest.raises(ConfigError, match="MLSTEWARD_AUDIT_CHECKPOINT_HOURS"):
            settings.audit_checkpoint_hours()
