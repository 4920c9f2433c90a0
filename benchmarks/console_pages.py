"""How fast do the console's Models and Model pages answer on a registry of realistic size?

The issue's target: with 20 models x 50 versions and 100,000 audit records, the Models page
(``GET /ui/models``) and a Model page (``GET /ui/models/{model}``) answer in at most 300 ms at
p95 on 2 cores.

**The registry** is built in a temporary directory (or ``--home DIR``, kept and reused when it
was built with the same sizes) with the local profile: MLflow on SQLite, the audit trail in
SQLite, the identity store beside it.

* ``--models`` configs (default 20): copies of ``config/models/heart_disease.yaml`` named
  ``model_00``, ``model_01``, ...; every fourth has ``policy: manual`` (``model_03``,
  ``model_07``, ...).
* ``--versions`` registered versions per model (default 50), each from its own MLflow run,
  created with ``MlflowClient`` directly (training 1,000 models would take hours) on a small
  artifact of its own, with the tags registration and validation write: ``lineage.*``
  (``training.lineage.Lineage.to_tags``), ``test_*`` metrics, ``model_artifact_sha256`` of the
  artifact, the signature tags, ``validation_status`` and friends, ``lifecycle`` and the
  promotion or retirement stamps. About one version in five fails its gates.
* A history over the past year, written through the store's bulk path (``_bulk_append``: the
  real chain, every record hashed as ``append`` hashes it, so ``verify`` passes): per version
  ``version_registered``, ``validation_passed``/``failed`` and the challenger's
  ``alias_changed``; every few passed versions a promotion (``promotion_intent`` and a
  ``promoted`` record signed with the governance key, as ``promotion._complete`` signs it; on a
  manual model an ``approval_requested`` and ``approval_granted`` before it); one rollback (on
  ``model_05``); a daily drift check per model (``drift_checked``, one in ten
  ``drift_detected``); and filler up to ``--records`` in total (batch scoring, ingestion,
  outcomes, retrain claims, webhooks, access refusals). The ``champion`` alias is the ``to`` of
  each model's newest signed promotion or rollback record, so every page shows the normal,
  consistent state; two models in three have a ``challenger``.
* Then, through the public paths, at today's time: the principals (an admin, a trainer, an
  approver), an approval request by the trainer for each manual model's challenger
  (``governance.approving.request``, so the queue has a few entries); filler tops the trail up
  to one short of ``--records``, and the admin token each measurement makes (it expires in a
  day) is the last record. A reused ``--home`` gains that one record per run.

The set-up's time is printed by step, and the whole chain is verified once.

**The measurement** starts ``python -m mlsteward.api`` (uvicorn) in a subprocess on a free port
and calls it from one client, one request at a time, over one keep-alive connection. Warm-up:
every page and route once for every model. Then ``--requests`` rounds (default 60), each asking
in turn for the Models page, a Model page, ``GET /api/v1/dashboard`` and
``GET /api/v1/models/{model}`` (the JSON routes with the same data, as the baseline), the model
rotating over all models, so the four see the same load. Times are client-side (request sent
to body read). Printed: p50, p95 and max per page, PASS/FAIL against 300 ms at p95, and each
page's ratio to its JSON route.

``--profile N`` also runs ``cProfile`` on the pages' view functions called in-process
(``api.console.models._models`` and ``_model``) and prints the N largest cumulative costs.

Run: ``.venv/bin/python benchmarks/console_pages.py [--requests 60] [--models 20]
[--versions 50] [--records 100000] [--home DIR] [--profile 25]``.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import hashlib
import io
import json
import math
import os
import pstats
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

TARGET_S = 0.300
"""Issue target: the Models and Model pages at p95."""
TEMPLATE = PROJECT_ROOT / "config" / "models" / "heart_disease.yaml"
BUILT = "console-bench.json"
"""Written into the home once the registry is complete: what it was built with."""
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "accuracy", "precision", "recall")
FEATURES = (
    "age", "sex", "resting_bp", "cholesterol", "max_heart_rate", "bmi", "smoking", "diabetes",
    "chest_pain_type", "exercise_angina", "st_depression", "fasting_glucose", "resting_ecg",
    "physical_activity_hours",
)  # fmt: skip
TRAINER, APPROVER, ADMIN = "tom", "ann", "bench"


def model_name(i: int) -> str:
    return f"model_{i:02d}"


def is_manual(i: int) -> bool:
    return i % 4 == 3


def has_challenger(i: int) -> bool:
    return i % 3 != 2


ROLLBACK_MODEL = 5


def stamp(t: datetime) -> str:
    """The audit trail's canonical timestamp text."""
    from mlsteward.audit.records import format_ts

    return format_ts(t)


