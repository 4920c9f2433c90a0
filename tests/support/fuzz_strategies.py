"""Hypothesis strategies for data files against a model's data contract, with what each file
means: every cell is drawn together with the value the contract should read from it (or that
it breaks a rule, or is missing), so a test can say exactly which rows a correct ingestion
keeps, and whether it must refuse the file, without asking the product.

A file is a handful of valid rows (drawn from a seed, fast) changed by a few drawn mutations
(a broken cell, a duplicated key, a dropped, extra or repeated column, a ragged line, an
unclosed quote), written as CSV in one of several encodings and line ends, or as parquet with
typed or text columns; or it is replaced by something that is no table at all (empty, header
only, blank lines, random bytes).

What a cell means follows the contract's documented rules: numbers are decimal text or numeric
columns (surrounding spaces allowed; finite and within float32, which XGBoost reads; an int
feature's value a whole number within +-2**53), categories are compared after trimming spaces,
booleans are true/false, yes/no, t/f, y/n, 1/0, times are date-time columns or ISO 8601 text
(no offset: UTC), a CSV cell that pandas reads as missing (``NA``, ``null``, empty) is missing.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import strategies as st
from pandas._libs.parsers import STR_NA_VALUES

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.data import FeatureSpec


def example_count(request: pytest.FixtureRequest, *, quick: int, full: int) -> int:
    """Examples per property: ``quick`` where the run selects the ``fault_subset`` tests
    (``make test``), ``full`` otherwise (``make test-faults``, and ``.ci/run``'s ``faults and
    not fault_subset``); ``MLSTEWARD_FUZZ_EXAMPLES`` sets the full count (and the quick one,
    when it is smaller)."""
    chosen = os.environ.get("MLSTEWARD_FUZZ_EXAMPLES")
    full = int(chosen) if chosen else full
    quick = min(quick, full)
    selection = " ".join((request.config.getoption("markexpr") or "").split())
    subset_only = "fault_subset" in selection and "not fault_subset" not in selection
    return quick if subset_only else full


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BROKEN = _Marker("BROKEN")
"""A cell that breaks its column's rule (type, range, category, label, time)."""
NULL = _Marker("NULL")
"""A missing cell (empty, or a word pandas reads as missing)."""
NO_NATIVE = _Marker("NO_NATIVE")
"""A cell that only exists as text: its column is written as text in a parquet file."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
EXACT_INT_MAX = 2**53
INT64_MAX = 2**63 - 1
NON_ASCII = "éüñßøå"
TEXT_ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252", "utf-16-le")
UNICODE_ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-32")


@dataclass(frozen=True)
class Cell:
    """One cell: its text in a CSV (None: an empty field), its value in a typed parquet
    column (NO_NATIVE: text only) and what the contract should read (a value, BROKEN, NULL)."""

    text: str | None
    native: Any
    meaning: Any


@dataclass
class DataFile:
    """A generated source file and what it means."""

    fmt: str  # csv | parquet
    content: bytes
    columns: list[str]
    rows: list[dict[str, Cell]]
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None
    """Set when the file must be refused whatever its columns and rows say, with the words
    the refusal names (a file-level problem)."""

    def __repr__(self) -> str:
        return f"DataFile({self.fmt}, {len(self.content)} bytes, {self.notes})"

    @property
    def suffix(self) -> str:
        return ".parquet" if self.fmt == "parquet" else ".csv"


# --- cells, per kind of column -----------------------------------------------------------


def null_cell(word: str | None = None) -> Cell:
    return Cell(word, None, NULL)


def number_text(value: float | int, style: int) -> str:
    """Decimal text of a number that Python's ``float`` reads back to the same value."""
    if isinstance(value, int):
        return [str(value), f"{value}.0", f" {value} ", f"+{value}" if value >= 0 else str(value)][
            style % 4
        ]
    return [repr(value), f"{value:.17g}", f" {value!r}", f"{value:.17e}"][style % 4]


def numeric_meaning(spec: FeatureSpec, value: float) -> Any:
    """What the contract reads from a number in a column of ``spec``."""
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        return BROKEN
    if spec.dtype == "int" and (value != int(value) or abs(value) > EXACT_INT_MAX):
        return BROKEN
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        return BROKEN
    return value


