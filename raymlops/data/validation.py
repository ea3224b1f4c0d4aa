"""Declared expectations checked batch by batch, then aggregated into one ValidationReport (no Ray).

Row-level checks (type, nullability, range, allowed values) run through a pandera schema built from the
config, on each batch independently, so Ray can spread them over workers. Whole-dataset checks (row
count, null fraction, uniqueness, declared columns present) are computed when the per-batch partials
are merged. Examples are sorted by (source, row) before truncation, so a report does not depend on how
the data happened to be partitioned.

Example::

    partial = check_batch(frame, cfg.validation)          # on each batch, anywhere
    report = merge_partials([partial, ...], cfg.validation)
    report.passed, report.failures()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from raymlops.config import ColumnExpectation, ValidationConfig
from raymlops.data.readers import PROVENANCE_COLUMNS, ROW_COLUMN, SOURCE_COLUMN
from raymlops.workspace import write_json_atomic

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_MAX_RECORD_FIELDS = 24


# ------------------------------------------------------------------------------------ coercion
def _to_bool(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.astype("boolean")
    text = series.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=series.index, dtype="boolean")
    out[text.isin(_TRUE).fillna(False).astype(bool)] = True
    out[text.isin(_FALSE).fillna(False).astype(bool)] = False
    return out


def coerce_series(series: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """Cast to the declared type; return the cast column and a mask of cells that could not be read.

    Unreadable cells become missing in the cast column, so the other checks still run on the rest.
    """
    present = series.notna()
    if kind in ("int", "float"):
        text = series.str.strip() if series.dtype == object or pd.api.types.is_string_dtype(series) else series
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        if kind == "int":
            integral = numbers.isna() | (numbers == numbers.round())
            numbers = numbers.where(integral & (numbers.abs() < 2**63))
            out = numbers.astype("Int64")
        else:
            out = numbers
    elif kind == "string":
        out = series.astype("string")
    elif kind == "bool":
        out = _to_bool(series)
    elif kind in ("timestamp", "date"):
        when = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
        out = when.dt.as_unit("us") if kind == "timestamp" else when.dt.tz_localize(None).dt.normalize().dt.as_unit("us")
    else:  # the config schema admits nothing else
        raise ValueError(f"unknown column type {kind!r}")
    failed = present & out.isna()
    return out, failed


def coerce_frame(frame: pd.DataFrame, cfg: ValidationConfig) -> pd.DataFrame:
    """Cast declared columns to their declared types (validation has already reported bad cells)."""
    frame = frame.copy()
    for name, exp in cfg.columns.items():
        if exp.type and name in frame.columns:
            frame[name] = coerce_series(frame[name], exp.type)[0]
    return frame


# ---------------------------------------------------------------------------------- the schema
def _bound(value: Any, kind: str | None) -> Any:
    if isinstance(value, str) and kind in ("timestamp", "date"):
        ts = pd.Timestamp(value)
        if kind == "timestamp":
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts
    return value


def _column_schema(exp: ColumnExpectation) -> pa.Column:
    checks = []
    if exp.min is not None and exp.max is not None:
        checks.append(pa.Check.in_range(_bound(exp.min, exp.type), _bound(exp.max, exp.type)))
    elif exp.min is not None:
        checks.append(pa.Check.ge(_bound(exp.min, exp.type)))
    elif exp.max is not None:
        checks.append(pa.Check.le(_bound(exp.max, exp.type)))
    if exp.allowed is not None:
        allowed = [str(v) for v in exp.allowed] if exp.type in (None, "string") else list(exp.allowed)
        checks.append(pa.Check.isin(allowed))
    return pa.Column(None, checks=checks, nullable=exp.nullable, required=False)


def build_schema(cfg: ValidationConfig) -> pa.DataFrameSchema:
    """The pandera schema of the value expectations, applied after coercion (undeclared columns pass)."""
    return pa.DataFrameSchema({name: _column_schema(exp) for name, exp in cfg.columns.items()}, strict=False)


# --------------------------------------------------------------------------- per-batch partials
def _check_name(pandera_check: str) -> str:
    for prefix, name in (("not_nullable", "not_null"),
                         ("in_range", "range"), ("greater_than_or_equal_to", "range"),
                         ("less_than_or_equal_to", "range"), ("isin", "allowed")):
        if pandera_check.startswith(prefix):
            return name
    return pandera_check


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)


def _record(frame: pd.DataFrame, idx: int) -> dict[str, Any]:
    row = frame.iloc[idx]
    cols = [c for c in frame.columns if c not in PROVENANCE_COLUMNS][:_MAX_RECORD_FIELDS]
    return {c: _jsonable(row[c]) for c in cols}


def _where(frame: pd.DataFrame, idx: int) -> tuple[str | None, int | None]:
    source = frame[SOURCE_COLUMN].iloc[idx] if SOURCE_COLUMN in frame.columns else None
    row = frame[ROW_COLUMN].iloc[idx] if ROW_COLUMN in frame.columns else None
    return _jsonable(source), _jsonable(row)


def _add_failure(failures: dict[str, dict[str, Any]], frame: pd.DataFrame, column: str, check: str,
                 idx: int, value: Any, max_examples: int) -> None:
    entry = failures.setdefault(f"{column}\x00{check}", {"count": 0, "examples": []})
    entry["count"] += 1
    if len(entry["examples"]) < max_examples:
        source, row = _where(frame, idx)
        entry["examples"].append({"source": source, "row": row, "value": _jsonable(value),
                                  "record": _record(frame, idx)})


def check_batch(frame: pd.DataFrame, cfg: ValidationConfig) -> dict[str, Any]:
    """Check one batch; return a JSON-able partial that ``merge_partials`` combines."""
    frame = frame.reset_index(drop=True)
    failures: dict[str, dict[str, Any]] = {}
    coerced = frame.copy()
    unreadable: dict[str, pd.Series] = {}
    for name, exp in cfg.columns.items():
        if exp.type and name in frame.columns:
            coerced[name], bad = coerce_series(frame[name], exp.type)
            unreadable[name] = bad
            for idx in np.flatnonzero(bad.to_numpy()):
                _add_failure(failures, frame, name, "type", int(idx), frame[name].iloc[idx], cfg.max_examples)
    try:
        build_schema(cfg).validate(coerced, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        cases = cases[cases["column"].isin(list(cfg.columns))]
        for case in cases.itertuples(index=False):
            idx = case.index
            if idx is None or (isinstance(idx, float) and math.isnan(idx)):
                continue
            idx = int(idx)
            if case.column in unreadable and unreadable[case.column].iloc[idx]:
                continue  # an unreadable cell is reported once, as a type failure
            _add_failure(failures, frame, case.column, _check_name(str(case.check)), idx,
                         frame[case.column].iloc[idx], cfg.max_examples)
    uniques: dict[str, dict[str, list[Any]]] = {}
    sources = frame[SOURCE_COLUMN].tolist() if SOURCE_COLUMN in frame.columns else [None] * len(frame)
    rownums = frame[ROW_COLUMN].tolist() if ROW_COLUMN in frame.columns else [None] * len(frame)
    for name, exp in cfg.columns.items():
        if exp.unique and name in frame.columns:
            values = frame[name].astype("string").dropna()
            counts = values.value_counts()
            first = values.drop_duplicates(keep="first")
            uniques[name] = {v: [int(counts[v]), sources[i], rownums[i]] for i, v in first.items()}
    present = [c for c in cfg.columns if c in frame.columns]
    return {
        "rows": len(frame),
        "present": present,
        "nulls": {c: int(frame[c].isna().sum()) for c in present},
        "failures": failures,
        "uniques": uniques,
    }


# ------------------------------------------------------------------------------------ the report
@dataclass(frozen=True)
class CheckResult:
    """One expectation on one column (or on the dataset when column is None) and how it went."""

    column: str | None
    check: str
    passed: bool
    failures: int
    detail: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    """Everything validation found: per column, each check, its failures and a few example rows."""

    rows: int
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rows": self.rows, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        failed = self.failed_checks()
        if not failed:
            return f"validation passed: {len(self.checks)} checks on {self.rows:,} rows"
        lines = [f"validation failed: {len(failed)} of {len(self.checks)} checks on {self.rows:,} rows"]
        for c in failed:
            where = ""
            if c.examples:
                ex = c.examples[0]
                if ex.get("source") is not None:
                    where = f" (e.g. {Path(str(ex['source'])).name} row {ex['row']:,}: {ex.get('value')!r})"
                elif "value" in ex:
                    where = f" (e.g. {ex.get('value')!r})"
            lines.append(f"  - {c.column or '(dataset)'}: {c.check}: {c.detail}{where}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename) so a reader never sees half a report."""
        return write_json_atomic(path, self.to_dict())


