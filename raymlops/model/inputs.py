"""What a model package accepts: its input schema as a typed record, and frames cast by it (pure pydantic).

The input schema is the validation section the model was trained under, restricted to the columns the
feature pipeline reads (``packaging.input_schema``). Each column becomes a typed field: bounds become
``ge``/``le``, allowed values become a ``Literal``, non-nullable columns are required, unknown fields are
refused (``extra="forbid"``) and NaN/infinity are refused everywhere. Serving wraps the record in its HTTP
requests (``serving.schema``); batch scoring and retraining cast frames with ``coerce_to_schema``, the
same casts as ingestion; training calls ``check_servable`` before it registers a version.

Example::

    Record = record_model(manifest["input_schema"])
    frame = frame_from_rows([Record.model_validate(row).model_dump()], manifest["input_schema"])
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model,
                      field_validator)

from raymlops.data.validation import coerce_series
from raymlops.errors import ModelPackageError

MAX_STRING = 256


def _as_utc(value: Any) -> datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _number(name: str, which: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelPackageError(f"input column {name!r}: {which} {value!r} is not a number") from None


def _range_text(lo: Any, hi: Any) -> str:
    """'0..5000', '>= 0' or '<= 10': a bound may be given on one side only."""
    if lo is not None and hi is not None:
        return f", {lo}..{hi}"
    if lo is not None:
        return f", >= {lo}"
    return f", <= {hi}" if hi is not None else ""


def _json_number(value: Any) -> Any:
    """A number arrives as a JSON number: pydantic alone would read true as 1.0 and "12" as 12."""
    if isinstance(value, (bool, str)):
        raise ValueError("Input should be a valid number: a JSON number, not true/false or text")
    return value


def _time_text(value: Any) -> Any:
    """A date or time arrives as ISO 8601 text (the type the OpenAPI document declares); pydantic alone
    would also read a number as seconds since 1970, and 27397659 would be served as 1970-11-13."""
    if value is None or isinstance(value, (str, datetime, date)):
        return value
    raise ValueError("must be an ISO 8601 date or time as text, e.g. \"2013-06-01T14:00:00Z\"")


_EARLIEST = pd.Timestamp.min.ceil("D").tz_localize("UTC").to_pydatetime()  # datetime64[ns], as the features use
_LATEST = pd.Timestamp.max.floor("D").tz_localize("UTC").to_pydatetime()


def _representable(value: Any) -> Any:
    """Within the times the feature pipeline computes with (datetime64[ns]: 1677-09-22 to 2262-04-11, UTC);
    without a configured range, year 1 or 9999 would otherwise fail inside the model call (a 500)."""
    when = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    try:
        inside = _EARLIEST <= when.astimezone(timezone.utc) <= _LATEST
    except (OverflowError, ValueError):  # year 1 shifted west of UTC leaves datetime's own range
        inside = False
    if not inside:
        raise ValueError("must lie between 1677-09-22 and 2262-04-11 (UTC)")
    return value


def _field(name: str, spec: dict[str, Any]) -> tuple[Any, Any]:
    """(annotation, default) of one input column."""
    kind = spec.get("type", "string")
    nullable = spec.get("nullable", True)
    bounds: dict[str, Any] = {}
    allowed = spec.get("allowed")
    lo, hi = spec.get("min"), spec.get("max")
    if kind in ("int", "float"):
        if lo is not None:
            bounds["ge"] = _number(name, "min", lo)
        if hi is not None:
            bounds["le"] = _number(name, "max", hi)
        if kind == "int":  # pydantic wants integer bounds on an int; the same integers pass
            bounds = {k: (math.ceil if k == "ge" else math.floor)(v) for k, v in bounds.items()}
    if allowed is not None:
        base: Any = Literal[tuple(allowed)]  # type: ignore[valid-type]
    elif kind == "int":
        base = Annotated[int, BeforeValidator(_json_number), Field(strict=False, **bounds)]
    elif kind == "float":
        base = Annotated[float, BeforeValidator(_json_number), Field(allow_inf_nan=False, **bounds)]
    elif kind == "bool":
        base = bool
    elif kind == "timestamp":
        base = Annotated[datetime, BeforeValidator(_time_text), AfterValidator(_representable)]
    elif kind == "date":
        base = Annotated[date, BeforeValidator(_time_text), AfterValidator(_representable)]
    else:
        base = Annotated[str, Field(max_length=MAX_STRING)]
    description = f"{kind}" + _range_text(lo, hi)
    if nullable:
        return base | None, Field(None, description=description + " (may be null or omitted)")
    return base, Field(..., description=description)


def _time_bound(name: str, which: str, value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return _as_utc(value)
    except (TypeError, ValueError):
        raise ModelPackageError(f"input column {name!r}: {which} {value!r} is not a date or time") from None


def record_model(schema: dict[str, dict[str, Any]], name: str = "Record") -> type[BaseModel]:
    """A pydantic model of one input record, with the schema's types, bounds and categories.

    A column that cannot become a field raises ModelPackageError naming it (not a bare KeyError at deploy).
    """
    fields = {}
    for col, spec in schema.items():
        try:
            fields[col] = _field(col, spec)
            create_model(f"{name}_{col}", **{col: fields[col]})  # pydantic's own objections, per column
        except ModelPackageError:
            raise
        except Exception as exc:
            why = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
            raise ModelPackageError(f"input column {col!r} ({spec}) cannot become a request field: {why}") from None
    # Parsed once here, so a bad bound is refused now rather than in every request; the text stays for messages.
    time_bounds = {col: (spec.get("min"), spec.get("max"), _time_bound(col, "min", spec.get("min")),
                         _time_bound(col, "max", spec.get("max")))
                   for col, spec in schema.items()
                   if spec.get("type") in ("timestamp", "date") and (spec.get("min") or spec.get("max"))}

    def check_time_bounds(cls, value: Any, info: Any) -> Any:
        if value is None or info.field_name not in time_bounds:
            return value
        lo, hi, lo_at, hi_at = time_bounds[info.field_name]
        when = _as_utc(value)
        if lo_at is not None and when < lo_at:
            raise ValueError(f"must be at or after {lo}")
        if hi_at is not None and when > hi_at:
            raise ValueError(f"must be at or before {hi}")
        return value

    validators = {}
    if time_bounds:
        validators["_time_bounds"] = field_validator(*time_bounds)(classmethod(check_time_bounds))
    return create_model(name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
                        __validators__=validators, **fields)


def check_servable(schema: dict[str, dict[str, Any]]) -> type[BaseModel]:
    """Build the request model and the health-check probe exactly as a replica does; raise
    ModelPackageError naming the column if either fails. Training calls it before registering, so a
    version that could never be served is refused then, not at `raymlops serve`."""
    record = record_model(schema)
    try:
        probe = probe_record(schema)
        frame_from_rows([record.model_validate(probe).model_dump()], schema)
    except ValidationError as exc:
        first = exc.errors()[0]
        column = ".".join(str(p) for p in first["loc"])
        raise ModelPackageError(f"input column {column!r}: no value passes its own checks (the health-check "
                                f"probe {probe.get(column)!r} fails: {first['msg']}); check its min, max and "
                                "allowed values") from None
    except ModelPackageError:
        raise
    except Exception as exc:
        raise ModelPackageError(f"the input schema cannot build a probe record for health checks: {exc}") from None
    return record


def coerce_to_schema(frame: pd.DataFrame, schema: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Cast the schema's columns with the same casts as ingestion; also return, per column, the cells
    that could not be read (non-empty only for columns with failures)."""
    frame = frame.copy()
    failures: dict[str, pd.Series] = {}
    for col, spec in schema.items():
        kind = spec.get("type")
        if not kind or col not in frame.columns:
            continue
        values = frame[col]
        if kind in ("timestamp", "date") and values.dtype == object:
            values = values.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
        elif kind in ("int", "float") and not pd.api.types.is_numeric_dtype(values):
            raw = values
            values = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype("float64")
            bad = raw.notna() & values.isna()
            if bad.any():
                failures[col] = raw[bad]
        cast, failed = coerce_series(values, kind)
        if failed.any():
            failures[col] = values[failed]
        frame[col] = cast
    return frame, failures


def frame_from_rows(rows: list[dict[str, Any]], schema: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Validated records -> the typed frame the feature pipeline reads (the same casts as ingestion)."""
    return coerce_to_schema(pd.DataFrame(rows, columns=list(schema)), schema)[0]


def probe_record(schema: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A valid record built from the schema alone, used by health checks to prove the model predicts."""
    record: dict[str, Any] = {}
    for col, spec in schema.items():
        kind = spec.get("type", "string")
        if spec.get("allowed"):
            record[col] = spec["allowed"][0]
        elif kind in ("int", "float"):
            lo, hi = (None if v is None else float(v) for v in (spec.get("min"), spec.get("max")))
            value = (lo + hi) / 2 if lo is not None and hi is not None else (lo if lo is not None else hi) or 0
            record[col] = int(math.floor(value)) if kind == "int" else float(value)
        elif kind == "timestamp":
            record[col] = _as_utc(spec.get("min") or "2020-01-01").isoformat()
        elif kind == "date":
            record[col] = str(pd.Timestamp(spec.get("min") or "2020-01-01").date())
        elif kind == "bool":
            record[col] = False
        else:
            record[col] = "probe"
    return record