def run_actor(rng: random.Random, who: str | None = None) -> str:
    run = f"flow-run:{uuid.UUID(int=rng.getrandbits(128))}"
    return f"{run} for user:{who}" if who else run


# ----------------------------------------------------------------------------- environment


def use_home(root: Path) -> None:
    """Point every store at ``root`` (as tests/fixtures/shared_home.py does)."""
    os.environ["MLSTEWARD_HOME"] = str(root / "home")
    os.environ["MLSTEWARD_CONFIG_DIR"] = str(root / "config")
    os.environ["XDG_STATE_HOME"] = str(root / "xdg_state")  # audit anchors
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for name in (
        "MLSTEWARD_AUDIT_URL",
        "MLSTEWARD_IDENTITY_URL",
        "MLSTEWARD_AUDIT_ANCHOR",
        "MLSTEWARD_PROFILE",
        "MLSTEWARD_SNAPSHOT_ROOT",
        "MLFLOW_TRACKING_URI",
    ):
        os.environ.pop(name, None)


# ----------------------------------------------------------------------------- the story


@dataclass
class Version:
    number: int
    registered: datetime
    run_id: str = ""
    sha256: str = ""
    passed: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    validated_against: str = "none"
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    lifecycle: str = "candidate"
    trainer_run: str = ""


@dataclass
class ModelStory:
    """One model's year: which versions passed, which were promoted (and when), the final
    champion and challenger."""

    index: int
    name: str
    versions: list[Version]
    promotions: list[tuple[datetime, int, int | None]]  # (when, to, from)
    rollback: tuple[datetime, int, int] | None  # (when, to, from)
    champion: int
    challenger: int | None

    def champion_at(self, t: datetime) -> int | None:
        """The champion at time ``t`` (for drift and scoring records)."""
        changes = sorted(
            [(w, to) for w, to, _ in self.promotions]
            + ([(self.rollback[0], self.rollback[1])] if self.rollback else [])
        )
        at = bisect.bisect_right([w for w, _ in changes], t)
        return changes[at - 1][1] if at else None


def plan_model(i: int, n_versions: int, start: datetime, end: datetime) -> ModelStory:
    rng = random.Random(1000 + i)
    span = end - start
    offset = timedelta(minutes=37 * i)
    versions = []
    for n in range(1, n_versions + 1):
        at = start + span * ((n - 0.5) / n_versions) * 0.97 + offset
        auc = round(0.80 + 0.06 * n / n_versions + rng.uniform(-0.02, 0.02), 6)
        passed = n == 1 or rng.random() >= 0.2
        metrics = {
            "roc_auc": auc,
            "pr_auc": round(auc - 0.1 + rng.uniform(-0.01, 0.01), 6),
            "log_loss": round(0.62 - (auc - 0.8) * 2 + rng.uniform(-0.01, 0.01), 6),
            "brier": round(0.18 - (auc - 0.8) + rng.uniform(-0.005, 0.005), 6),
            "f1": round(0.62 + rng.uniform(-0.03, 0.03), 6),
            "accuracy": round(0.74 + rng.uniform(-0.03, 0.03), 6),
            "precision": round(0.66 + rng.uniform(-0.03, 0.03), 6),
            "recall": round(0.60 + rng.uniform(-0.03, 0.03), 6),
        }
        versions.append(Version(n, at, passed=passed, metrics=metrics))
    last = versions[-1]
    last.passed = True  # the newest version is the challenger, or the champion
    # promotions: v1, then every passed version with n % 6 == 0; the last version ends as
    # challenger (two models in three) or is promoted too
    promote = {1} | {v.number for v in versions[:-1] if v.passed and v.number % 6 == 0}
    if not has_challenger(i):
        promote.add(last.number)
    champion: int | None = None
    challenger: int | None = None
    promotions = []
    for v in versions:
        v.validated_against = str(champion) if champion else "none"
        if not v.passed:
            v.lifecycle = "rejected"
            continue
        if challenger is not None:  # superseded, never champion
            versions[challenger - 1].lifecycle = "retired"
            versions[challenger - 1].retired_at = v.registered + timedelta(seconds=2)
        challenger, v.lifecycle = v.number, "challenger"
        if v.number in promote:
            when = v.registered + timedelta(hours=3 if is_manual(i) else 0, seconds=5)
            promotions.append((when, v.number, champion))
            if champion is not None:
                versions[champion - 1].lifecycle = "retired"
                versions[champion - 1].retired_at = when
            v.promoted_at, v.lifecycle = when, "champion"
            champion, challenger = v.number, None
    rollback = None
    if i == ROLLBACK_MODEL and len(promotions) >= 2:
        (when, to, before) = promotions[-1]
        assert before is not None
        back = when + timedelta(days=2)
        rollback = (back, before, to)
        versions[to - 1].lifecycle, versions[to - 1].retired_at = "retired", back
        versions[before - 1].lifecycle, versions[before - 1].retired_at = "champion", None
        champion = before
    assert champion is not None
    return ModelStory(i, model_name(i), versions, promotions, rollback, champion, challenger)


