"""HTTP request and response models, generated from a model package's input schema (pure pydantic).

The input schema is the validation section the model was trained under, restricted to the columns the
feature pipeline reads (``packaging.input_schema``). Each column becomes a typed field: bounds become
``ge``/``le``, allowed values become a ``Literal``, non-nullable columns are required, unknown fields are
refused (``extra="forbid"``) and NaN/infinity are refused everywhere. A bad request therefore gets a 422
that names the record and the field, before any model code runs.

Example::

    Record = record_model(manifest["input_schema"])
    Request = predict_request_model(Record, max_records=1000)
    Request.model_validate({"records": [{"carrier": "UA", "distance": 1400, ...}]})
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    ValidationError,
    model_validator,
)

from raymlops.data.validation import coerce_series
from raymlops.errors import ModelPackageError

MAX_STRING = 256
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"


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
    predict_request_model(record, max_records=1)
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


class _PredictRequestBase(BaseModel):
    # "Exactly one of record/records" in the OpenAPI document too, so generated clients and fuzzers know it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["record"]}, {"required": ["records"]}]})

    @model_validator(mode="after")
    def _exactly_one(self) -> Any:
        if (self.record is None) == (self.records is None):  # type: ignore[attr-defined]
            raise ValueError("give exactly one of 'record' (an object) or 'records' (a list of objects)")
        return self

    def rows(self) -> list[dict[str, Any]]:
        one, many = self.record, self.records  # type: ignore[attr-defined]
        return [item.model_dump() for item in ([one] if one is not None else many)]


def predict_request_model(record: type[BaseModel], max_records: int) -> type[BaseModel]:
    """``{"record": {...}}`` or ``{"records": [{...}, ...]}`` (1..max_records)."""
    return create_model(
        "PredictRequest", __base__=_PredictRequestBase,
        # Optional but never null (null is refused, as the document says): give one key, not both.
        record=(record, Field(None, description="One record to score.")),
        records=(list[record], Field(None, min_length=1, max_length=max_records,
                                     description=f"Up to {max_records} records to score.")))


class Prediction(BaseModel):
    score: float = Field(description="Probability of the positive class (classification), of the predicted class "
                                     "(multiclass), or the predicted value (regression).")
    label: int | None = Field(None, description="Predicted class: 1 when score >= 0.5 (classification), the class's "
                                                "index in the model's class names (multiclass).")
    class_name: str | None = Field(None, description="The predicted class's name, for a model with named classes "
                                                     "(multiclass, or a binary target such as yes/no).")
    probabilities: dict[str, float] | None = Field(None, description="Probability per class, by class name (\"0\"/"
                                                                     "\"1\" for a binary model labelled 0/1); "
                                                                     "not for regression.")


class PredictResponse(BaseModel):
    request_id: str = Field(description="Quote it in /v1/feedback to report the true outcome.")
    model: str
    version: str
    alias: str = Field(description="Which alias answered: champion, or challenger under a canary.")
    predictions: list[Prediction]


def predictions_for(task: str, scores: list[float] | list[list[float]], classes: list[str] | None = None) -> list[Prediction]:
    """The response's predictions; a multiclass model's ``scores`` are rows of class probabilities."""
    if task == "multiclass":
        out = []
        for row in scores:
            best = max(range(len(row)), key=row.__getitem__)
            out.append(Prediction(score=row[best], label=best, class_name=classes[best],
                                  probabilities=dict(zip(classes, row))))
        return out
    if task == "classification":
        negative, positive = classes or ("0", "1")
        return [Prediction(score=s, label=int(s >= 0.5), class_name=(classes[int(s >= 0.5)] if classes else None),
                           probabilities={negative: 1.0 - s, positive: s}) for s in scores]
    return [Prediction(score=s) for s in scores]


class FeedbackItem(BaseModel):
    # Strict: JSON types as documented (true is not the index 1; "1" is not the label 1).
    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="The request_id of a prediction.")
    index: int = Field(0, ge=0, description="Which record of that request (0 for a single record).")
    label: Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The true outcome: for a classifier the class's name (a model with named classes) or its "
                    "index (0/1 for binary); for regression the value.")


def feedback_labels(task: str, items: list[FeedbackItem], classes: list[str] | None = None
                    ) -> tuple[list[float], tuple[int, str] | None]:
    """Each item's label as the number the monitor keeps (a class name becomes its index), or (index,
    why) of the first item whose label cannot be the task's outcome: a class the model does not have, or
    a name the model does not know (a model labelled 0/1 and a regression take numbers only)."""
    classes = list(classes or [])
    index = {name: i for i, name in enumerate(classes)}
    count = len(classes) or (2 if task == "classification" else 0)
    if task == "regression":
        expected = "a number (the value)"
    elif classes:
        expected = f"a class name, one of {classes}, or its index, 0 to {count - 1}"
    elif task == "classification":
        expected = "0 or 1"
    else:
        expected = f"the class's index, 0 to {count - 1}"
    labels: list[float] = []
    for i, item in enumerate(items):
        label = item.label
        if isinstance(label, str) and label in index:
            labels.append(float(index[label]))
            continue
        if isinstance(label, str) or (task != "regression" and not (label.is_integer() and 0 <= label < count)):
            shown = repr(label) if isinstance(label, str) else f"{label:g}"
            return labels, (i, f"items[{i}].label: {shown} is not a class of this {task} model; a label is "
                               f"{expected} (request_id {item.request_id}, index {item.index})")
        labels.append(float(label))
    return labels, None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[FeedbackItem] = Field(min_length=1, max_length=10_000)

    @field_validator("items")
    @classmethod
    def _no_duplicates(cls, items: list[FeedbackItem]) -> list[FeedbackItem]:
        keys = [(i.request_id, i.index) for i in items]
        if len(set(keys)) != len(keys):
            raise ValueError("the same (request_id, index) appears twice")
        return items


class FeedbackResponse(BaseModel):
    accepted: int
    unknown: list[str] = Field(description="request ids the service has no record of (too old, or never issued).")


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


__all__ = ["FeedbackItem", "FeedbackRequest", "FeedbackResponse", "PredictResponse", "Prediction",
           "check_servable", "coerce_to_schema", "frame_from_rows", "predict_request_model", "predictions_for", "probe_record", "record_model"]
