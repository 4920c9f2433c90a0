"""Generated data files against the data contract: every file is either accepted, with every
row it keeps valid and exactly the rows a correct reading keeps, or refused with a message
that names the rule, column or file-level problem; never an unexpected exception, and
through the command line never a traceback.

Each file comes with what each of its cells means (``tests/support/fuzz_strategies.py``), so
the test knows which rows must be kept, which quarantined and when the whole file must be
refused, without asking the product; the published snapshot is then read back and checked
against the config's rules by this module's own code.

Example counts: modest where ``make test`` selects the ``fault_subset`` tests, larger under
``make test-faults``; ``MLSTEWARD_FUZZ_EXAMPLES`` sets them.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.data.ingestion import ingest
from mlsteward.errors import ContractViolation, MlstewardError
from mlsteward.integrity import sha256_file
from tests.conftest import REPO_ROOT
from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fuzz_strategies import (
    FLOAT32_MAX,
    NULL,
    DataFile,
    Expectation,
    canonical_ids,
    data_files,
    example_count,
    expectation,
)

# Product bugs this fuzzing found, each fixed in the product with a regression test
# (tests/unit/test_contract_files.py).
BUGS_FIXED = (
    "an int feature beyond int64 crashed the contract (TypeError)",
    "an entity id beyond int64 was wrapped into another id (-9223372036854775808)",
    "a float feature of +-inf, or beyond float32, was accepted where no bound was set",
    "a numeric time column was read as nanoseconds since 1970",
    "'now', 'today', '12:00' and 'EST' were read as times (the clock, or UTC)",
    "a first data line with one field too many shifted every value one column left",
    "a NUL byte silently cut a CSV field short",
    "a repeated column name was renamed, its values dropped",
    "a null id made the entity column text, changing the entity type between data versions",
    "UTF-16 and UTF-32 files (with a byte-order mark) were refused",
    "a naive time after one with an offset was read in that offset (hours off)",
    "labels: a missing entity id was attached; a text id against an integer log crashed",
    "labels: text ids after integer ones broke every later read of the stored outcomes",
)

# Refusals a person can act on: a rule and its column, or a problem with the file itself.
NAMED = re.compile(
    r"rule \w+ on column '|missing required column|missing column|source file is empty|"
    r"no data rows|cannot parse as|rule encoding|duplicate column|no row passed|"
    r"same value .* in every accepted row|in row\(s\) \d|holds text ids"
)
RULE_WORDS = re.compile(r"rule (\w+)")

MODEL = "heart_disease"
COUNTS_CONFIG: dict[str, Any] = {
    "name": "fuzz_counts",
    "task": "regression",
    "source": {"path": "data/fuzz_counts.csv", "entity": "member"},
    "label": "visits",
    "features": [
        {"name": "score", "dtype": "float", "nullable": True},
        {"name": "count", "dtype": "int", "min": 0},
        {"name": "kind", "dtype": "category"},
        {"name": "flag", "dtype": "bool", "nullable": True},
    ],
    "tuning": {"objective": "count:poisson"},
    "contract": {"max_bad_row_share": 0.1},
}


def config(name: str) -> ModelConfig:
    if name == MODEL:
        return get_model_config(MODEL)
    return ModelConfig.model_validate(COUNTS_CONFIG)


class Tally:
    """What the fuzzing saw, for the fault's figures."""

    def __init__(self) -> None:
        self.examples = 0
        self.outcomes: Counter[str] = Counter()
        self.rules: set[str] = set()
        self.refusals: Counter[str] = Counter()

    def refused(self, message: str) -> None:
        self.outcomes["refused"] += 1
        self.rules.update(RULE_WORDS.findall(message))
        self.refusals[_refusal_kind(message)] += 1

    def figures(self) -> dict[str, int]:
        """Numbers only: the reliability page prints each one."""
        return {
            "examples": self.examples,
            "accepted": self.outcomes["accepted"],
            "refused": self.outcomes["refused"],
            "distinct_rules_seen": len(self.rules),
            "distinct_refusals_seen": len(self.refusals),
            "bugs_fixed": len(BUGS_FIXED),
        }