def valid_numeric(spec: FeatureSpec, rng: random.Random) -> Cell:
    lo = spec.min if spec.min is not None else -1e6
    hi = spec.max if spec.max is not None else 1e6
    if spec.dtype == "int":
        value: float | int = rng.randint(math.ceil(lo), math.floor(hi))
    else:
        value = round(rng.uniform(lo, hi), rng.choice([0, 1, 3, 12]))
    text = number_text(value, rng.randrange(4))
    return Cell(text, value, float(value))


@st.composite
def broken_numeric(draw: st.DrawFn, spec: FeatureSpec) -> Cell:
    """A number the contract must not accept, or a missing one, or text that is no number."""
    kind = draw(st.sampled_from(["special", "huge", "outside", "fraction", "garbage", "null"]))
    if kind == "garbage":
        garbage = ["12abc", "1,5", "--3", "0x10", "abc", "1.2.3", "½", "\u22125"]
        text = draw(st.sampled_from(garbage))
        return Cell(text, NO_NATIVE, BROKEN)
    if kind == "null":
        word = draw(st.sampled_from(["", "NA", "null", "NaN", "None", "n/a", "  "]))
        return Cell(word or None, None, NULL)
    if kind == "special":
        value: float | int = draw(st.sampled_from([math.inf, -math.inf, 1e39, -3.5e38, 1e308]))
        text = draw(st.sampled_from([str(value), repr(value)]))
        text = {"inf": draw(st.sampled_from(["inf", "Infinity", "INF"])), "-inf": "-inf"}.get(
            text, text
        )
        return Cell(text, value, BROKEN)
    if kind == "huge":
        value = draw(st.sampled_from([10**19, -(10**19), 10**30, 2**63, 2**53 + 1, 2**64 + 7]))
    elif kind == "fraction":
        value = draw(st.sampled_from([0.5, 1.25, 99.999]))
        if spec.min is not None:
            value = spec.min + value
    elif spec.min is not None:  # outside the bounds
        value = spec.min - draw(st.integers(1, 10**6))
    elif spec.max is not None:
        value = spec.max + 1
    else:
        value = draw(st.sampled_from([2**60, -(2**60)]))
    if spec.dtype == "int" and float(value).is_integer():
        value = int(value)
    text = number_text(value, draw(st.integers(0, 3)))
    meaning = numeric_meaning(spec, float(text))
    native = value if abs(value) <= INT64_MAX or isinstance(value, float) else NO_NATIVE
    return Cell(text, native, meaning)


def valid_category(spec: FeatureSpec, rng: random.Random) -> Cell:
    if spec.categories:
        value = rng.choice(spec.categories)
    else:
        value = rng.choice(["alpha", "beta", "\u03b3-ray", "x y", "42"])
    text = rng.choice([value, value, f" {value} ", f"{value}\n"])
    return Cell(text, value, value)


@st.composite
def broken_category(draw: st.DrawFn, spec: FeatureSpec) -> Cell:
    if not spec.categories:  # any text is a category: only a missing one breaks a rule
        return null_cell(draw(st.sampled_from([None, "NA", "null"])))
    first = spec.categories[0]
    text = draw(
        st.sampled_from(
            [
                first.lower() if first.lower() != first else first.upper(),
                f"{first}{NON_ASCII[0]}",
                f"{first}\n{first}",
                f'{first}"quoted"',
                f"{first},{first}",
                "\x00",
                "unknown-value",
            ]
        )
    )
    if text.strip() in spec.categories:
        return Cell(text, text, text.strip())
    return Cell(text, text, BROKEN)


BOOL_WORDS = {
    "true": True, "false": False, "True": True, "FALSE": False, "yes": True, "No": False,
    "t": True, "F": False, "y": True, "n": False, "1": True, "0": False, "1.0": True,
}  # fmt: skip


def valid_bool(rng: random.Random) -> Cell:
    word = rng.choice(sorted(BOOL_WORDS))
    return Cell(word, BOOL_WORDS[word], BOOL_WORDS[word])


@st.composite
def broken_bool(draw: st.DrawFn) -> Cell:
    text = draw(st.sampled_from(["maybe", "2", "-1", "oui", "truthy", "0.5"]))
    return Cell(text, NO_NATIVE, BROKEN)


# --- entity ids, times and labels --------------------------------------------------------


def id_cell(value: int | str) -> Cell:
    if isinstance(value, int):
        return Cell(str(value), value, str(value))
    return Cell(value, value, value)