# ----------------------------------------------------------------------------- configs


def write_configs(config_dir: Path, models: int) -> None:
    text = TEMPLATE.read_text()
    (config_dir / "models").mkdir(parents=True, exist_ok=True)
    for i in range(models):
        out, named = re.subn(r"^name: heart_disease$", f"name: {model_name(i)}", text, flags=re.M)
        if is_manual(i):
            out, manual = re.subn(r"^  policy: auto$", "  policy: manual", out, flags=re.M)
            out = re.sub(r"^  required: 1$", f"  required: {1 + i % 2}", out, flags=re.M)
            assert manual == 1
        assert named == 1
        out = out.replace("owner: cardiology-ml", f"owner: team-{i % 5}")
        (config_dir / "models" / f"{model_name(i)}.yaml").write_text(out)


# ----------------------------------------------------------------------------- registry


def version_tags(story: ModelStory, v: Version, key_id: str, lineage_base: Any) -> dict[str, str]:
    """The tags registration (``tasks.registry.register_model``, ``log_and_register``) and
    validation (``promotion.record_validation``) leave on a version."""
    from dataclasses import replace

    from mlsteward.governance import signatures

    lineage = replace(
        lineage_base,
        model=story.name,
        data_digest=hashlib.sha256(f"{story.name}-{v.number}-data".encode()).hexdigest(),
        best_params={"max_depth": 3 + v.number % 5, "eta": 0.05 + v.number % 7 / 100},
        seed=42 + v.number,
        training_set_digest=hashlib.sha256(f"{story.name}-{v.number}-set".encode()).hexdigest(),
        best_iteration=80 + v.number,
    )
    encoding = {
        "columns": list(FEATURES),
        "dtypes": {f: "float" for f in FEATURES},
        "categories": {"sex": ["F", "M"], "smoking": ["current", "former", "never"]},
    }
    tags: dict[str, Any] = {
        **lineage.to_tags(),
        "recipe_sha256": hashlib.sha256(f"{story.name}-{v.number}-recipe".encode()).hexdigest(),
        "lifecycle": v.lifecycle,
        "task": "binary_classification",
        "objective": "binary:logistic",
        "feature_encoding": encoding,
        **{f"test_{k}": val for k, val in v.metrics.items()},
        "decision_threshold": 0.41,
        "model_artifact_sha256": v.sha256,
        "model_artifact_file": "model.ubj",
        signatures.SIGNATURE_TAG: signatures.SIGNATURE_ARTIFACT,
        signatures.KEY_ID_TAG: key_id,
        "validation_status": "passed" if v.passed else "failed",
        "validation_reasons": "[]" if v.passed else json.dumps(["roc_auc 0.79 < min 0.8"]),
        "validation_report": f"runs:/{v.run_id}/validation/validation-v{v.number}.json",
        "validated_at": (v.registered + timedelta(seconds=1)).isoformat(timespec="seconds"),
        "validated_against_champion": v.validated_against,
    }
    if v.promoted_at is not None:
        tags["promoted_at"] = v.promoted_at.isoformat(timespec="seconds")
        tags["promoted_by"] = f"flow-run:{uuid.uuid4()}"
    if v.retired_at is not None:
        tags["retired_at"] = v.retired_at.isoformat(timespec="seconds")
        if v.promoted_at is None:
            tags["retired_reason"] = "superseded by a newer challenger"
    return {
        k: val if isinstance(val, str) else json.dumps(val, sort_keys=True)
        for k, val in tags.items()
    }


