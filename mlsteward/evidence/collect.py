"""The pieces of a pack that come from the registry and the home: the model card, lineage, the
data contract and the ingestion of the data version, the validation report with its fairness
and explainability parts, reproductions, and the signed model artifact.

Each collector writes its files into the pack folder and returns them under their evidence
kind; a kind with nothing to show for this version gets a reason instead of a file (a pack
never holds an empty placeholder that would pass for evidence).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from mlsteward.audit import Action
from mlsteward.config.settings import lineage_settings, reproductions_dir
from mlsteward.data import contract as rules
from mlsteward.errors import MlstewardError
from mlsteward.evidence.manifest import copy_file, write_json
from mlsteward.evidence.subject import Pieces, Subject
from mlsteward.governance import registry, signatures
from mlsteward.governance.gates import FAIRNESS, METRIC_THRESHOLDS
from mlsteward.report import collect_model_card, lineage_from_tags, write_card
from mlsteward.signing import keys
from mlsteward.training.recipe import RECIPE_SHA_TAG, recipe_sha256

CONTRACT_RULES = {
    rules.RULE_MISSING_COLUMN: "every feature, sensitive attribute, entity, timestamp and "
    "label column is present (a missing one refuses the whole source)",
    rules.RULE_DTYPE: "each value parses as its column's type",
    rules.RULE_NOT_NULL: "columns that are not nullable have a value in every row",
    rules.RULE_RANGE: "numeric values lie within the column's [min, max]",
    rules.RULE_CATEGORY: "categorical values are among the column's categories",
    rules.RULE_UNIQUE_KEY: "one row per entity and timestamp",
    rules.RULE_FUTURE: "no timestamp later than now plus contract.future_tolerance_seconds",
    rules.RULE_LABEL: "a classifier's label takes one of label_values",
    rules.RULE_LABEL_NUMERIC: "a regression label is a number",
    rules.RULE_LABEL_COUNT: "a count objective's label is a whole number",
    rules.RULE_LABEL_NONNEGATIVE: "a label of a log-link objective is not negative",
}
"""The contract's rules by their stable names (as quarantine files and audit records name
them); a row that breaks one is quarantined, a source with more than
``contract.max_bad_row_share`` bad rows is refused."""

VALIDATION_ACTIONS = (Action.VALIDATION_PASSED.value, Action.VALIDATION_FAILED.value)
REPRODUCTION_ACTIONS = (Action.REPRODUCED.value, Action.REPRODUCTION_REFUSED.value)
_RUNS_URI = re.compile(r"^runs:/([^/]+)/(.+)$")


def collect_card(root: Path, s: Subject) -> Pieces:
    """The model card as ``mlsteward report`` writes it, renamed into the pack."""
    out = Pieces()
    card = collect_model_card(s.model)
    with tempfile.TemporaryDirectory(prefix="mlsteward-evidence-card-") as d:
        written = write_card(card, Path(d))
        copy_file(Path(written["html"]), root, "model_card.html")
        copy_file(Path(written["markdown"]), root, "model_card.md")
    out.add("model_card", "model_card.html", "model_card.md")
    out.warnings += [f"model card: {w}" for w in card.warnings]
    return out


# ------------------------------------------------------------------------------ lineage


def _run_file(run_id: str, path: str) -> Any:
    """A JSON file of the version's run, or None when it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="mlsteward-evidence-run-") as d:
        try:
            return json.loads(registry.download_run_file(run_id, path, Path(d)).read_text())
        except (MlflowException, OSError, ValueError):
            return None


def collect_lineage(root: Path, s: Subject) -> Pieces:
    """``lineage.json`` (the registered version, its lineage tags, the run's lineage document,
    the recipe's check), the recipe itself and the version's OpenLineage run events."""
    out = Pieces()
    tags = s.info.tags
    recipe = s.recipe
    files = ["lineage.json"]
    if recipe is not None:
        files.append(write_json(root, "lineage/recipe.json", recipe))
    run_lineage = _run_file(s.info.run_id, "lineage.json")
    if run_lineage is None:
        out.warnings.append(f"lineage: the run's lineage.json of run {s.info.run_id} is unreadable")
    write_json(
        root,
        "lineage.json",
        {
            "model": s.model,
            "version": s.version,
            "registered": {
                **s.info.to_dict(),
                "source": s.info.source,
                "signature": tags.get(signatures.SIGNATURE_TAG),
                "signing_key_id": tags.get(signatures.KEY_ID_TAG),
                "audit_seq": s.registered.seq,
                "registered_by": s.registered.actor,
                "registered_at": s.registered.ts,
            },
            "lineage": lineage_from_tags(tags),
            "run_lineage": run_lineage,
            "recipe": {
                "file": "lineage/recipe.json" if recipe is not None else None,
                "sha256_tag": tags.get(RECIPE_SHA_TAG),
                "sha256": recipe_sha256(recipe) if recipe is not None else None,
                "how": "sha256 of the recipe's canonical JSON (keys sorted, no whitespace)",
                "problem": s.recorded_problem,
            },
            "training_metrics": s.recorded.metrics if s.recorded is not None else None,
        },
    )
    events = _openlineage_events(s, out)
    if events:
        files.append("lineage/openlineage.jsonl")
        (root / "lineage/openlineage.jsonl").parent.mkdir(parents=True, exist_ok=True)
        (root / "lineage/openlineage.jsonl").write_text("".join(events), encoding="utf-8")
    out.add("lineage", *files)
    return out