def _refusal_kind(message: str) -> str:
    match = NAMED.search(message)
    return re.sub(r"\(.*\)|\d+", "", match.group(0)).strip(" '") if match else "unnamed"


def assert_named(message: str, expected: Expectation, file: DataFile) -> None:
    """The refusal names what broke, and it is the refusal this file calls for."""
    assert NAMED.search(message), f"refusal names no rule, column or file problem: {message}"
    assert "Traceback" not in message
    if expected.refusal not in (None, "*"):
        assert expected.refusal in message, (expected.refusal, message, file.notes)


# --- the snapshot, checked by this module's reading of the config -------------------------


def recheck_rows(snapshot: pd.DataFrame, cfg: ModelConfig, now: datetime) -> None:
    """Every kept row obeys every rule of ``cfg``'s contract, checked here from the config,
    not by the contract's code."""
    entity, ts = cfg.source.entity, cfg.timestamp_column
    assert snapshot[entity].notna().all()
    assert snapshot[entity].dtype == np.int64 or pd.api.types.is_string_dtype(snapshot[entity])
    assert str(snapshot[ts].dtype) == "datetime64[us, UTC]", snapshot[ts].dtype
    assert snapshot[ts].notna().all()
    limit = now + timedelta(seconds=cfg.contract.future_tolerance_seconds)
    assert (snapshot[ts] <= pd.Timestamp(limit)).all()
    assert not snapshot.duplicated([entity, ts]).any()
    for spec in cfg.data_columns:
        column = snapshot[spec.name]
        if not spec.nullable:
            assert column.notna().all(), spec.name
        present = column.dropna()
        if spec.dtype in ("int", "float"):
            values = present.astype("float64")
            assert np.isfinite(values).all() and (values.abs() <= FLOAT32_MAX).all(), spec.name
            if spec.min is not None:
                assert (values >= spec.min).all(), spec.name
            if spec.max is not None:
                assert (values <= spec.max).all(), spec.name
            if spec.dtype == "int":
                assert (values == values.round()).all(), spec.name
        elif spec.dtype == "bool":
            assert set(present.tolist()) <= {True, False}, spec.name
        else:
            assert all(isinstance(v, str) and v == v.strip() for v in present), spec.name
            if spec.categories:
                assert set(present) <= set(spec.categories), spec.name
    label = snapshot[cfg.label]
    assert label.notna().all()
    if cfg.is_regression:
        assert np.isfinite(label).all() and (label >= 0).all() and (label == label.round()).all()
    else:
        assert set(label.tolist()) <= set(cfg.label_values)