def build_registry(root: Path, stories: list[ModelStory], key_id: str) -> None:
    """Runs, versions (with their tags) and aliases, with MlflowClient directly."""
    from mlsteward.config.models import get_model_config
    from mlsteward.governance.mlflow_adapter import client, ensure_experiment
    from mlsteward.training.lineage import Lineage, library_versions

    c = client()
    cfg = get_model_config(stories[0].name)
    lineage_base = Lineage(
        model="",
        data_digest="",
        data_path="snapshots/ab/cd/data.parquet",
        data_source=str(PROJECT_ROOT / "data" / "heart_disease.parquet"),
        feature_service=f"{cfg.name}_v1",
        features=list(FEATURES),
        training_rows=50_000,
        time_range=("2024-01-01T00:00:00+00:00", "2024-12-31T23:59:59+00:00"),
        split_sizes={"train": 35_000, "validation": 7_500, "test": 7_500},
        best_params={},
        seed=42,
        max_evals=20,
        git_commit="0" * 40,
        git_dirty="false",
        lock_sha256=hashlib.sha256(b"uv.lock").hexdigest(),
        config_sha256=hashlib.sha256(TEMPLATE.read_bytes()).hexdigest(),
        libraries=library_versions(),
        tuning_execution={"runner": "sequential", "batch": 1, "nthread": 0},
    )
    rng = random.Random(7)
    for story in stories:
        experiment = ensure_experiment(story.name)
        c.create_registered_model(story.name, description=f"{story.name}: benchmark model")
        for v in story.versions:
            run = c.create_run(
                experiment,
                run_name=f"train-{story.name}-v{v.number}",
                tags={"mlsteward.model": story.name, "mlsteward.trigger": "manual"},
            )
            v.run_id = run.info.run_id
            artifact = root / "artifacts" / story.name / f"v{v.number}" / "model"
            artifact.mkdir(parents=True)
            (artifact / "model.ubj").write_bytes(rng.randbytes(2048))
            (artifact / "MLmodel").write_text(f"flavors: {{}}\nrun_id: {v.run_id}\n")
            v.sha256 = hashlib.sha256((artifact / "model.ubj").read_bytes()).hexdigest()
            c.set_terminated(v.run_id)
            c.create_model_version(
                story.name,
                source=str(artifact),
                run_id=v.run_id,
                tags=version_tags(story, v, key_id, lineage_base),
                description="all gates passed" if v.passed else "roc_auc below its minimum",
            )
        c.set_registered_model_alias(story.name, "champion", str(story.champion))
        if story.challenger is not None:
            c.set_registered_model_alias(story.name, "challenger", str(story.challenger))


# ----------------------------------------------------------------------------- audit trail


@dataclass
class Event:
    """One record to be, with what needs its place in the chain (seq) filled in later."""

    ts: datetime
    fields: dict[str, Any]
    intent: Event | None = None
    """For a ``promoted``/``rollback`` record: its intent, whose seq it names and signs."""
    seq: int = 0


def model_events(story: ModelStory, key_id: str) -> Iterator[Event]:
    rng = random.Random(2000 + story.index)
    name = story.name
    manual = is_manual(story.index)
    promoted = {to: (when, before) for when, to, before in story.promotions}
    previous_challenger: int | None = None
    champion_metrics: dict[str, float] | None = None
    for v in story.versions:
        actor = run_actor(rng, TRAINER)
        t = v.registered
        yield Event(t, {
            "action": "version_registered", "model": name, "version": str(v.number),
            "actor": actor, "reason": f"trained on data version {v.sha256[:12]}",
            "details": {
                "run_id": v.run_id, "artifact_sha256": v.sha256, "signature_key_id": key_id,
                "data_digest": hashlib.sha256(f"{name}-{v.number}-data".encode()).hexdigest(),
                "test_metrics": v.metrics, "best_params": {"max_depth": 3 + v.number % 5},
                "seed": 42 + v.number, "git_commit": "0" * 40, "trigger_reason": "manual",
            },
        })  # fmt: skip
        report = f"runs:/{v.run_id}/validation/validation-v{v.number}.json"
        yield Event(t + timedelta(seconds=1), {
            "action": "validation_passed" if v.passed else "validation_failed",
            "model": name, "version": str(v.number), "actor": actor,
            "reason": "all gates passed" if v.passed else "roc_auc 0.79 < min 0.8",
            "details": {
                "gates": {"metric_threshold": v.passed, "fairness": True, "champion": v.passed},
                "violations": [] if v.passed else [{"gate": "metric", "metric": "roc_auc"}],
                "champion": None if v.validated_against == "none" else v.validated_against,
                "report": report,
            },
        })  # fmt: skip
        if not v.passed:
            continue
        yield Event(t + timedelta(seconds=2), {
            "action": "alias_changed", "model": name, "version": str(v.number), "actor": actor,
            "reason": f"challenger: {previous_challenger or '-'} -> {v.number}",
            "details": {"alias": "challenger", "to": str(v.number),
                        "from": str(previous_challenger) if previous_challenger else None},
        })  # fmt: skip
        previous_challenger = v.number
        if v.number not in promoted:
            continue
        when, before = promoted[v.number]
        approval = None
        if manual:
            run = str(uuid.UUID(int=rng.getrandbits(128)))
            yield Event(t + timedelta(seconds=3), {
                "action": "approval_requested", "model": name, "version": str(v.number),
                "actor": actor, "reason": "policy manual: 1 approval(s) needed",
                "details": {"requested_by": f"user:{TRAINER}", "approvals_required": 1,
                            "flow_run_id": run, "channel": "flow"},
            })  # fmt: skip
            yield Event(when - timedelta(seconds=2), {
                "action": "approval_granted", "model": name, "version": str(v.number),
                "actor": f"user:{APPROVER}", "reason": "numbers and fairness look right",
                "details": {"identity": f"user:{APPROVER}", "channel": "api"},
            })  # fmt: skip
            approval = {"approved_by": [f"user:{APPROVER}"], "flow_run_id": run}
        details = {
            "approval": approval,
            "artifact_sha256": v.sha256,
            "validation_report": report,
            "test_metrics": {k: v.metrics[k] for k in METRICS[:5]},
            "previous_test_metrics": champion_metrics,
        }
        yield from change_events(name, when, v.number, before, actor, "promoted", details)
        previous_challenger = None
        champion_metrics = {k: v.metrics[k] for k in METRICS[:5]}
    if story.rollback is not None:
        when, to, before = story.rollback
        details = {"artifact_sha256": story.versions[to - 1].sha256}
        yield from change_events(
            name, when, to, before, f"user:{ADMIN}", "rollback", details,
            reason=f"v{before} worse on live outcomes",
        )  # fmt: skip