@st.composite
def odd_id(draw: st.DrawFn) -> Cell:
    """An id that is not a plain small integer: text, huge, float-shaped, or missing."""
    kind = draw(st.sampled_from(["text", "huge", "float", "null", "unicode"]))
    if kind == "null":
        return null_cell(draw(st.sampled_from([None, "NA", "  "])))
    if kind == "text":
        return id_cell(draw(st.sampled_from(["p-001", "abc", "ID 7", "0007x"])))
    if kind == "unicode":
        return id_cell(f"pat{NON_ASCII[draw(st.integers(0, len(NON_ASCII) - 1))]}")
    if kind == "huge":
        value = draw(st.sampled_from([10**23, 2**63, 2**64 + 1, -(2**63) - 1]))
        return Cell(str(value), NO_NATIVE, str(value))
    value = draw(st.integers(1, 10**6))
    return Cell(f"{value}.0", float(value), f"{value}.0")


TIME_FORMATS_VALID = ("iso_z", "iso_offset", "iso_micro", "naive_space", "naive_t", "date")
TIME_FORMATS_BROKEN = (
    "epoch", "epoch_ms", "now", "today", "garbage", "us_date", "tz_name", "rfc2822",
    "future", "year_one", "far_future",
)  # fmt: skip


def time_cell(when: datetime, style: str, rng: random.Random) -> Cell:
    """``when`` (aware, UTC) written in ``style``, with what the contract should read."""
    if style == "iso_z":  # whole seconds: the text carries no fraction, so neither may the rest
        whole = when.replace(microsecond=0)
        return Cell(whole.strftime("%Y-%m-%dT%H:%M:%SZ"), whole, whole)
    if style == "iso_offset":
        minutes = rng.choice([-720, -300, -210, 0, 60, 330, 345, 525, 840])
        local = when.astimezone(timezone(timedelta(minutes=minutes)))
        return Cell(local.isoformat(), local, when)
    if style == "iso_micro":
        return Cell(when.isoformat(timespec="microseconds"), when, when)
    if style in ("naive_space", "naive_t"):
        sep = " " if style == "naive_space" else "T"
        naive = when.replace(tzinfo=None)
        return Cell(naive.isoformat(sep=sep), naive, when)
    if style == "date":
        day = when.date()
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return Cell(day.isoformat(), day, midnight)
    return broken_time_cell(when, style)


def broken_time_cell(when: datetime, style: str) -> Cell:
    """A time the contract must refuse: not ISO 8601, or in the future."""
    seconds = int(when.timestamp())
    text = {
        "epoch": str(seconds),
        "epoch_ms": str(seconds * 1000),
        "now": "now",
        "today": "today",
        "garbage": "not a time",
        "us_date": when.strftime("%m/%d/%Y"),
        "tz_name": when.strftime("%Y-%m-%d %H:%M EST"),
        "rfc2822": when.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "future": "2100-01-01T00:00:00Z",
        "year_one": "0001-01-01T00:00:00Z",
        "far_future": "9999-12-31T23:59:59",
    }[style]
    if style == "future":  # a time, refused by the contract's no-future rule only
        future = datetime(2100, 1, 1, tzinfo=UTC)
        return Cell(text, future, future)
    return Cell(text, seconds if style == "epoch" else NO_NATIVE, BROKEN)


def label_cell(cfg: ModelConfig, rng: random.Random) -> Cell:
    if cfg.is_regression:
        value = rng.randint(0, 12)
        text = rng.choice([str(value), f"{value}.0"])
        return Cell(text, value, float(value))
    value = rng.choice(cfg.label_values)
    text = rng.choice([str(value), f"{value}.0", f" {value}"])
    return Cell(text, value, float(value))


@st.composite
def broken_label(draw: st.DrawFn, cfg: ModelConfig) -> Cell:
    if draw(st.booleans()):
        return null_cell(draw(st.sampled_from([None, "NA"])))
    if cfg.is_regression:  # not a number, or not a count (what count:poisson learns from)
        counts = cfg.tuning.objective == "count:poisson"
        text = draw(
            st.sampled_from(["-1", "2.5", "inf", "1e39", "abc"] if counts else ["inf", "abc"])
        )
    else:
        text = draw(st.sampled_from(["2", "-1", "yes", "inf", "0.5", "1e300"]))
    return Cell(text, NO_NATIVE, BROKEN)


# --- rows and files -----------------------------------------------------------------------


def required(cfg: ModelConfig) -> list[str]:
    cols = [cfg.source.entity, cfg.label, *cfg.data_column_names]
    if cfg.source.timestamp:
        cols.insert(1, cfg.source.timestamp)
    return cols


def specs(cfg: ModelConfig) -> dict[str, FeatureSpec]:
    return {c.name: c for c in cfg.data_columns}


