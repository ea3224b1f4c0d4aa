"""Joining late ground truth to earlier predictions by request id (pure, no Ray).

Replicas hand the monitor a sample of what they answered; users report the true outcome later through
``/v1/feedback``. ``PredictionLog`` keeps the most recent predictions (bounded: the oldest fall out first)
and turns each feedback item into a labelled example that names the version that made the prediction.

Example::

    log = PredictionLog(capacity=100_000)
    log.add([{"request_id": "ab..", "scores": [0.8], "version": "3", "alias": "champion", "time": t}])
    labelled, unknown = log.join([{"request_id": "ab..", "index": 0, "label": 1.0}])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

PREDICTED_AT = "predicted_at"  # the field of a feedback.jsonl line: when the labelled request was answered


class PredictionLog:
    """Recent predictions by request id, with a hard cap on how many are kept."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, samples: list[dict[str, Any]]) -> None:
        for sample in samples:
            self._items[sample["request_id"]] = sample
            self._items.move_to_end(sample["request_id"])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def join(self, feedback: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """(labelled examples, request ids not known); an index beyond the request's records is unknown too."""
        labelled, unknown = [], []
        for item in feedback:
            pred = self._items.get(item["request_id"])
            index = int(item.get("index", 0))
            if pred is None or index >= len(pred["scores"]):
                unknown.append(item["request_id"] if pred is None else f"{item['request_id']}[{index}]")
                continue
            row = {"request_id": item["request_id"], "index": index, "label": float(item["label"]),
                   "score": _score(pred["scores"][index]), "version": pred["version"],
                   "alias": pred["alias"], "predicted_at": pred["time"]}
            records = pred.get("records") or []
            if index < len(records):  # the inputs too: labelled traffic is training data for the next model
                row["record"] = records[index]
            labelled.append(row)
        return labelled, unknown


def _score(value: float | list[float]) -> float | list[float]:
    """A row's score as stored: a float, or a multiclass model's list of class probabilities."""
    return [float(p) for p in value] if isinstance(value, (list, tuple)) else float(value)