def same(value: Any, meaning: Any) -> bool:
    if meaning is NULL:
        return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    if isinstance(meaning, bool):
        return bool(value) is meaning
    if isinstance(meaning, float):
        return math.isclose(float(value), meaning, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(meaning, datetime):
        return pd.Timestamp(value) == pd.Timestamp(meaning)
    if isinstance(meaning, str):
        return str(value).strip() == meaning.strip()
    return bool(value == meaning)


def compare(snapshot: pd.DataFrame, expected: Expectation, cfg: ModelConfig) -> None:
    """The snapshot holds exactly the rows the file's meaning keeps, each value as meant."""
    entity, ts = cfg.source.entity, cfg.timestamp_column
    rows = snapshot.to_dict("records")
    assert len(rows) == len(expected.good), (len(rows), len(expected.good))
    by_key = {(_key(r[entity]), pd.Timestamp(r[ts])): r for r in rows}
    for want in expected.good:
        key = (_key(want[entity]), pd.Timestamp(want[ts]))
        assert key in by_key, f"row {key} is missing from the snapshot, or its id or time changed"
        got = by_key[key]
        for column, meaning in want.items():
            if column not in (entity, ts):
                assert same(got[column], meaning), (column, got[column], meaning)


def _key(value: Any) -> Any:
    return str(value).strip() if isinstance(value, str) else int(value)


# --- the property, in process -------------------------------------------------------------


def fuzz_ingest(cfg: ModelConfig, work: Path, examples: int, tally: Tally) -> None:
    now = datetime.now(UTC)
    published: list[Path] = []

    def publish(_: ModelConfig, path: Path, dtypes: dict[str, str]) -> None:
        """The snapshot as the feature store would get it: named by its own hash."""
        assert sha256_file(path) == path.stem
        published.append(path)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(file=data_files(cfg, now))
    def check(file: DataFile) -> None:
        tally.examples += 1
        path = work / f"source-{tally.examples}{file.suffix}"
        path.write_bytes(file.content)
        expected = expectation(file, cfg, now)
        try:
            result = ingest(cfg, path, now=now, publish=publish)
        except MlstewardError as exc:
            assert isinstance(exc, ContractViolation), type(exc)
            assert expected.refusal is not None, (
                f"refused a file a correct reading accepts: {exc}\n{file.notes}"
            )
            assert_named(str(exc), expected, file)
            tally.refused(str(exc))
            return
        assert expected.refusal is None, (
            f"accepted a file that must be refused ({expected.refusal}): {file.notes}"
        )
        tally.outcomes["accepted"] += 1
        tally.rules.update(rule for rule, _ in result.report.violations)
        snapshot = pd.read_parquet(result.snapshot.path)
        assert published[-1] == Path(result.snapshot.path)
        recheck_rows(snapshot, cfg, now)
        compare(snapshot, expected, cfg)
        assert result.report.bad_rows == expected.bad_rows, file.notes

    check()


@pytest.mark.fault_subset
@pytest.mark.parametrize("model", [MODEL, "fuzz_counts"])
def test_every_file_is_accepted_with_valid_rows_or_refused_by_name(
    model: str, tmp_path: Path, request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    cfg = config(model)
    tally = Tally()
    fuzz_ingest(cfg, tmp_path, example_count(request, quick=60, full=300), tally)
    checks = assert_invariants([cfg.name], champions=False)
    assert tally.outcomes["accepted"] and tally.outcomes["refused"], tally.figures()
    fault_result.record(
        "fuzz-data-files",
        point=f"ingestion, in process ({model}: CSV in 7 encodings and parquet)",
        outcome="refused",
        user_sees="each file accepted with every kept row valid, or refused naming the rule",
        checks=checks,
        figures=tally.figures(),
    )


# --- through the command line --------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> str:
    """The session's Prefect test server, for the module's command-line runs."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def real_cli(api: str, *args: str) -> tuple[int, str, str]:
    """``python -m mlsteward.cli ARGS --json`` in a fresh process: exit code, stdout, stderr."""
    environ = {**os.environ, "PREFECT_API_URL": api}
    done = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", *args, "--json"],
        capture_output=True, text=True, env=environ, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_the_command_line_refuses_by_name_without_a_traceback(
    prefect_api: str, tmp_path: Path, request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    """``mlsteward ingest`` and ``mlsteward labels`` on generated files, each in its own
    process, as a user meets them: exit 0 with the rows a correct reading keeps, or exit 1 with
    one named message and no traceback anywhere in the output."""
    cfg = config(MODEL)
    now = datetime.now(UTC)
    tally = Tally()
    stored = StoredIds()

    @settings(max_examples=example_count(request, quick=4, full=12), deadline=None,
              database=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(file=data_files(cfg, now))
    def check(file: DataFile) -> None:
        tally.examples += 1
        path = tmp_path / f"cli-{tally.examples}{file.suffix}"
        path.write_bytes(file.content)
        expected = expectation(file, cfg, datetime.now(UTC))
        for command in ("ingest", "labels"):
            args = ["ingest", MODEL, "--source", str(path)] if command == "ingest" else [
                "labels", MODEL, str(path)
            ]  # fmt: skip
            code, out, err = real_cli(prefect_api, *args)
            assert "Traceback" not in out + err, out + err
            document = json.loads(out)
            if command == "labels":
                want = stored.expectation(file, cfg)
                assert code == (1 if want is None else 0), (out, err, file.notes)
                if want is None:
                    assert NAMED.search(document["error"]), document["error"]
                else:
                    stored.attached(want)
                continue
            if expected.refusal is not None:
                assert code == 1 and document["ok"] is False, (out, err, file.notes)
                assert_named(document["error"], expected, file)
                tally.refused(document["error"])
            else:
                assert code == 0, (out, err, file.notes)
                tally.outcomes["accepted"] += 1
                snapshot = pd.read_parquet(document["snapshot_path"])
                recheck_rows(snapshot, cfg, now)
                compare(snapshot, expected, cfg)

    check()
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        "fuzz-data-files",
        point="mlsteward ingest and mlsteward labels, each file in a process of its own",
        outcome="refused",
        user_sees="exit 0 with valid rows, or exit 1 with one named message and no traceback",
        checks=checks,
        figures=tally.figures(),
    )


# --- late outcomes (mlsteward labels), in process ------------------------------------------


def test_outcome_files_are_attached_whole_or_refused_by_name(
    tmp_path: Path, request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    """An outcomes file is all or nothing: every row has an id, an ISO 8601 time and a label
    value, and then every row is stored as meant; else nothing is attached and the message
    names the column and rows."""
    from mlsteward.audit import audit_store
    from mlsteward.monitoring import prediction_log
    from mlsteward.monitoring.outcomes import ingest_labels

    cfg = config(MODEL)
    now = datetime.now(UTC)
    tally = Tally()
    entity, ts = cfg.source.entity, cfg.timestamp_column
    stored = StoredIds()

    @settings(max_examples=example_count(request, quick=15, full=150), deadline=None,
              database=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(file=data_files(cfg, now))
    def check(file: DataFile) -> None:
        tally.examples += 1
        path = tmp_path / f"labels-{tally.examples}{file.suffix}"
        path.write_bytes(file.content)
        want = stored.expectation(file, cfg)
        try:
            with audit_store() as audit:
                result = ingest_labels(cfg, path, actor="user:fuzz", audit=audit)
        except MlstewardError as exc:
            assert isinstance(exc, ContractViolation), type(exc)
            assert want is None, f"refused outcomes a correct reading accepts: {exc}"
            assert NAMED.search(str(exc)), str(exc)
            tally.refused(str(exc))
            return
        assert want is not None, f"attached outcomes that must be refused: {file.notes}"
        tally.outcomes["accepted"] += 1
        stored.attached(want)
        assert result["rows"] == len(file.rows) and result["stored"] == len(want)
        frame = pd.read_parquet(result["path"])
        keys = {(str(r[entity]), pd.Timestamp(r[ts])): r for r in frame.to_dict("records")}
        assert len(keys) == len(frame) == len(want)
        for key_id, when, value in want:
            got = keys[(str(key_id), pd.Timestamp(when))]
            assert same(got[prediction_log.LABEL], value), (got, value)

    check()
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        "fuzz-data-files",
        point="late outcomes (mlsteward labels), in process",
        outcome="refused",
        user_sees="every outcome attached as meant, or nothing attached and the rows named",
        checks=checks,
        figures=tally.figures(),
    )


class StoredIds:
    """The id type of the first outcomes a test's home stored: text ids cannot join the
    whole-number ones stored before them, so outcomes a correct reading accepts alone are
    refused after those."""

    def __init__(self) -> None:
        self.kind: str | None = None

    def expectation(self, file: DataFile, cfg: ModelConfig) -> list[tuple[Any, Any, Any]] | None:
        want = outcome_expectation(file, cfg)
        if want is not None and self.kind == "int" and _id_kind(want) == "text":
            return None
        return want

    def attached(self, rows: list[tuple[Any, Any, Any]]) -> None:
        self.kind = self.kind or _id_kind(rows)


def _id_kind(rows: list[tuple[Any, Any, Any]]) -> str:
    return "int" if all(isinstance(k, int) for k, _, _ in rows) else "text"


def outcome_expectation(file: DataFile, cfg: ModelConfig) -> list[tuple[Any, Any, Any]] | None:
    """The (id, time, label) rows a correct reading attaches, or None when it must refuse."""
    entity, ts, label = cfg.source.entity, cfg.timestamp_column, cfg.label
    if file.refusal is not None or not {entity, ts, label} <= set(file.columns):
        return None
    rows = []
    ids = canonical_ids([r[entity] for r in file.rows])
    for row, key in zip(file.rows, ids, strict=True):
        when, value = row[ts].meaning, row[label].meaning
        if key is NULL or not isinstance(when, datetime) or not isinstance(value, float):
            return None
        rows.append((key, when, value))
    return list({(k, pd.Timestamp(w)): (k, w, v) for k, w, v in rows}.values())
