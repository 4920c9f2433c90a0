"""Source files the data contract once misread, each now read as meant or refused by name
(found by tests/faults/test_fuzz_data_files.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsteward.audit import audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.data.contract import check_contract, enforce, parse_event_times, read_source
from mlsteward.errors import ContractViolation
from mlsteward.monitoring.outcomes import ingest_labels

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def cfg(**features: dict[str, object]) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "m",
            "task": "binary_classification",
            "source": {"path": "x.csv", "entity": "id", "timestamp": "ts"},
            "label": "y",
            "features": [{"name": name, **spec} for name, spec in features.items()]
            or [{"name": "x", "dtype": "float"}],
            "contract": {"max_bad_row_share": 1.0},
        }
    )


def frame(n: int = 3, **columns: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "id": [str(i) for i in range(1, n + 1)],
        "ts": ["2024-01-01T00:00:00Z"] * n,
        "x": ["1.5"] * n,
        "y": ["1"] * n,
    }
    return pd.DataFrame({**base, **columns}, dtype=object)


def broken(result: object) -> dict[tuple[str, str], int]:
    return dict(result.report.violations)  # type: ignore[attr-defined]


def test_an_int_feature_beyond_int64_breaks_the_dtype_rule_instead_of_crashing() -> None:
    df = frame(x=["1e20", "99999999999999999999999", "7"])
    result = check_contract(df, cfg(x={"dtype": "int"}), now=NOW)
    assert broken(result) == {("dtype", "x"): 2}
    assert result.good["x"].tolist() == [7]


def test_infinite_or_float32_overflowing_numbers_break_the_dtype_rule_without_bounds() -> None:
    df = frame(4, x=["inf", "-Infinity", "1e39", "3.0e38"])
    result = check_contract(df, cfg(x={"dtype": "float"}), now=NOW)
    assert broken(result) == {("dtype", "x"): 3}
    assert result.good["x"].tolist() == pytest.approx([3.0e38])


def test_an_entity_id_beyond_int64_is_kept_as_its_text_never_wrapped() -> None:
    df = frame(id=["99999999999999999999999", "2", "3"])
    good = check_contract(df, cfg(), now=NOW).good
    assert good["id"].tolist() == ["99999999999999999999999", "2", "3"]


def test_a_missing_id_leaves_the_other_ids_integers() -> None:
    result = check_contract(frame(id=["1", None, "3.0"]), cfg(), now=NOW)
    assert broken(result) == {("not_null", "id"): 1}
    assert result.good["id"].dtype == np.int64 and result.good["id"].tolist() == [1, 3]


@pytest.mark.parametrize(
    "text", ["now", "today", "12:00", "2024-01-01 00:00 EST", "1/2/2024", "1700000000", "x"]
)
def test_only_iso_8601_text_is_a_time(text: str) -> None:
    assert parse_event_times(pd.Series([text])).isna().all()


def test_a_numeric_time_column_is_no_time() -> None:
    """Seconds, milliseconds or nanoseconds since 1970: pandas took nanoseconds."""
    df = frame(ts=[1_700_000_000, 1_700_000_001, 1_700_000_002])
    df["ts"] = df["ts"].astype("int64")
    assert broken(check_contract(df, cfg(), now=NOW)) == {("dtype", "ts"): 3}


def test_a_naive_time_after_one_with_an_offset_is_read_as_utc() -> None:
    """pandas applied the first value's offset (-05:00) to the naive ones."""
    times = parse_event_times(pd.Series(["2024-02-08T14:00:00-05:00", "2024-02-08 19:30:05"]))
    assert times.tolist() == [
        pd.Timestamp("2024-02-08T19:00:00Z"),
        pd.Timestamp("2024-02-08T19:30:05Z"),
    ]


def write(tmp_path: Path, content: bytes, suffix: str = ".csv") -> Path:
    path = tmp_path / f"source{suffix}"
    path.write_bytes(content)
    return path


def test_a_first_line_with_one_field_too_many_is_refused_not_shifted(tmp_path: Path) -> None:
    """pandas took the surplus first field as an index and moved every value one column."""
    path = write(tmp_path, b"id,ts,x,y\n1,2024-01-01,1.5,1,surplus\n2,2024-01-01,2.5,0\n")
    with pytest.raises(ContractViolation, match=r"cannot parse as csv: .*line 2"):
        read_source(path, cfg())


def test_a_nul_byte_is_refused_naming_the_line(tmp_path: Path) -> None:
    """The parser cut the field short at the NUL: 'F\\x00junk' read as 'F'."""
    path = write(tmp_path, b"id,ts,x,y\n1,2024-01-01,1.5,1\n2,2024-01-01,2\x00junk,0\n")
    with pytest.raises(ContractViolation, match="rule encoding: a NUL character on line 3"):
        read_source(path, cfg())


def test_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    """pandas renamed the second one 'x.1', and the contract read only the first."""
    path = write(tmp_path, b"id,ts,x,y,x\n1,2024-01-01,1.5,1,9\n")
    with pytest.raises(ContractViolation, match=r"duplicate column\(s\) \['x'\]"):
        read_source(path, cfg())


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_a_byte_order_mark_names_the_encoding(tmp_path: Path, encoding: str) -> None:
    text = "id,ts,x,y\n1,2024-01-01,1.5,1\n"
    result = enforce(
        check_contract(read_source(write(tmp_path, text.encode(encoding)), cfg()), cfg(), now=NOW)
    )
    assert result.good["id"].tolist() == [1]


def test_latin_1_is_refused_naming_the_byte_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "id,ts,x,y\n1,2024-01-01,1.5,1\n2,2024-01-01,café,0\n".encode("latin-1"))
    with pytest.raises(
        ContractViolation, match=r"rule encoding: not utf-8 text, byte 0xe9 .*line 3"
    ):
        read_source(path, cfg())


def outcomes(tmp_path: Path, rows: str, name: str = "labels") -> dict[str, object]:
    path = tmp_path / f"{name}.csv"
    path.write_text("id,ts,y\n" + rows)
    with audit_store() as audit:
        return ingest_labels(cfg(), path, actor="user:test", audit=audit)


def test_an_outcome_without_an_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContractViolation, match=r"missing 'id' in row\(s\) 2"):
        outcomes(tmp_path, "1,2024-01-01,1\n,2024-01-01,0\n")


def test_outcomes_with_text_ids_after_integer_ones_are_refused(tmp_path: Path) -> None:
    """Stored in two types, every later read of the outcomes failed in pyarrow."""
    assert outcomes(tmp_path, "1,2024-01-01,1\n", "first")["stored"] == 1
    with pytest.raises(ContractViolation, match="'id' holds text ids"):
        outcomes(tmp_path, "p-1,2024-01-02,0\n", "second")
    assert outcomes(tmp_path, "2,2024-01-02T00:00:00+01:00,0\n", "third")["stored"] == 1