def _names(event: dict[str, Any]) -> Iterator[str]:
    for side in ("inputs", "outputs"):
        for dataset in event.get(side) or []:
            if isinstance(dataset, dict):
                yield str(dataset.get("name"))


def _openlineage_events(s: Subject, out: Pieces) -> list[str]:
    """The lines of the runs that read or wrote this version (training, scoring, drift), as
    the file transport stored them; none when events go elsewhere or were never written."""
    try:
        settings = lineage_settings()
    except MlstewardError as exc:
        out.warnings.append(f"lineage: OpenLineage settings unreadable ({exc})")
        return []
    if settings.transport != "file" or settings.path is None or not settings.path.is_file():
        return []
    dataset = f"models/{s.model}/versions/{s.version}"
    lines: list[tuple[str, str]] = []
    runs: set[str] = set()
    with settings.path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            run = str((event.get("run") or {}).get("runId"))
            lines.append((run, line if line.endswith("\n") else line + "\n"))
            if dataset in _names(event):
                runs.add(run)
    return [line for run, line in lines if run in runs]


# ------------------------------------------------------------------------------ data


def collect_data(root: Path, s: Subject) -> Pieces:
    """The data contract the version was trained under and the ingestion of its data
    version."""
    out = Pieces()
    cfg = s.cfg
    if cfg is None:
        out.none("data_contract", "no recipe and no model configuration to read the contract from")
        return out
    recipe = s.recipe or {}
    write_json(
        root,
        "data/contract.json",
        {
            "model": s.model,
            "derived_from": s.cfg_source,
            "task": cfg.task,
            "source": cfg.source.model_dump(mode="json"),
            "label": cfg.label,
            "label_values": cfg.label_values,
            "features": [f.model_dump(mode="json") for f in cfg.features],
            "sensitive_attributes": [a.model_dump(mode="json") for a in cfg.sensitive_attributes],
            "contract": cfg.contract.model_dump(mode="json"),
            "rules": CONTRACT_RULES,
            "data_version": s.data_digest,
            "snapshot": recipe.get("snapshot"),
        },
    )
    files = ["data/contract.json"]
    ingested = [
        r.to_dict()
        for r in s.own
        if r.action == Action.INGESTION_ACCEPTED
        and s.data_digest
        and r.details.get("data_version") == s.data_digest
    ]
    if ingested:
        files.append(write_json(root, "data/ingestion.json", ingested))
    else:
        out.warnings.append(
            f"data: no ingestion_accepted record names data version {s.data_digest}"
        )
    out.add("data_contract", *files)
    return out


# ------------------------------------------------------------------------------ validation


def collect_validation(root: Path, s: Subject) -> Pieces:
    """The gates' report as stored on the run (named by the newest validation record), and
    its fairness and SHAP parts."""
    out = Pieces()
    record = next((r for r in reversed(s.version_records) if r.action in VALIDATION_ACTIONS), None)
    uri = str(record.details.get("report") or "") if record is not None else ""
    match = _RUNS_URI.match(uri)
    if record is None or match is None:
        why = "the version was never validated" if record is None else f"no report URI ({uri!r})"
        for kind in ("validation_report", "fairness_report", "explainability"):
            out.none(kind, why)
        return out
    run_id, path = match.groups()
    with tempfile.TemporaryDirectory(prefix="mlsteward-evidence-validation-") as d:
        try:
            local = registry.download_run_file(run_id, path, Path(d) / "json")
        except (MlflowException, OSError) as exc:
            why = f"the report {uri} named by audit record {record.seq} cannot be read ({exc})"
            out.warnings.append(f"validation: {why}")
            for kind in ("validation_report", "fairness_report", "explainability"):
                out.none(kind, why)
            return out
        copy_file(local, root, "validation/report.json")
        files = ["validation/report.json"]
        try:
            markdown = registry.download_run_file(
                run_id, path.removesuffix(".json") + ".md", Path(d) / "md"
            )
            files.append(copy_file(markdown, root, "validation/report.md"))
        except (MlflowException, OSError):
            pass  # the markdown is a rendering of the same report
    report = json.loads((root / "validation/report.json").read_text(encoding="utf-8"))
    out.add("validation_report", *files)
    gates = {g.get("name"): g for g in report.get("gates") or [] if isinstance(g, dict)}
    _fairness(root, gates.get(FAIRNESS), record.seq, out)
    _explainability(root, gates.get(METRIC_THRESHOLDS), out)
    return out