def change_events(
    model: str,
    when: datetime,
    to: int,
    before: int | None,
    actor: str,
    action: str,
    details: dict[str, Any],
    reason: str = "auto policy: the challenger beats the champion",
) -> Iterator[Event]:
    """An intent and its completion, as ``promotion._switch_champion`` writes them (the
    completion's ``intent_seq`` and signature are filled in once seqs are known)."""
    fence = random.Random(to * 7919 + len(model)).randint(1, 400)
    frm = str(before) if before is not None else None
    intent = Event(when, {
        "action": "promotion_intent", "model": model, "version": str(to), "actor": actor,
        "reason": f"{action}: champion {frm or '-'} -> {to}",
        "details": {"action": action, "from": frm, "to": str(to), "fence": fence,
                    "artifact_sha256": details.get("artifact_sha256")},
    })  # fmt: skip
    yield intent
    completion = {**details, "from": frm, "fence": fence, "alias": "champion", "to": str(to)}
    yield Event(
        when + timedelta(milliseconds=40),
        {"action": action, "model": model, "version": str(to), "actor": actor,
         "reason": reason, "details": completion},
        intent=intent,
    )  # fmt: skip


def drift_events(story: ModelStory, start: datetime, end: datetime) -> Iterator[Event]:
    """A daily drift check of the champion, as ``tasks.monitoring.record_drift`` records it."""
    rng = random.Random(3000 + story.index)
    day = start.replace(hour=6, minute=0, second=0, microsecond=0) + timedelta(
        days=1, minutes=3 * story.index
    )
    reports = Path(os.environ["MLSTEWARD_HOME"]) / "monitoring" / story.name / "reports"
    while day < end:
        champion = story.champion_at(day)
        if champion is not None:
            scores = {f: round(rng.uniform(0.0, 0.09), 4) for f in FEATURES}
            drifted: list[str] = []
            if rng.random() < 0.1:
                drifted = rng.sample(["bmi", "cholesterol", "age", "fasting_glucose"], 2)
                for col in drifted:
                    scores[col] = round(rng.uniform(0.21, 0.6), 4)
            retrain = bool(set(drifted) & {"bmi", "cholesterol", "fasting_glucose"})
            reasons = [f"key feature {c} drifted" for c in drifted if c != "age"]
            summary = {
                "drifted_columns": drifted,
                "dataset_drift_share": round(len(drifted) / len(FEATURES), 4),
                "prediction_drift": bool(drifted),
                "decision": {"retrain": retrain, "reasons": reasons},
                "report": str(reports / f"drift-{day:%Y%m%dT%H%M%S}.html"),
                "report_uri": f"runs:/{rng.getrandbits(128):032x}/drift/v{champion}/report.html",
                "rows": {"reference": 20_000, "current": 5_000},
                "sampling": {},
                "notes": [],
                "columns": scores,
            }
            yield Event(day, {
                "action": "drift_detected" if drifted else "drift_checked", "model": story.name,
                "version": str(champion), "actor": run_actor(rng),
                "reason": "; ".join(reasons) or f"{len(drifted)} drifted column(s), no retrain",
                "details": summary,
            })  # fmt: skip
        day += timedelta(days=1)