def _sorted_examples(examples: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    return sorted(examples, key=lambda e: (str(e.get("source")), e.get("row") or 0))[:k]


def _describe(exp: ColumnExpectation, check: str) -> str:
    return {
        "type": f"cells that cannot be read as {exp.type}",
        "not_null": "missing values in a non-nullable column",
        "range": f"values outside [{exp.min if exp.min is not None else '-inf'}, "
                 f"{exp.max if exp.max is not None else 'inf'}]",
        "allowed": f"values not among the {len(exp.allowed or [])} allowed",
    }.get(check, check)


def merge_partials(partials: list[dict[str, Any]], cfg: ValidationConfig) -> ValidationReport:
    """Combine per-batch partials and add the whole-dataset checks."""
    rows = sum(p["rows"] for p in partials)
    present = {c for p in partials for c in p["present"]}
    nulls: dict[str, int] = {}
    failures: dict[str, dict[str, Any]] = {}
    for p in partials:
        for c, n in p["nulls"].items():
            nulls[c] = nulls.get(c, 0) + n
        for key, entry in p["failures"].items():
            agg = failures.setdefault(key, {"count": 0, "examples": []})
            agg["count"] += entry["count"]
            agg["examples"].extend(entry["examples"])
    checks: list[CheckResult] = []

    rc = cfg.row_count
    if rc.min is not None or rc.max is not None:
        ok = (rc.min is None or rows >= rc.min) and (rc.max is None or rows <= rc.max)
        checks.append(CheckResult(None, "row_count", ok, 0 if ok else 1,
                                  f"{rows:,} rows; expected between {rc.min if rc.min is not None else 0:,} "
                                  f"and {rc.max if rc.max is not None else 'any'}"))

    for name, exp in cfg.columns.items():
        if name not in present:
            if cfg.require_declared_columns:
                checks.append(CheckResult(name, "present", False, 1,
                                          "declared column is missing from the data (check the name or the source)"))
            continue
        row_checks = ["type"] if exp.type else []
        row_checks += [] if exp.nullable else ["not_null"]
        row_checks += ["range"] if exp.min is not None or exp.max is not None else []
        row_checks += ["allowed"] if exp.allowed is not None else []
        for check in row_checks:
            entry = failures.get(f"{name}\x00{check}", {"count": 0, "examples": []})
            n = entry["count"]
            checks.append(CheckResult(name, check, n == 0, n,
                                      f"{n:,} {_describe(exp, check)}" if n else _describe(exp, check),
                                      _sorted_examples(entry["examples"], cfg.max_examples)))
        if exp.max_null_fraction is not None:
            frac = nulls.get(name, 0) / rows if rows else 0.0
            ok = frac <= exp.max_null_fraction
            checks.append(CheckResult(name, "max_null_fraction", ok, 0 if ok else nulls.get(name, 0),
                                      f"{frac:.2%} missing; at most {exp.max_null_fraction:.2%} allowed"))
        if exp.unique:
            merged: dict[str, list[Any]] = {}
            for p in partials:
                for value, (count, source, row) in p["uniques"].get(name, {}).items():
                    if value in merged:
                        merged[value][0] += count
                        merged[value][1].append({"source": source, "row": row, "value": value})
                    else:
                        merged[value] = [count, [{"source": source, "row": row, "value": value}]]
            dupes = {v: m for v, m in merged.items() if m[0] > 1}
            extra = sum(m[0] - 1 for m in dupes.values())
            examples = _sorted_examples([e for m in dupes.values() for e in m[1]], cfg.max_examples)
            checks.append(CheckResult(name, "unique", not dupes, extra,
                                      f"{len(dupes):,} values appear more than once" if dupes else "all values distinct",
                                      examples))
    return ValidationReport(rows=rows, checks=checks)