def _fairness(root: Path, gate: dict[str, Any] | None, seq: int, out: Pieces) -> None:
    details = (gate or {}).get("details") or {}
    if not details.get("attributes"):
        out.none("fairness_report", "no sensitive attributes were configured for this version")
        return
    assert gate is not None
    write_json(
        root,
        "validation/fairness.json",
        {
            "from": "validation/report.json, gate 'fairness'",
            "validation_record_seq": seq,
            "passed": gate.get("passed"),
            "violations": gate.get("violations"),
            "note": gate.get("note"),
            "min_group_size": details.get("min_group_size"),
            "attributes": details.get("attributes"),
        },
    )
    out.add("fairness_report", "validation/fairness.json")


def _explainability(root: Path, gate: dict[str, Any] | None, out: Pieces) -> None:
    evaluation = ((gate or {}).get("details") or {}).get("evaluation") or {}
    shap = evaluation.get("shap") if isinstance(evaluation, dict) else None
    if not isinstance(shap, dict) or not shap.get("mean_abs"):
        out.none("explainability", "the stored validation report holds no SHAP sample")
        return
    ranked = sorted(shap["mean_abs"].items(), key=lambda kv: -(kv[1] or 0.0))
    write_json(
        root,
        "validation/explainability.json",
        {
            "from": "validation/report.json, gate 'metric_thresholds', details.evaluation.shap",
            "method": "exact TreeSHAP (XGBoost's pred_contribs) on a seeded holdout sample",
            "rows": shap.get("rows"),
            "of_holdout_rows": evaluation.get("rows"),
            "scale": shap.get("scale"),
            "base_value": shap.get("base_value"),
            "features": shap.get("features"),
            "categorical": shap.get("categorical"),
            "mean_abs_shap": [{"feature": k, "mean_abs": v} for k, v in ranked],
            "per_row_values": "in validation/report.json (shap.values, shap.contributions)",
        },
    )
    out.add("explainability", "validation/explainability.json")


# ------------------------------------------------------------------------------ reproduction


def collect_reproduction(root: Path, s: Subject) -> Pieces:
    """The version's reproduction records and the reports they name, when they are still in
    the home's reproductions folder."""
    out = Pieces()
    records = [r for r in s.version_records if r.action in REPRODUCTION_ACTIONS]
    if not records:
        out.none("reproduction", "no reproduction of this version was ever run")
        return out
    files = [write_json(root, "reproduction/records.json", [r.to_dict() for r in records])]
    home = reproductions_dir(s.model).resolve()
    for rec in records:
        named = rec.details.get("report")
        report = Path(str(named)).resolve() if named else None
        if report is None or not report.is_file() or home not in report.parents:
            if named:
                out.warnings.append(f"reproduction: record {rec.seq}'s report {named} is gone")
            continue
        files.append(copy_file(report, root, f"reproduction/{report.parent.name}/report.json"))
    out.add("reproduction", *files)
    return out


# ------------------------------------------------------------------------------ artifacts


def collect_artifacts(root: Path, s: Subject) -> Pieces:
    """The model's files as registered, checked now as every load checks them (SHA-256 tag,
    signature by the governance key), with the signature and the public key.

    Raises:
        IntegrityError, SignatureError: the stored artifact fails its check; a pack never
            vouches for an artifact that does not verify.
    """
    out = Pieces()
    with tempfile.TemporaryDirectory(prefix="mlsteward-evidence-model-") as d:
        model_file, _ = registry.check_artifact(s.info, Path(d))
        model_dir = model_file.parent
        files = []
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(model_dir)
            if rel.parts[0] in signatures.IGNORED:
                continue  # written by MLflow's download, never stored or signed
            files.append(copy_file(path, root, f"artifacts/model/{rel.as_posix()}"))
        signature = next((Path(d) / signatures.SIGNATURE_DIR).rglob(signatures.SIGNATURE_FILE))
        files.append(copy_file(signature, root, "artifacts/signature/model.sig"))
    pem = keys.public_pem(keys.load_public_key()).decode("ascii")
    (root / "artifacts/governance.pub").write_text(pem, encoding="ascii")
    files.append("artifacts/governance.pub")
    out.add("artifact_signatures", *files)
    return out
