"""The data contract: rules derived from a model's config, checked row by row.

Why row-level: a source with a handful of bad rows should still feed the feature store (bad rows
go to quarantine with the rule they broke), while a source that is broken as a whole (missing
column, unparsable file, too many bad rows) must stop everything before Feast sees any of it.
The functions here are pure: they take frames and return frames plus a report, so the same
rules can guard ingestion, training inputs and scoring inputs.
"""

from __future__ import annotations

import codecs
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.data import FeatureSpec
from mlsteward.config.sections.training import (
    INTEGER_LABEL_OBJECTIVES,
    NON_NEGATIVE_LABEL_OBJECTIVES,
)
from mlsteward.errors import ContractViolation

TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0", "0.0"})

# Rule names are stable identifiers: they appear in quarantine files, reports and audit records.
RULE_MISSING_COLUMN = "required_column"
RULE_DTYPE = "dtype"
RULE_NOT_NULL = "not_null"
RULE_RANGE = "range"
RULE_CATEGORY = "allowed_category"
RULE_UNIQUE_KEY = "unique_entity_timestamp"
RULE_FUTURE = "no_future_timestamp"
RULE_LABEL = "label_value"
RULE_LABEL_NUMERIC = "label_numeric"
RULE_LABEL_COUNT = "label_count"
RULE_LABEL_NONNEGATIVE = "label_nonnegative"
RULE_ENCODING = "encoding"  # a CSV source that is not text in its encoding (file level)


@dataclass
class ContractReport:
    """What the contract found; serialisable so the CLI, Prefect artifacts and audit share it."""

    model: str
    source: str
    total_rows: int = 0
    bad_rows: int = 0
    violations: Counter = field(default_factory=Counter)  # (rule, column) -> rows
    fatal: list[str] = field(default_factory=list)
    timestamp_assigned: bool = False
    inferred_dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def good_rows(self) -> int:
        return self.total_rows - self.bad_rows

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.total_rows if self.total_rows else 0.0

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "source": self.source,
            "total_rows": self.total_rows,
            "good_rows": self.good_rows,
            "bad_rows": self.bad_rows,
            "bad_share": round(self.bad_share, 6),
            "violations": [
                {"rule": r, "column": c, "rows": n}
                for (r, c), n in sorted(self.violations.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "fatal": list(self.fatal),
            "timestamp_assigned": self.timestamp_assigned,
            "inferred_dtypes": dict(self.inferred_dtypes),
        }

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.total_rows} rows, {self.bad_rows} broke the contract "
            f"({self.bad_share:.2%})"
        ]
        lines += [f"  - {msg}" for msg in self.fatal]
        lines += [
            f"  - rule {v['rule']} on column {v['column']!r}: {v['rows']} row(s)"
            for v in self.to_dict()["violations"]
        ]
        return "\n".join(lines)


@dataclass
class ContractResult:
    good: pd.DataFrame
    quarantined: pd.DataFrame
    report: ContractReport