FILLER = {
    "batch_scored": 60,
    "ingestion_accepted": 12,
    "labels_ingested": 10,
    "retrain_suppressed": 4,
    "webhook_accepted": 5,
    "access_denied": 3,
    "reproduced": 1,
    "snapshots_collected": 1,
}


def filler_events(
    n: int, stories: list[ModelStory], start: datetime, end: datetime, seed: int = 11
) -> Iterator[Event]:
    """The day-to-day records around the decisions: scoring, ingestion, outcomes, ..."""
    rng = random.Random(seed)
    actions = rng.choices(list(FILLER), list(FILLER.values()), k=n)
    span = (end - start).total_seconds()
    for action in actions:
        t = start + timedelta(seconds=rng.uniform(0, span))
        story = rng.choice(stories)
        version = story.champion_at(t)
        model = story.name if version is not None else None
        rows = rng.randint(500, 50_000)
        if action == "batch_scored":
            batch = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
            details: dict[str, Any] = {
                "model": model, "version": str(version), "batch_id": batch, "rows": rows,
                "source": f"data/incoming/{model}/batch-{batch}.parquet",
                "scored_path": f"scores/{model}/{batch}.parquet",
                "prediction_log_path": f"predictions/{model}/{t:%Y/%m/%d}/{batch}.parquet",
                "positive_rate": round(rng.uniform(0.2, 0.5), 4),
                "mean_score": round(rng.uniform(0.2, 0.5), 4), "top_k": 3,
            }  # fmt: skip
            reason = f"{rows} rows from data/incoming/{model}"
        elif action == "ingestion_accepted":
            digest = hashlib.sha256(str(rng.random()).encode()).hexdigest()
            details = {"data_version": digest, "source": f"data/{model}.parquet", "rows": rows,
                       "bad_rows": rng.randint(0, 40), "quarantine_path": None}  # fmt: skip
            reason, version = f"data version {digest[:12]}", None
        elif action == "labels_ingested":
            matched = rng.randint(0, rows)
            details = {"model": model, "source": f"data/outcomes/{model}.csv", "rows": rows,
                       "matched": matched, "unmatched": rows - matched}  # fmt: skip
            reason, version = f"{matched} of {rows} outcomes matched logged predictions", None
        elif action == "access_denied":
            details = {"permission": "promote", "identity": "user:vera", "route": "promote"}
            reason = "user:vera (viewer) may not promote"
        else:
            details = {"note": action.replace("_", " "), "rows": rows}
            reason = action.replace("_", " ")
        yield Event(t, {
            "action": action, "model": model, "version": None if version is None else str(version),
            "actor": run_actor(rng) if action != "access_denied" else "user:vera",
            "reason": reason, "details": details,
        })  # fmt: skip


def write_history(
    stories: list[ModelStory], records: int, start: datetime, end: datetime, key: Any
) -> int:
    """Every event in time order through ``_bulk_append``; promotion records signed."""
    from mlsteward.audit import audit_store
    from mlsteward.governance.attestations import sign_promotion
    from mlsteward.signing import keys

    public = key.public_key()
    key_id = keys.key_id(public)
    head = Event(start - timedelta(days=1), {
        "action": "signing_key_created", "model": None, "version": None, "actor": "governance",
        "reason": f"governance signing key {key_id} created on first use",
        "details": {"key_id": key_id, "public_key": "keys/governance.pub"},
    })  # fmt: skip
    events = [head]
    for story in stories:
        events += model_events(story, key_id)
        events += drift_events(story, start, end)
    filler = records - len(events) - 12  # room for what the public paths append afterwards
    events += filler_events(max(0, filler), stories, start, end)
    events.sort(key=lambda e: e.ts)
    with audit_store() as store:
        last = store.last()
        base = last.seq if last else 0
        for n, e in enumerate(events, start=1):
            e.seq = base + n
        for e in events:
            if e.intent is not None:
                d = e.fields["details"]
                d["intent_seq"] = e.intent.seq
                d["signature"] = sign_promotion(
                    model=e.fields["model"], action=e.fields["action"],
                    actor=e.fields["actor"], details=d,
                )  # fmt: skip
        return store._bulk_append({**e.fields, "ts": stamp(e.ts)} for e in events)


def public_steps(stories: list[ModelStory]) -> None:
    """Principals and the pending approval requests, through the public paths."""
    from mlsteward.audit import audit_store
    from mlsteward.config.models import get_model_config
    from mlsteward.governance import approving
    from mlsteward.identity import identity_store, local_principal

    operator = local_principal()
    with identity_store() as ids:
        ids.add_principal(ADMIN, roles=["admin"], by=operator)
        trainer = ids.add_principal(TRAINER, roles=["trainer"], by=operator)
        ids.add_principal(APPROVER, roles=["approver"], by=operator)
    with audit_store() as audit:
        for story in stories:
            if is_manual(story.index) and story.challenger is not None:
                cfg = get_model_config(story.name)
                approving.request(audit, trainer, cfg, str(story.challenger))