def valid_row(
    cfg: ModelConfig, rng: random.Random, entity: int, when: datetime, style: str
) -> dict[str, Cell]:
    row = {cfg.source.entity: id_cell(entity), cfg.label: label_cell(cfg, rng)}
    if cfg.source.timestamp:
        row[cfg.source.timestamp] = time_cell(when, style, rng)
    for spec in cfg.data_columns:
        if spec.dtype in ("int", "float"):
            row[spec.name] = valid_numeric(spec, rng)
        elif spec.dtype == "bool":
            row[spec.name] = valid_bool(rng)
        else:
            row[spec.name] = valid_category(spec, rng)
        if spec.nullable and rng.random() < 0.1:
            row[spec.name] = null_cell(rng.choice([None, "NA"]))
    return row


def broken_cell(cfg: ModelConfig, column: str, when: datetime) -> st.SearchStrategy[Cell]:
    if column == cfg.source.entity:
        return odd_id()
    if column == cfg.label:
        return broken_label(cfg)
    if column == cfg.source.timestamp:
        return st.one_of(
            st.sampled_from(TIME_FORMATS_BROKEN).map(lambda s: broken_time_cell(when, s)),
            st.sampled_from([None, "NA", " "]).map(null_cell),
        )
    spec = specs(cfg)[column]
    if spec.dtype in ("int", "float"):
        return broken_numeric(spec)
    if spec.dtype == "bool":
        return st.one_of(broken_bool(), st.just(null_cell()))
    return broken_category(spec)


@dataclass(frozen=True)
class Layout:
    """How a file is written: what the rows become on disk."""

    fmt: str
    encoding: str = "utf-8"
    newline: str = "\n"
    columns: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    ragged_line: int | None = None
    unclosed_quote_line: int | None = None
    parquet_text: bool = False
    parquet_naive_times: bool = False


@st.composite
def data_files(draw: st.DrawFn, cfg: ModelConfig, now: datetime) -> DataFile:
    """A source file for ``cfg``'s contract, read at ``now``, with what it means."""
    whole = draw(st.sampled_from(["table"] * 12 + ["empty", "header_only", "blank", "bytes"]))
    fmt = draw(st.sampled_from(["csv", "csv", "parquet"]))
    if whole != "table":
        return _not_a_table(draw, cfg, whole, fmt)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 40))
    ids = rng.sample(range(1, 10**6), n)
    style = draw(st.sampled_from(TIME_FORMATS_VALID))
    start = now - timedelta(days=3 * 365)
    times = [start + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400 - 86400)) for _ in ids]
    times = [t.replace(microsecond=0) if style != "iso_micro" else t for t in times]
    rows = [valid_row(cfg, rng, i, t, style) for i, t in zip(ids, times, strict=True)]
    notes = [f"{fmt}", f"rows={n}", f"times={style}"]
    columns = required(cfg)
    header: list[str] = []
    ragged = unclosed = None

    for _ in range(draw(st.integers(0, 4))):
        kind = draw(
            st.sampled_from(
                ["cell"] * 5
                + ["dup_key", "drop_column", "extra_column", "dup_header", "shuffle"]
                + ["ragged", "unclosed_quote", "mixed_times"]
            )
        )
        row = draw(st.integers(0, n - 1))
        if kind == "cell":
            column = draw(st.sampled_from(required(cfg)))
            rows[row] = {**rows[row], column: draw(broken_cell(cfg, column, times[row]))}
        elif kind == "mixed_times" and cfg.source.timestamp:
            other = draw(st.sampled_from(TIME_FORMATS_VALID))
            rows[row] = {
                **rows[row], cfg.source.timestamp: time_cell(times[row], other, rng)
            }  # fmt: skip
        elif kind == "dup_key" and n > 1:
            target = draw(st.integers(0, n - 1))
            if target != row:
                keys = [cfg.source.entity] + (
                    [cfg.source.timestamp] if cfg.source.timestamp else []
                )
                rows[target] = {**rows[target], **{k: rows[row][k] for k in keys}}
        elif kind == "drop_column":
            column = draw(st.sampled_from(columns))
            columns = [c for c in columns if c != column]
        elif kind == "extra_column":
            name = draw(st.sampled_from(["note", "Note ", f"x{NON_ASCII}", "age_2", ""]))
            name = name or "unnamed"
            if name not in columns:
                text = draw(
                    st.sampled_from(["free text", f"café {NON_ASCII}", "a,b", "line\nbreak"])
                )
                for r in range(n):
                    rows[r] = {**rows[r], name: Cell(text, text, text)}
                columns = [*columns, name]
        elif kind == "dup_header" and fmt == "csv":
            header = [draw(st.sampled_from(columns))]
        elif kind == "shuffle":
            columns = draw(st.permutations(columns))
        elif kind == "ragged" and fmt == "csv":
            ragged = row
        elif kind == "unclosed_quote" and fmt == "csv":
            unclosed = row
        notes.append(kind)

    header = [h for h in header if h in columns]  # a repeated column dropped later is gone
    layout = Layout(
        fmt=fmt,
        encoding=draw(st.sampled_from(TEXT_ENCODINGS)) if fmt == "csv" else "binary",
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        columns=tuple(columns),
        header=tuple(header),
        ragged_line=ragged,
        unclosed_quote_line=unclosed,
        parquet_text=draw(st.booleans()),
        parquet_naive_times=draw(st.booleans()),
    )
    notes.append(f"encoding={layout.encoding}" if fmt == "csv" else f"text={layout.parquet_text}")
    return write(cfg, rows, layout, notes)