# Byte-order marks, longest first (a UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def text_encoding(path: Path) -> str:
    """A CSV source is UTF-8, unless a byte-order mark says UTF-8 (Excel's), UTF-16 or UTF-32:
    one rule, never a guess, so a Latin-1 file is refused instead of read as the wrong
    characters."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")


def _check_text(path: Path, encoding: str) -> None:
    """Refuse a CSV source that is not text in ``encoding``, or that holds a NUL character
    (the CSV parser silently cuts a field at one), naming where, as a person finds it."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, offset = 1, 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                bad = chunk[exc.start : exc.start + 1].hex()
                raise ContractViolation(
                    f"{path}: rule {RULE_ENCODING}: not {encoding} text, byte 0x{bad} at offset "
                    f"{offset + exc.start} (line {line}); save it as UTF-8 (a byte-order mark "
                    "marks UTF-16 or UTF-32)"
                ) from None
            if "\x00" in text:
                line += text[: text.index("\x00")].count("\n")
                raise ContractViolation(
                    f"{path}: rule {RULE_ENCODING}: a NUL character on line {line}; a CSV "
                    "source is text"
                )
            line += text.count("\n")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ContractViolation(
            f"{path}: rule {RULE_ENCODING}: not {encoding} text, the last character is cut short"
        ) from None


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    """Every field as text. The header is read as a row of its own, so a line with more fields
    than the header is refused by the parser (pandas would otherwise take a first line's extra
    field as an index and shift every value one column left) and a repeated column name is
    seen (pandas would rename the second one)."""
    options: dict[str, Any] = {
        "header": None, "dtype": str, "skipinitialspace": True, "encoding": encoding
    }  # fmt: skip
    names = pd.read_csv(path, nrows=1, keep_default_na=False, **options).iloc[0].tolist()
    names = [name if name != "" else f"Unnamed: {i}" for i, name in enumerate(names)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ContractViolation(
            f"{path}: duplicate column(s) {repeated}: which one holds the values is unknown"
        )
    df = pd.read_csv(path, keep_default_na=True, **options).iloc[1:]
    df.columns = names
    return df.reset_index(drop=True)


def read_source(path: Path, cfg: ModelConfig) -> pd.DataFrame:
    """Read CSV or parquet as raw as possible: typing is the contract's job, not the reader's.

    Raises:
        ContractViolation: the file is missing, empty, not text in its encoding (rule
            ``encoding``), unparsable, has a column twice or no data rows; the message names
            the file.
    """
    if not path.exists():
        raise ContractViolation(f"{path}: source file does not exist")
    if path.stat().st_size == 0:
        raise ContractViolation(f"{path}: source file is empty (0 bytes)")
    fmt = cfg.source.file_format(path)
    if fmt != "parquet":
        encoding = text_encoding(path)
        _check_text(path, encoding)
    try:
        df = pd.read_parquet(path) if fmt == "parquet" else _read_csv(path, encoding)
    except ContractViolation:
        raise
    except Exception as exc:  # any parser failure is the same user-facing problem
        raise ContractViolation(f"{path}: cannot parse as {fmt}: {exc}") from exc
    if df.empty:
        raise ContractViolation(f"{path}: no data rows (header only or empty table)")
    if df.columns.duplicated().any():
        repeated = sorted(set(df.columns[df.columns.duplicated()]))
        raise ContractViolation(
            f"{path}: duplicate column(s) {repeated}: which one holds the values is unknown"
        )
    return df


def required_columns(cfg: ModelConfig, attributes: bool = False) -> list[str]:
    """The columns no row can be judged without; ``attributes``: also the sensitive columns
    that are not features (a training source must carry them for the fairness gate)."""
    names = cfg.data_column_names if attributes else cfg.feature_names
    cols = [cfg.source.entity, cfg.label, *names]
    if cfg.source.timestamp:
        cols.insert(1, cfg.source.timestamp)
    return cols


# XGBoost reads features (and labels) as float32: a larger number would train as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Integers beyond this lose digits as float64, which every numeric check works in.
EXACT_INT_MAX = 2**53
INT64_MAX = np.iinfo(np.int64).max
_INTEGER_TEXT = r"[+-]?\d+(?:\.0*)?"
# ISO 8601 text starts with its four-digit year; pandas would also read "now" or "today".
_ISO_START = r"\d{4}"
# An offset (or Z) after a time of day: 'T10:00+05:30', ' 10:00:00.5Z', 'T1000-0500'.
_ISO_ZONE = r"[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _coerce_numeric(raw: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype("float64")
    if isinstance(raw.dtype, pd.CategoricalDtype):
        raw = raw.astype(object)
    return pd.to_numeric(raw, errors="coerce").astype("float64")


def _representable(values: pd.Series) -> pd.Series:
    """Whether each number is one a model can read: finite within float32 (NaN counts as
    representable here: a missing value is the not-null rule's)."""
    return values.isna() | (values.abs() <= FLOAT32_MAX)


def _coerce_bool(raw: pd.Series) -> pd.Series:
    """Accept real booleans, 0/1 and the usual words; anything else becomes NA (a dtype break)."""
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype("boolean")
    text = raw.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    out[text.isin(TRUE_STRINGS).fillna(False).astype(bool)] = True
    out[text.isin(FALSE_STRINGS).fillna(False).astype(bool)] = False
    return out


def infer_dtype(raw: pd.Series) -> str:
    """Infer a feature type when the config leaves it out; the choice is recorded in lineage."""
    present = raw.dropna()
    if pd.api.types.is_bool_dtype(raw):
        return "bool"
    text = present.astype(str).str.strip().str.lower()
    # Words (yes/no, true/false) make a bool; a column of only 0/1 is left to the numeric rule.
    words = text.isin(TRUE_STRINGS | FALSE_STRINGS) & ~text.isin({"0", "1", "0.0", "1.0"})
    if len(text) and text.isin(TRUE_STRINGS | FALSE_STRINGS).all() and words.any():
        return "bool"
    numeric = pd.to_numeric(present, errors="coerce")
    if len(present) and numeric.notna().mean() >= 0.95:
        finite = numeric.dropna()
        return "int" if np.all(np.equal(np.mod(finite, 1), 0)) else "float"
    return "category"


def _check_feature(
    spec: FeatureSpec, dtype: str, raw: pd.Series
) -> tuple[pd.Series, dict[str, pd.Series]]:
    """Return the typed column and one boolean 'broken' mask per rule."""
    missing = raw.isna()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        missing = missing | raw.astype("string").str.strip().eq("").fillna(False).astype(bool)
    masks: dict[str, pd.Series] = {}
    if dtype in ("int", "float"):
        typed = _coerce_numeric(raw)
        unparsable = (typed.isna() & ~missing) | ~_representable(typed)
        if dtype == "int":
            known = typed.where(~unparsable, 0.0).fillna(0.0)
            inexact = (np.mod(known, 1) != 0) | (known.abs() > EXACT_INT_MAX)
            unparsable = unparsable | inexact
        masks[RULE_DTYPE] = unparsable
        below = typed < spec.min if spec.min is not None else pd.Series(False, index=raw.index)
        above = typed > spec.max if spec.max is not None else pd.Series(False, index=raw.index)
        masks[RULE_RANGE] = (below | above).fillna(False)
        typed = typed.where(~unparsable)
        typed = typed.astype("Int64") if dtype == "int" else typed
    elif dtype == "bool":
        typed = _coerce_bool(raw)
        masks[RULE_DTYPE] = typed.isna() & ~missing
    else:
        typed = raw.astype("string").str.strip()
        typed = typed.where(~missing)
        if spec.categories is not None:
            masks[RULE_CATEGORY] = (~typed.isin(spec.categories)).fillna(False) & ~missing
    if not spec.nullable:
        masks[RULE_NOT_NULL] = missing
    return typed, {k: v.fillna(False).astype(bool) for k, v in masks.items()}


def parse_event_times(raw: pd.Series) -> pd.Series:
    """Event times as UTC, NaT where a value is no time.

    A time is a date-time column's value (a naive one read as UTC) or ISO 8601 text: a date,
    or a date and time with or without an offset (without one, UTC). Everything else is no
    time rather than a guess: a number (seconds, milliseconds or nanoseconds since 1970?),
    words such as ``now``, a day-month order (``1/2/2024``) or a zone abbreviation (``EST``)
    the parser would silently drop.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        ts = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        return ts.astype("datetime64[us, UTC]")
    if pd.api.types.is_numeric_dtype(raw) and not isinstance(raw.dtype, pd.CategoricalDtype):
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    text = raw.astype("string").str.strip()
    text = text.where(text.str.match(_ISO_START).fillna(False).astype(bool))
    # Parsed in two groups: given a column whose first value has an offset, pandas applies
    # that offset to the values that have none, instead of reading them as UTC.
    zoned = text.str.contains(_ISO_ZONE, case=False).fillna(False).astype(bool)
    ts = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    for group in (zoned, ~zoned):
        if group.any():
            parsed = pd.to_datetime(
                text[group].astype(object), utc=True, errors="coerce", format="ISO8601"
            )
            ts[group] = parsed.astype("datetime64[us, UTC]")
    return ts


def _check_timestamps(
    raw: pd.Series, now: datetime, tolerance_s: int
) -> tuple[pd.Series, dict[str, pd.Series]]:
    ts = parse_event_times(raw)
    missing = raw.isna()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        missing = missing | raw.astype("string").str.strip().eq("").fillna(False).astype(bool)
    limit = pd.Timestamp(now + timedelta(seconds=tolerance_s))
    return ts, {
        RULE_DTYPE: (ts.isna() & ~missing).astype(bool),
        RULE_NOT_NULL: missing.astype(bool),
        RULE_FUTURE: (ts > limit).fillna(False).astype(bool),
    }


def _check_label(raw: pd.Series, allowed: list[int]) -> tuple[pd.Series, pd.Series]:
    values = _coerce_numeric(raw)
    ok = values.isin([float(a) for a in allowed])
    return values.where(ok).astype("Int64"), (~ok).astype(bool)


def check_regression_label(
    raw: pd.Series, objective: str
) -> tuple[pd.Series, dict[str, pd.Series]]:
    """A regression label is a finite number; a count objective's a whole number >= 0, a
    Tweedie one's >= 0 (their log link has no prediction for anything else). The masks are
    disjoint, in rule order; late outcomes are held to the same rules
    (``monitoring.outcomes``)."""
    values = _coerce_numeric(raw)
    finite = values.notna() & (values.abs() <= FLOAT32_MAX)
    numeric = pd.Series(finite.to_numpy(dtype=bool), index=raw.index)
    masks = {RULE_LABEL_NUMERIC: ~numeric}
    known = values.where(numeric, 0.0)
    if objective in INTEGER_LABEL_OBJECTIVES:
        masks[RULE_LABEL_COUNT] = numeric & ((known < 0) | (np.mod(known, 1) != 0))
    elif objective in NON_NEGATIVE_LABEL_OBJECTIVES:
        masks[RULE_LABEL_NONNEGATIVE] = numeric & (known < 0)
    return values.where(numeric), {k: v.astype(bool) for k, v in masks.items()}


def _require_columns(
    df: pd.DataFrame,
    cfg: ModelConfig,
    report: ContractReport,
    source: str,
    require_label: bool,
    attributes: bool,
) -> None:
    """No row can be judged without its columns: a missing one refuses the whole file."""
    needed = [c for c in required_columns(cfg, attributes) if require_label or c != cfg.label]
    missing_cols = [c for c in needed if c not in df.columns]
    if not missing_cols:
        return
    report.fatal.append(f"missing required column(s) {missing_cols}; found {list(df.columns)}")
    for c in missing_cols:
        report.violations[(RULE_MISSING_COLUMN, c)] = len(df)
    raise ContractViolation(
        f"{source}: missing required column(s) {missing_cols} (model {cfg.name!r} needs {needed})",
        report.to_dict(),
    )


Masks = dict[tuple[str, str], pd.Series]


def _check_key(
    df: pd.DataFrame, cfg: ModelConfig, report: ContractReport, now: datetime
) -> tuple[pd.DataFrame, Masks]:
    """The entity id (integers stay integers, anything else is text) and the event time
    (parsed and checked, or the ingestion time when the source has none)."""
    out = pd.DataFrame(index=df.index)
    broken: Masks = {}
    entity_raw = df[cfg.source.entity]
    out[cfg.source.entity] = entity_ids(entity_raw)
    missing = out[cfg.source.entity].isna()
    if pd.api.types.is_string_dtype(out[cfg.source.entity]):
        missing = missing | out[cfg.source.entity].str.strip().eq("").fillna(False)
    broken[(RULE_NOT_NULL, cfg.source.entity)] = missing.astype(bool)

    ts_col = cfg.timestamp_column
    if cfg.source.timestamp:
        ts, masks = _check_timestamps(
            df[cfg.source.timestamp], now, cfg.contract.future_tolerance_seconds
        )
        for rule, m in masks.items():
            broken[(rule, ts_col)] = m
    else:
        report.timestamp_assigned = True
        stamp = pd.Timestamp(now.replace(microsecond=0))
        ts = pd.Series(stamp, index=df.index).astype("datetime64[us, UTC]")
    out[ts_col] = ts
    return out, broken


def entity_ids(raw: pd.Series) -> pd.Series:
    """Entity ids as integers (``Int64``) when every present one is a whole number that int64
    holds exactly (``7``, ``7.0``), else as text: the same file always keys its rows the same
    way, whether or not one id is missing, and an id is never rounded or wrapped into
    another."""
    if pd.api.types.is_integer_dtype(raw):
        if raw.isna().all() or raw.max() <= INT64_MAX:
            return raw.astype("Int64")
        return raw.astype("string")
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        return raw.astype("string")
    text = raw.astype("string")
    if pd.api.types.is_float_dtype(raw):
        whole = raw.dropna()
        if (
            len(whole)
            and bool(np.all(np.mod(whole, 1) == 0))
            and whole.abs().max() <= EXACT_INT_MAX
        ):
            return raw.astype("Int64")
        return text
    present = text.dropna().str.strip()
    if not len(present) or not present.str.fullmatch(_INTEGER_TEXT).all():
        return text
    numbers = [int(v.split(".", 1)[0]) for v in present]
    if not all(-INT64_MAX - 1 <= v <= INT64_MAX for v in numbers):
        return text
    out = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    out[present.index] = numbers
    return out


def _tally(broken: Masks, index: pd.Index, report: ContractReport) -> tuple[pd.Series, pd.Series]:
    """Which rows broke any rule, and the rules each broke (``rule:column;...``)."""
    any_broken = pd.Series(False, index=index)
    reasons = pd.Series("", index=index, dtype=object)
    for (rule, col), mask in broken.items():
        mask = mask.fillna(False).astype(bool)
        n = int(mask.sum())
        if n:
            report.violations[(rule, col)] = n
            any_broken |= mask
            reasons[mask] = reasons[mask] + f"{rule}:{col};"
    report.bad_rows = int(any_broken.sum())
    return any_broken, reasons


def _good_rows(
    out: pd.DataFrame,
    keep: pd.Series,
    columns: list[FeatureSpec],
    cfg: ModelConfig,
    report: ContractReport,
    label: bool,
) -> pd.DataFrame:
    """Rows that passed, with non-nullable ints and bools in their plain numpy types; a
    classification label as int64, a regression label as float64 (training and Feast read it
    so, whatever the objective)."""
    good = out[keep].copy()
    if isinstance(good[cfg.source.entity].dtype, pd.Int64Dtype):
        good[cfg.source.entity] = good[cfg.source.entity].astype("int64")
    for spec in columns:
        dtype = report.inferred_dtypes[spec.name]
        if dtype == "bool" and not spec.nullable:
            good[spec.name] = good[spec.name].astype(bool)
        elif dtype == "int" and not spec.nullable:
            good[spec.name] = good[spec.name].astype("int64")
    if label:
        good[cfg.label] = good[cfg.label].astype("float64" if cfg.is_regression else "int64")
    return good


def _checked_columns(
    df: pd.DataFrame, cfg: ModelConfig, training_source: bool
) -> list[FeatureSpec]:
    """The features, then the sensitive columns that are not features: always at training,
    elsewhere (scoring, drift) when the input carries them."""
    return [
        *cfg.features,
        *(c for c in cfg.attribute_columns if training_source or c.name in df.columns),
    ]


def _constant_label(good: pd.DataFrame, cfg: ModelConfig) -> str | None:
    """Why a regression source has nothing to learn, or None: one value in every good row."""
    values = good[cfg.label].dropna().unique()
    if len(values) != 1:
        return None
    return (
        f"label column {cfg.label!r} has the same value ({values[0]:g}) in every accepted row: "
        "a regression model has nothing to learn from it"
    )


def check_contract(
    df: pd.DataFrame,
    cfg: ModelConfig,
    source: str = "<frame>",
    now: datetime | None = None,
    require_label: bool = True,
    training_source: bool = False,
) -> ContractResult:
    """Apply every rule; return typed good rows, quarantined rows and the report.

    Args:
        require_label: False for inputs with no outcome yet (scoring): the label is then
            neither required nor checked.
        training_source: the data a model trains on (ingestion): the sensitive columns that
            are not features must be present, since the fairness gate groups the holdout by
            them, and a regression label must take more than one value. Other inputs are
            checked on those columns only when they carry them.

    Raises:
        ContractViolation: when a required column is missing (no row can be judged then).
            Too many bad rows, or a constant regression label in a training source, is
            recorded in ``report.fatal``; ``enforce`` turns it into an error after the caller
            has quarantined the rows.
    """
    now = now or datetime.now(UTC)
    report = ContractReport(model=cfg.name, source=source, total_rows=len(df))
    _require_columns(df, cfg, report, source, require_label, training_source)

    df = df.reset_index(drop=True)
    out, broken = _check_key(df, cfg, report, now)
    columns = _checked_columns(df, cfg, training_source)
    for spec in columns:
        dtype = spec.dtype or infer_dtype(df[spec.name])
        report.inferred_dtypes[spec.name] = dtype
        typed, masks = _check_feature(spec, dtype, df[spec.name])
        out[spec.name] = typed
        for rule, m in masks.items():
            broken[(rule, spec.name)] = m

    if require_label and cfg.label in df.columns:
        if cfg.is_regression:
            out[cfg.label], masks = check_regression_label(df[cfg.label], cfg.tuning.objective)
            for rule, m in masks.items():
                broken[(rule, cfg.label)] = m
        else:
            out[cfg.label], broken[(RULE_LABEL, cfg.label)] = _check_label(
                df[cfg.label], cfg.label_values
            )

    ts_col = cfg.timestamp_column
    key_ok = out[cfg.source.entity].notna() & out[ts_col].notna()
    dup = out.duplicated([cfg.source.entity, ts_col], keep=False) & key_ok
    broken[(RULE_UNIQUE_KEY, f"{cfg.source.entity}+{ts_col}")] = dup

    any_broken, reasons = _tally(broken, df.index, report)
    quarantined = df[any_broken].astype("string").copy()
    quarantined.insert(0, "_violations", reasons[any_broken].str.rstrip(";"))
    quarantined.insert(0, "_row_number", (df.index[any_broken] + 1).astype("int64"))
    good = _good_rows(out, ~any_broken, columns, cfg, report, require_label)

    limit = cfg.contract.max_bad_row_share
    if report.bad_share > limit:
        report.fatal.append(
            f"{report.bad_rows} of {report.total_rows} rows ({report.bad_share:.2%}) broke the "
            f"contract; the limit is {limit:.2%}"
        )
    elif good.empty:
        report.fatal.append("no row passed the contract")
    elif training_source and require_label and cfg.is_regression:
        constant = _constant_label(good, cfg)
        if constant:
            report.fatal.append(constant)
    return ContractResult(good=good, quarantined=quarantined, report=report)


def enforce(result: ContractResult) -> ContractResult:
    """Turn a failed contract into an error; callers write quarantine first so nothing is lost."""
    report = result.report
    if report.fatal:
        raise ContractViolation(
            f"data contract failed for model {report.model!r}\n" + report.summary(),
            report.to_dict(),
        )
    return result