def top_up(records: int, stories: list[ModelStory]) -> int:
    from mlsteward.audit import audit_store

    with audit_store() as store:
        last = store.last()
        have = last.seq if last else 0
        if have < records:
            now = datetime.now(UTC)
            store._bulk_append(
                {**e.fields, "ts": stamp(now)}
                for e in filler_events(records - have, stories, now, now, seed=99)
            )
        final = store.last()
        return final.seq if final else 0


def build(root: Path, args: argparse.Namespace) -> list[tuple[str, float]]:
    """The whole registry in ``root``; returns the time of each step."""
    from mlsteward.audit import audit_store
    from mlsteward.signing import keys

    steps: list[tuple[str, float]] = []

    def step(name: str, fn: Callable[[], Any]) -> Any:
        print(f"  {name} ...", flush=True)
        t0 = time.perf_counter()
        result = fn()
        steps.append((name, time.perf_counter() - t0))
        print(f"    {steps[-1][1]:.1f} s", flush=True)
        return result

    end = datetime.now(UTC) - timedelta(hours=1)
    start = end - timedelta(days=365)
    stories = [plan_model(i, args.versions, start, end) for i in range(args.models)]
    step("model configs", lambda: write_configs(root / "config", args.models))
    # the key is made without a record: its creation record opens the history instead
    key = step("governance key", lambda: keys.ensure_private_key()[0])
    key_id = keys.key_id(key.public_key())
    step(
        f"MLflow: {args.models} x {args.versions} versions with tags, aliases",
        lambda: build_registry(root, stories, key_id),
    )
    written = step(
        f"audit history ({args.records:,} records, bulk path)",
        lambda: write_history(stories, args.records, start, end, key),
    )
    print(f"    {written:,} records written")
    step("principals, approval requests", lambda: public_steps(stories))
    # one record short: the admin token each measurement creates is the last
    total = step("top-up", lambda: top_up(args.records - 1, stories)) + 1
    with audit_store() as store:
        result = step("audit verify (whole chain)", store.verify)
    if not result.ok:
        raise SystemExit(f"the chain does not verify: {result}")
    print(f"  audit trail: {total:,} records, chain verified")
    summary = {
        "models": args.models,
        "versions": args.versions,
        "records": args.records,
        "champions": {s.name: s.champion for s in stories},
        "challengers": {s.name: s.challenger for s in stories},
    }
    (root / BUILT).write_text(json.dumps(summary, indent=2))
    return steps


def check_state(models: list[str]) -> None:
    """Every model's record and alias agree (a benchmark of an alarm page would be another)."""
    from mlsteward.audit import audit_store
    from mlsteward.governance import champion

    with audit_store() as store:
        for name in models:
            found = champion.state(name, store)
            if not found.consistent or found.ignored:
                raise SystemExit(f"{name}: {found.problem()}")


# ----------------------------------------------------------------------------- measuring


