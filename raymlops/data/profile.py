"""Infer a starting ``validation`` section from data (``raymlops profile DATA``), pure pandas.

The proposal is a draft for a person to tighten: observed ranges become bounds, text columns with few
distinct values become allowed lists, columns without gaps become non-nullable, and columns whose
values are all distinct are marked unique. Dates and times are typed as ``date``/``timestamp`` (text
such as ``2013-01-01`` included) with a lower bound only: later data is the point of a stream. Every
range is an expectation of the training data, not a request contract (``request_bounds`` stays off):
a request outside it is served and measured as drift.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pandas as pd

from raymlops.data.readers import PROVENANCE_COLUMNS

MAX_ALLOWED = 30


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        values = series.dropna()
        return "int" if len(values) and values.eq(values.round()).all() and series.notna().all() else "float"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, _dt.date)).all():  # Parquet date32 columns
        return "timestamp" if present.map(lambda v: isinstance(v, _dt.datetime)).all() else "date"
    text = series.dropna().astype(str)
    if len(text) and pd.to_numeric(text, errors="coerce").notna().all():
        numbers = pd.to_numeric(text)
        return "int" if numbers.eq(numbers.round()).all() else "float"
    if len(text) and text.str.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}").all():
        return "timestamp"
    if len(text) and text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all() and pd.to_datetime(
            text, format="%Y-%m-%d", errors="coerce").notna().all():
        return "date"
    return "string"


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def profile_frame(frame: pd.DataFrame) -> dict[str, Any]:
    """A proposed validation section (a plain dict, ready to dump as YAML)."""
    columns: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        if name in PROVENANCE_COLUMNS:
            continue
        series = frame[name]
        kind = _kind(series)
        exp: dict[str, Any] = {"type": kind}
        nulls = int(series.isna().sum())
        if nulls == 0:
            exp["nullable"] = False
        else:
            exp["max_null_fraction"] = round(min(1.0, 2 * nulls / len(series)), 4)
        values = series.dropna()
        if kind in ("int", "float") and len(values):
            numbers = pd.to_numeric(values.astype(str) if values.dtype == object else values)
            exp["min"], exp["max"] = _plain(numbers.min()), _plain(numbers.max())
        elif kind == "timestamp" and len(values):  # no max: a stream's later rows are expected, not errors
            exp["min"] = pd.to_datetime(values, utc=True).min().isoformat()
        elif kind == "date" and len(values):
            exp["min"] = str(pd.to_datetime(values.astype(str) if values.dtype == object else values).min().date())
        elif kind == "string":
            distinct = values.astype(str).unique()
            if len(distinct) <= MAX_ALLOWED:
                exp["allowed"] = sorted(distinct.tolist())
        if len(values) == len(series) and values.is_unique and len(series) > 1 and kind in ("int", "string"):
            exp["unique"] = True
        columns[name] = exp
    return {"row_count": {"min": max(1, len(frame) // 2)}, "columns": columns}