def _not_a_table(draw: st.DrawFn, cfg: ModelConfig, whole: str, fmt: str) -> DataFile:
    if whole == "empty":
        content, refusal = b"", "empty"
    elif whole == "header_only" and fmt == "csv":
        content, refusal = (",".join(required(cfg)) + "\n").encode(), "no data rows"
    elif whole == "header_only":
        buf = io.BytesIO()
        pq.write_table(pa.table({c: pa.array([], pa.string()) for c in required(cfg)}), buf)
        content, refusal = buf.getvalue(), "no data rows"
    elif whole == "blank":
        content, refusal = draw(st.sampled_from([b"\n\n\n", b"   \r\n", b"\t"])), "cannot parse"
    else:
        content = draw(st.binary(min_size=1, max_size=300))
        refusal = "*"  # any named refusal: random bytes may even be a one-column CSV
    return DataFile(fmt, content, [], [], [whole], refusal=refusal)


def write(
    cfg: ModelConfig, rows: list[dict[str, Cell]], layout: Layout, notes: list[str]
) -> DataFile:
    """The rows on disk as ``layout`` says, and the refusal that layout alone calls for."""
    columns = list(layout.columns)
    refusal = None
    if layout.fmt == "parquet":
        content = _parquet(rows, columns, layout)
    else:
        content, refusal = _csv(rows, columns, layout)
    return DataFile(layout.fmt, content, columns, rows, notes, refusal=refusal)


def _csv(
    rows: list[dict[str, Cell]], columns: list[str], layout: Layout
) -> tuple[bytes, str | None]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=layout.newline)
    header = [*columns, *layout.header]
    writer.writerow(header)
    for n, row in enumerate(rows):
        fields = [row[c].text or "" for c in columns] + [row[c].text or "" for c in layout.header]
        if n == layout.ragged_line:
            fields.append("surplus")
        writer.writerow(fields)
        if n == layout.unclosed_quote_line:
            text = out.getvalue().rstrip("\r\n")
            out = io.StringIO()
            out.write(text + ',"unclosed' + layout.newline)
    text = out.getvalue()
    refusal = None
    if layout.header:
        refusal = "duplicate column"
    elif layout.unclosed_quote_line is not None or layout.ragged_line is not None:
        refusal = "cannot parse"
    encoding = layout.encoding
    try:
        content = text.encode(encoding)
    except UnicodeEncodeError:  # a character the legacy code page lacks: written as UTF-8
        encoding, content = "utf-8", text.encode("utf-8")
    if "\x00" in text:
        refusal = "NUL character"  # the parser would cut the field short at it
    if encoding == "utf-16-le":
        refusal = "*"  # UTF-16 without its byte-order mark: read as UTF-8, it is no table
    elif encoding not in UNICODE_ENCODINGS and any(ord(ch) > 127 for ch in text):
        refusal = "encoding"
    return content, refusal