def percentile(runs: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 60 runs is the 57th fastest)."""
    ordered = sorted(runs)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin_token() -> str:
    from mlsteward.identity import identity_store, local_principal

    with identity_store() as ids:
        return ids.create_token(
            f"user:{ADMIN}", by=local_principal(), expires_in_days=1, description="benchmark"
        )[1]


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlsteward.api", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited: {log.read_text()[-2000:]}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not answer within 90 s")


def timed(http: httpx.Client, path: str, **kwargs: Any) -> float:
    start = time.perf_counter()
    response = http.get(path, **kwargs)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: HTTP {response.status_code}: {response.text[:500]}")
    return elapsed


ROUTES = ("ui_models", "ui_model", "api_dashboard", "api_model")
LABELS = {
    "ui_models": "GET /ui/models (Models page)",
    "ui_model": "GET /ui/models/{m} (Model page)",
    "api_dashboard": "GET /api/v1/dashboard (JSON)",
    "api_model": "GET /api/v1/models/{m} (JSON)",
}


def measure(port: int, token: str, models: list[str], requests: int) -> dict[str, list[float]]:
    base = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {token}"}
    runs: dict[str, list[float]] = {r: [] for r in ROUTES}
    with httpx.Client(base_url=base, cookies={"msw_console": token}, timeout=120) as http:

        def one_round(model: str, keep: bool) -> None:
            times = {
                "ui_models": timed(http, "/ui/models"),
                "ui_model": timed(http, f"/ui/models/{model}"),
                "api_dashboard": timed(http, "/api/v1/dashboard", headers=bearer),
                "api_model": timed(http, f"/api/v1/models/{model}", headers=bearer),
            }
            if keep:
                for route, t in times.items():
                    runs[route].append(t)

        page = http.get("/ui/models/" + models[0]).text
        if "matches the record" not in page or "Decision history" not in page:
            raise SystemExit("the Model page does not show the expected state")
        for model in models:  # warm-up: every page once per model
            one_round(model, keep=False)
        for n in range(requests):
            one_round(models[n % len(models)], keep=True)
    return runs


def report(runs: dict[str, list[float]]) -> list[str]:
    def p(route: str, q: float) -> float:
        return percentile(runs[route], q)

    lines = [
        f"{'request':40} {'p50':>9} {'p95':>9} {'max':>9} {'n':>4}  target (p95 <= 300 ms)",
    ]
    for route in ROUTES:
        p50, p95, top = p(route, 0.5), p(route, 0.95), max(runs[route])
        verdict = ""
        if route.startswith("ui_"):
            verdict = "PASS" if p95 <= TARGET_S else "FAIL"
            verdict += f"  ({p95 / TARGET_S:.2f}x of the target)"
        lines.append(
            f"{LABELS[route]:40} {p50 * 1000:6.1f} ms {p95 * 1000:6.1f} ms {top * 1000:6.1f} ms "
            f"{len(runs[route]):>4}  {verdict}"
        )
    for page, api in (("ui_models", "api_dashboard"), ("ui_model", "api_model")):
        lines.append(
            f"{LABELS[page]} / {LABELS[api].split(' (')[0]}: p50 "
            f"{p(page, 0.5) / p(api, 0.5):.2f}x, p95 {p(page, 0.95) / p(api, 0.95):.2f}x"
        )
    return lines


def profile(models: list[str], top: int) -> None:
    """cProfile of the pages' view functions in-process (second call: caches warm)."""
    from mlsteward.api.console import models as pages

    for label, fn in (
        ("_models()", pages._models),
        (f"_model({models[0]!r})", lambda: pages._model(models[0])),
    ):
        fn()
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.runcall(fn)
        elapsed = time.perf_counter() - t0
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
        print(f"\n--- cProfile of {label}: {elapsed * 1000:.0f} ms under the profiler ---")
        print(out.getvalue())


# ----------------------------------------------------------------------------- main


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="rounds of the four requests")
    parser.add_argument("--models", type=int, default=20, help="model configs (at least 6)")
    parser.add_argument("--versions", type=int, default=50, help="versions per model")
    parser.add_argument("--records", type=int, default=100_000, help="audit records in total")
    parser.add_argument("--home", type=Path, help="build here and keep it (reused if complete)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    args = parser.parse_args(argv)
    if args.models < 6 or args.versions < 12:
        parser.error("--models must be at least 6 and --versions at least 12")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    print(f"{cores} cores; load average {load_average()} at start")
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-console-") as tmp:
        root = args.home.resolve() if args.home else Path(tmp)
        use_home(root)
        built = root / BUILT
        wanted = {"models": args.models, "versions": args.versions, "records": args.records}
        if built.exists():
            found = json.loads(built.read_text())
            if {k: found.get(k) for k in wanted} != wanted:
                raise SystemExit(f"{root} was built with {found}; use another --home")
            print(f"reusing the registry in {root}")
            setup: list[tuple[str, float]] = []
        else:
            if args.home and args.home.exists() and any(args.home.iterdir()):
                raise SystemExit(f"{args.home} is not empty and holds no complete registry")
            root.mkdir(parents=True, exist_ok=True)
            print(f"building the registry in {root} ...")
            setup = build(root, args)
            total = sum(s for _, s in setup)
            print(f"set-up: {total:.1f} s")
        models = [model_name(i) for i in range(args.models)]
        check_state(models)
        token = admin_token()
        port = free_port()
        server = start_server(port, root / "api.log")
        try:
            print(f"API on port {port}; {args.requests} rounds ...", flush=True)
            runs = measure(port, token, models, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
        if args.profile:
            profile(models, args.profile)
        print()
        if setup:
            print("set-up by step:")
            for name, seconds in setup:
                print(f"  {name:58} {seconds:7.1f} s")
            print(f"  {'total':58} {sum(s for _, s in setup):7.1f} s\n")
        print(
            f"{args.models} models x {args.versions} versions, {args.records:,} audit records; "
            "one client, keep-alive, client-side times"
        )
        print("\n".join(report(runs)))
        print(f"\nload average {load_average()} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
