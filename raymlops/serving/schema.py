"""The HTTP wire format: predict and feedback requests and responses around a model's record (pure pydantic).

The record itself (one typed field per input column, built from the package's input schema) is
``model.inputs.record_model``; here it is wrapped as ``{"record": ...}`` or ``{"records": [...]}``, and
scores and labels become the typed responses. A bad request gets a 422 that names the record and the
field, before any model code runs.

Example::

    Record = record_model(manifest["input_schema"])
    Request = predict_request_model(Record, max_records=1000)
    Request.model_validate({"records": [{"carrier": "UA", "distance": 1400, ...}]})
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"


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


__all__ = ["FeedbackItem", "FeedbackRequest", "FeedbackResponse", "PredictResponse", "Prediction",
           "predict_request_model", "predictions_for"]