def _column(values: list[Cell], text: bool, naive_times: bool) -> pa.Array | pd.Series:
    natives = [c.native for c in values]
    texts = [c.text for c in values]
    # A word pandas reads as missing in a CSV is an empty cell in a parquet file.
    texts = [None if t is not None and t in STR_NA_VALUES else t for t in texts]
    if text or any(v is NO_NATIVE for v in natives):
        return pd.Series(texts, dtype=object)
    present = [v for v in natives if v is not None]
    kinds = {type(v) for v in present}
    if not present:
        return pd.Series(texts, dtype=object)
    if kinds == {bool}:
        return pd.Series(natives, dtype="boolean")
    if kinds <= {int}:
        if all(-(2**63) <= v <= INT64_MAX for v in present):
            return pd.Series(natives, dtype="Int64")
        return pd.Series(texts, dtype=object)
    if kinds <= {int, float}:
        return pd.Series([np.nan if v is None else float(v) for v in natives], dtype="float64")
    if kinds <= {datetime}:
        utc = [
            None if v is None else (v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC))
            for v in natives
        ]
        series = pd.Series(pd.to_datetime(utc, utc=True))
        return series.dt.tz_localize(None) if naive_times else series
    if kinds <= {date}:
        return pd.Series(natives, dtype=object)
    return pd.Series(texts, dtype=object)


def _parquet(rows: list[dict[str, Cell]], columns: list[str], layout: Layout) -> bytes:
    frame = pd.DataFrame(
        {
            c: _column([r[c] for r in rows], layout.parquet_text, layout.parquet_naive_times)
            for c in columns
        }
    )
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


# --- what a correct ingestion does with a file ---------------------------------------------

INTEGER_TEXT = re.compile(r"[+-]?\d+(?:\.0*)?")


@dataclass
class Expectation:
    """What a correct ingestion of a file does: refuse it (``refusal``: words the message must
    hold, ``*`` for any named refusal), or keep exactly ``good`` (one mapping per row: column
    to the value it means, the entity as its canonical id) and quarantine ``bad_rows``."""

    refusal: str | None
    good: list[dict[str, Any]] = field(default_factory=list)
    bad_rows: int = 0


def canonical_ids(cells: list[Cell]) -> list[Any]:
    """Ids as the contract keys them: integers when every present one is a whole number int64
    holds, else their text; NULL for a missing one."""
    present = [c.text.strip() for c in cells if c.meaning is not NULL and c.text is not None]
    whole = all(INTEGER_TEXT.fullmatch(t) for t in present) and all(
        -(2**63) <= int(t.split(".")[0]) <= INT64_MAX for t in present
    )
    out: list[Any] = []
    for c in cells:
        if c.meaning is NULL or c.text is None or not c.text.strip():
            out.append(NULL)
        else:
            out.append(int(c.text.strip().split(".")[0]) if whole else c.text.strip())
    return out


def expectation(file: DataFile, cfg: ModelConfig, now: datetime) -> Expectation:
    """What the contract must do with ``file``, worked out from what its cells mean."""
    if file.refusal is not None:
        return Expectation(file.refusal)
    if any(c not in file.columns for c in required(cfg)):
        return Expectation("missing required column")
    entity, ts, label = cfg.source.entity, cfg.source.timestamp, cfg.label
    limit = now + timedelta(seconds=cfg.contract.future_tolerance_seconds)
    nullable = {s.name for s in cfg.data_columns if s.nullable}
    ids = canonical_ids([r[entity] for r in file.rows])
    keys, bad = [], []
    for row, key_id in zip(file.rows, ids, strict=True):
        when = row[ts].meaning if ts else now.replace(microsecond=0)
        if isinstance(when, datetime) and when > limit:
            when = BROKEN
        broken = key_id is NULL or when in (BROKEN, NULL)
        for column in [label, *cfg.data_column_names]:
            meaning = row[column].meaning
            broken |= meaning is BROKEN or (meaning is NULL and column not in nullable)
        keys.append((key_id, when) if key_id is not NULL and isinstance(when, datetime) else None)
        bad.append(broken)
    for n, key in enumerate(keys):
        if key is not None and keys.count(key) > 1:
            bad[n] = True
    total, n_bad = len(file.rows), sum(bad)
    if n_bad / total > cfg.contract.max_bad_row_share:
        return Expectation("broke the contract", bad_rows=n_bad)
    good = [
        {
            **{c: row[c].meaning for c in [label, *cfg.data_column_names]},
            entity: key[0],  # type: ignore[index]
            cfg.timestamp_column: key[1],  # type: ignore[index]
        }
        for row, key, b in zip(file.rows, keys, bad, strict=True)
        if not b
    ]
    if not good:
        return Expectation("no row passed", bad_rows=n_bad)
    if cfg.is_regression and len({g[label] for g in good}) == 1:
        return Expectation("same value", bad_rows=n_bad)
    return Expectation(None, good, n_bad)
