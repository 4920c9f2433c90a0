"""`mlsteward evidence`: the pack of a registered version holds every piece, verifies offline
from its zip alone, names what was tampered with, lists its gaps, and refuses an unknown
version without leaving anything behind.

Real MLflow (SQLite), the SQLite audit trail with its anchor, Prefect's harness; one trained
stack for the module (v1 champion, v2 challenger) with one drift check on an unshifted batch,
and one record of another model in the trail, which the pack must carry redacted. The process
metrics of the same stack agree with its audit records (last test: trained once per module).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.errors import MlstewardError
from mlsteward.evidence.manifest import write_manifest, write_zip
from mlsteward.evidence.pack import build_pack
from mlsteward.identity import local_principal
from mlsteward.integrity import sha256_file
from mlsteward.process.history import read_history
from mlsteward.process.metrics import scope_metrics
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL

runner = CliRunner()
OTHER = "other_model"
OTHERS_SECRET = "a reason only the other model's auditors may read"
PIECES = (
    "INDEX.md",
    "index.json",
    "manifest.sha256",
    "model_card.html",
    "model_card.md",
    "lineage.json",
    "lineage/recipe.json",
    "lineage/openlineage.jsonl",
    "data/contract.json",
    "data/ingestion.json",
    "validation/report.json",
    "validation/report.md",
    "validation/fairness.json",
    "validation/explainability.json",
    "approvals.json",
    "access_control.json",
    "audit/slice.jsonl",
    "audit/verification.json",
    "audit/checkpoint.json",
    "audit/governance.pub",
    "artifacts/model/model.ubj",
    "artifacts/model/MLmodel",
    "artifacts/signature/model.sig",
    "artifacts/governance.pub",
    "monitoring/drift.json",
)


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def packed(
    champion_and_challenger: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The champion's pack (default framework), after one drift check and one record of
    another model; with the packing's own figures."""
    # start-up time: only this module runs the drift flow
    from flows.drift import drift_flow
    from mlsteward.data.synthetic import generate_batch

    # the control mappings beside the module's model config, as a deployment keeps them
    config = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    shutil.copytree(REPO_ROOT / "config" / "compliance", config / "compliance")
    work = tmp_path_factory.mktemp("evidence")
    batch = work / "batch.parquet"
    generate_batch(n_rows=1_000, seed=21).to_parquet(batch, index=False)
    drift_flow(model=MODEL, current=str(batch))
    with audit_store() as store:
        store.append(
            Action.INGESTION_ACCEPTED,
            model=OTHER,
            reason=OTHERS_SECRET,
            details={"data_version": "0" * 64},
        )
    out = work / "packs"
    started = time.perf_counter()
    result = runner.invoke(
        app, ["evidence", MODEL, champion_and_challenger["champion"], "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    identity = read(Path(doc["path"]), "index.json")["created_by"]["identity"]
    return {
        **doc,
        "wall_seconds": time.perf_counter() - started,
        "out": out,
        "created_by": identity,
    }


def read(pack: Path, rel: str) -> Any:
    return json.loads((pack / rel).read_text(encoding="utf-8"))


def verify(target: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["evidence", "verify", str(target), *extra])
    return result.exit_code, result.output


def slice_records(pack: Path) -> list[dict[str, Any]]:
    text = (pack / "audit/slice.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_champions_pack_holds_every_piece(packed: dict[str, Any]) -> None:
    pack = Path(packed["path"])
    missing = [rel for rel in PIECES if not (pack / rel).is_file()]
    assert not missing, missing
    assert Path(packed["zip_path"]).is_file()
    assert sorted(p.name for p in packed["out"].iterdir()) == sorted(
        [pack.name, f"{pack.name}.zip"]
    )  # no temporary folder or partial zip left beside them

    index = read(pack, "index.json")
    assert index["format"] == "mlsteward-evidence/1"
    assert (index["model"], index["version"], index["framework"]) == (
        MODEL,
        packed["version"],
        "eu-ai-act",
    )
    assert index["created_by"]["actor"].startswith("local:")
    listed = {f["path"]: f for f in index["files"]}
    assert listed["artifacts/model/model.ubj"]["kind"] == "artifact_signatures"
    assert listed["audit/slice.jsonl"]["kind"] == "audit_slice"
    assert listed["validation/fairness.json"]["kind"] == "fairness_report"
    assert listed["lineage.json"]["sha256"] == sha256_file(pack / "lineage.json")
    assert index["controls"]["framework"] == "eu-ai-act"

    # the manifest is sha256sum's own format
    check = subprocess.run(
        ["sha256sum", "--check", "--quiet", "manifest.sha256"],
        cwd=pack,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # the same folder always zips to the same bytes
    again = packed["out"].parent / "again.zip"
    write_zip(pack, again, pack.name)
    assert again.read_bytes() == Path(packed["zip_path"]).read_bytes()


def test_the_pieces_say_what_an_auditor_asks(
    packed: dict[str, Any], champion_and_challenger: dict[str, Any]
) -> None:
    pack = Path(packed["path"])
    version = champion_and_challenger["champion"]
    approvals = read(pack, "approvals.json")
    actions = [d["action"] for d in approvals["decisions"]]
    assert actions[0] == "version_registered" and "promoted" in actions
    promoted = next(d for d in approvals["decisions"] if d["action"] == "promoted")
    # the flows ran on their own (no principal asked for them): said so, never guessed
    assert promoted["actor"].startswith("flow-run:")
    assert (promoted["identity"], promoted["authenticated"]) == (None, None)
    four_eyes = approvals["four_eyes"]
    assert (four_eyes["policy"], four_eyes["submitter"]) == ("auto", None)
    assert four_eyes["promotions"][0]["seq"] == promoted["seq"]

    access = read(pack, "access_control.json")
    assert "promote" in access["roles"]["approver"] and "promote" not in access["roles"]["trainer"]
    assert access["principals"] == [] and access["actors_without_identity"]["flow-run"] > 0

    lineage = read(pack, "lineage.json")
    assert lineage["recipe"]["sha256"] == lineage["recipe"]["sha256_tag"]
    contract = read(pack, "data/contract.json")
    ingested = read(pack, "data/ingestion.json")
    assert contract["data_version"] == lineage["lineage"]["data_digest"]
    assert [r["details"]["data_version"] for r in ingested] == [contract["data_version"]]
    assert {a["column"] for a in contract["sensitive_attributes"]} == {"sex", "age"}

    report = read(pack, "validation/report.json")
    assert (report["model"], report["version"], report["passed"]) == (MODEL, version, True)
    assert set(read(pack, "validation/fairness.json")["attributes"]) == {"sex", "age"}
    assert read(pack, "validation/explainability.json")["mean_abs_shap"]
    drift = read(pack, "monitoring/drift.json")
    assert [c["version"] for c in drift["checks"]] == [version]

    events = (pack / "lineage/openlineage.jsonl").read_text().splitlines()
    assert any(f"models/{MODEL}/versions/{version}" in e for e in events)
    assert read(pack, "audit/verification.json")["trail"]["ok"] is True


def test_the_slice_redacts_other_models_and_ends_at_the_signed_head(
    packed: dict[str, Any],
) -> None:
    pack = Path(packed["path"])
    records = slice_records(pack)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    redacted = [r for r in records if r.get("redacted")]
    assert len(redacted) == 1 and set(redacted[0]) == {"seq", "hash", "prev_hash", "redacted"}
    every_byte = b"".join(p.read_bytes() for p in pack.rglob("*") if p.is_file())
    assert OTHERS_SECRET.encode() not in every_byte
    checkpoint = read(pack, "audit/checkpoint.json")
    assert (records[-1]["seq"], records[-1]["hash"]) == (checkpoint["seq"], checkpoint["head_hash"])
    with audit_store() as store:
        own = store.query(model=MODEL)
        recorded = store.last(action=Action.EVIDENCE_PACKED)
    assert own[0].seq == seqs[0]
    assert recorded is not None and recorded.seq > checkpoint["seq"]  # after the slice's end
    assert recorded.details["pack_digest"] == sha256_file(pack / "manifest.sha256")
    assert recorded.details["gaps"] == read(pack, "index.json")["gaps"] == packed["gaps"]


def test_gaps_are_listed_honestly(packed: dict[str, Any]) -> None:
    pack = Path(packed["path"])
    index = read(pack, "index.json")
    assert set(index["absent"]) == {"reproduction"}
    assert not (pack / "reproduction").exists()  # no placeholder stands in for it
    # the command line adds the model's process report (the process room's piece)
    assert index["evidence"]["process_metrics"] == [
        "process/process-report.html",
        "process/process-report.json",
    ]
    assert read(pack, "process/process-report.json")["format"] == "mlsteward-process/1"
    gaps = [c for c in index["controls"]["controls"] if c["status"] != "evidenced"]
    assert len(gaps) == index["gaps"] > 0
    # with every kind it maps present, the EU AI Act's gaps are those outside the pipeline
    assert gaps and all(c["outside_pipeline"] for c in gaps)
    markdown = (pack / "INDEX.md").read_text(encoding="utf-8")
    assert "mlsteward evidence verify" in markdown
    assert "| reproduction | no reproduction of this version was ever run |" in markdown
    assert "### Gaps" in markdown and "lies outside the pipeline" in markdown


def test_the_zip_verifies_offline_in_an_empty_place(packed: dict[str, Any], tmp_path: Path) -> None:
    """A subprocess with nothing but the zip: an empty home, no MLflow, no anchor."""
    place, home = tmp_path / "auditor", tmp_path / "empty_home"
    place.mkdir()
    home.mkdir()
    copy = place / Path(packed["zip_path"]).name
    shutil.copyfile(packed["zip_path"], copy)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLSTEWARD_", "MLFLOW_", "PREFECT_API", "XDG_"))
    }
    env |= {"MLSTEWARD_HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "empty_state")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", "evidence", "verify", str(copy)],
        cwd=place,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for check in ("manifest", "index", "audit chain", "checkpoint", "artifact signature"):
        assert any(line.startswith(f"ok   {check}:") for line in lines), done.stdout
    assert "pack intact" in lines[-1]
    assert list(home.iterdir()) == [] and sorted(p.name for p in place.iterdir()) == [copy.name]
    assert not (tmp_path / "empty_state").exists()

    pinned = Path(packed["path"]) / "audit/governance.pub"
    assert verify(copy, "--public-key", str(pinned))[0] == 0
    other = tmp_path / "other.pub"
    from cryptography.hazmat.primitives.asymmetric import ec

    from mlsteward.signing.keys import public_pem

    other.write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    code, output = verify(copy, "--public-key", str(other))
    assert code == 1 and "FAIL keys: the pack is signed by key" in output


def tampered(packed: dict[str, Any], tmp_path: Path) -> Path:
    copy = tmp_path / Path(packed["path"]).name
    shutil.copytree(packed["path"], copy)
    return copy


def test_an_edited_audit_record_is_named(packed: dict[str, Any], tmp_path: Path) -> None:
    pack = tampered(packed, tmp_path)
    path = pack / "audit/slice.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"action":"promoted"' in line)
    seq = json.loads(lines[at])["seq"]
    spot = lines[at].index('"reason":"') + len('"reason":"')
    lines[at] = lines[at][:spot] + ("X" if lines[at][spot] != "X" else "Y") + lines[at][spot + 1 :]
    path.write_text("".join(lines), encoding="utf-8")

    code, output = verify(pack)
    assert code == 1
    assert "FAIL manifest: audit/slice.jsonl changed" in output
    assert f"FAIL audit chain: audit/slice.jsonl: record {seq} (line {at + 1}) was edited" in output
    assert "FAIL checkpoint:" in output

    write_manifest(pack)  # a forger who rewrites the manifest too is still caught by the chain
    code, output = verify(pack)
    assert code == 1 and "ok   manifest:" in output
    assert f"record {seq} (line {at + 1}) was edited" in output


def test_a_swapped_artifact_byte_is_named(packed: dict[str, Any], tmp_path: Path) -> None:
    pack = tampered(packed, tmp_path)
    model = pack / "artifacts/model/model.ubj"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))

    code, output = verify(pack)
    assert code == 1
    assert "FAIL manifest: artifacts/model/model.ubj changed" in output
    assert "FAIL artifact signature: artifacts/model: the files differ" in output
    assert "model.ubj changed" in output.split("FAIL artifact signature:")[1].splitlines()[0]
    assert "FAIL artifact in trail: artifacts/model/model.ubj has sha256" in output
    assert "ok   audit chain:" in output and "ok   checkpoint:" in output


def test_an_edited_checkpoint_is_named(packed: dict[str, Any], tmp_path: Path) -> None:
    pack = tampered(packed, tmp_path)
    path = pack / "audit/checkpoint.json"
    checkpoint = json.loads(path.read_text(encoding="utf-8"))
    checkpoint["ts"] = checkpoint["ts"].replace(checkpoint["ts"][:4], "1999", 1)
    path.write_text(json.dumps(checkpoint), encoding="utf-8")

    code, output = verify(pack)
    assert code == 1
    assert "FAIL checkpoint: audit/checkpoint.json: the signature does not verify" in output
    assert "FAIL manifest: audit/checkpoint.json changed" in output
    assert "ok   audit chain:" in output


def test_an_unknown_version_is_refused_leaving_nothing(
    packed: dict[str, Any], tmp_path: Path
) -> None:
    with audit_store() as store:
        before = len(store.query(action=Action.EVIDENCE_PACKED))
    out = tmp_path / "packs"
    for args, message in (
        ([MODEL, "99"], f"{MODEL} has no registered version 99"),
        (["no_such_model", "1"], "no_such_model has no registered version 1"),
        ([MODEL, packed["version"], "--framework", "iso-9001"], "unknown framework 'iso-9001'"),
        ([MODEL, "latest"], "version must be a registered version's number"),
    ):
        result = runner.invoke(app, ["evidence", *args, "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert message in result.output
        assert "Traceback" not in result.output
        assert not out.exists()

    def broken(root: Path) -> list[str]:
        raise MlstewardError("the process metrics cannot be read")

    # a failure after every other piece was written: the half-built pack goes too
    with pytest.raises(MlstewardError, match="process metrics cannot be read"):
        build_pack(
            MODEL,
            packed["version"],
            principal=local_principal(),
            out_dir=out,
            extra={"process_metrics": broken},
        )
    assert not out.exists()
    with audit_store() as store:
        assert len(store.query(action=Action.EVIDENCE_PACKED)) == before


def test_another_framework_and_a_piece_from_another_room(
    packed: dict[str, Any], tmp_path: Path
) -> None:
    """SOC 2 over the same evidence, with ``process_metrics`` added through the hook another
    room uses (here a file written by the test: the hook's contract, not the metrics)."""

    def process_metrics(root: Path) -> list[str]:
        (root / "process").mkdir()
        (root / "process/metrics.json").write_text('{"lead_time_hours": []}\n')
        return ["process/metrics.json"]

    with pytest.raises(MlstewardError, match=r"unknown evidence kind.*coffee"):
        build_pack(
            MODEL,
            packed["version"],
            principal=local_principal(),
            out_dir=tmp_path,
            extra={"coffee": process_metrics},
        )
    assert list(tmp_path.iterdir()) == []
    result = build_pack(
        MODEL,
        "champion",  # as the governance record says
        principal=local_principal(),
        framework="soc2",
        out_dir=tmp_path,
        extra={"process_metrics": process_metrics},
    )
    index = read(result.path, "index.json")
    assert index["controls"]["framework"] == "soc2" and index["version"] == packed["version"]
    assert index["evidence"]["process_metrics"] == ["process/metrics.json"]
    assert index["absent"] == {"reproduction": "no reproduction of this version was ever run"}
    assert any("reproduction" in c["missing"] for c in index["controls"]["controls"])
    # the first pack was the local operator's act on the model: a principal, unauthenticated
    [local] = read(result.path, "access_control.json")["principals"]
    assert local["identity"] == packed["created_by"]
    assert (local["authenticated"], local["roles"]) == (False, ["admin"])
    assert local["acted"] == {"evidence_packed": 1}
    assert verify(result.zip_path)[0] == 0
    with zipfile.ZipFile(result.zip_path) as zf:
        names = zf.namelist()
    assert names == sorted(names) and all(n.startswith(f"{result.path.name}/") for n in names)


# The process metrics of the same trained stack (it is trained once per module).
def test_metrics_of_a_real_run_agree_with_its_audit_records(
    champion_and_challenger: dict[str, Any],
) -> None:
    champion = champion_and_challenger["champion"]
    with audit_store() as store:
        records = store.query()
        since = datetime.fromisoformat(records[0].ts) - timedelta(minutes=1)
        until = datetime.now(UTC) + timedelta(minutes=1)
        history = read_history(since=since, until=until, store=store)
    m = scope_metrics(history, MODEL, since=since, until=until)

    def ts(action: str, version: str | None = None) -> datetime:
        found = [r for r in records if r.action == action and version in (None, r.version)]
        return datetime.fromisoformat(found[0].ts)

    promoted = ts(Action.PROMOTED, champion)
    expected = (promoted - ts(Action.INGESTION_ACCEPTED)).total_seconds() / 3600
    # both versions were trained on the one data version: v1's promotion decided it first
    assert [(p.version, p.at) for p in m.lead_time_to_champion] == [(champion, promoted)]
    assert m.lead_time_to_champion[0].value == pytest.approx(expected)
    assert [(p.version, p.value) for p in m.lead_time_to_decision] == [
        (champion, pytest.approx(expected))
    ]

    validations = [r for r in records if r.action.startswith("validation_")]
    first = {r.version: r.action for r in reversed(validations)}
    assert m.versions_validated == len(first) == 2
    assert m.first_pass == sum(a == Action.VALIDATION_PASSED for a in first.values())
    assert m.promotions == sum(r.action == Action.PROMOTED for r in records) == 1

    # the training runs, found through Prefect and named by their flow, wrote the records
    registered = {r.actor.split()[0].removeprefix("flow-run:") for r in records}
    # (the session's Prefect server also holds other test modules' runs of this model name,
    # which the metrics rightly count: one server, one model name)
    training = [r for r in history.runs.flow_runs if r.flow == "train-model" and r.model == MODEL]
    ours = [r for r in training if r.id in registered]
    assert len(ours) == 2
    counts = {r.flow: r for r in m.runs}
    assert counts["train-model"].completed >= 2  # other modules' runs may have failed
    assert counts["ingest-data"].completed >= 1
    assert m.retrains["manual"] >= 2  # started in-process, as `mlsteward train` does
    for stage in ("retrieval", "tuning", "gates"):
        assert len(m.cycle_times[stage]) >= 2, stage
        assert all(0 < p.value < 1 for p in m.cycle_times[stage]), stage
    assert len(m.cycle_times["ingest"]) >= 1
