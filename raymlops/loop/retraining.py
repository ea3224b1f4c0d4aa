"""What a retrain learns from, and the pipeline config that runs it (pure: pandas and pydantic, no Ray).

A retrain sees the world as it is now: the most recent ``retraining.window_days`` of data, made of the
rows the champion was trained on (its snapshot, within the window) and the live traffic labelled since
through ``/v1/feedback`` (the monitor keeps each labelled request's inputs in ``feedback.jsonl``). The
newest ``test_days`` of the window are the test split, so the gates judge the candidate against the
champion on the most recent labelled data; the ``validation_days`` before them drive early stopping.

The window is written once as Parquet and read by the ordinary data stage through a derived config:
validation, snapshot (with its fingerprint: the new version's lineage names this exact window),
features, training, gates and registration are the same code as every other run.

With ``retraining.candidate_windows`` a retrain fits one candidate per window (``window_days_to_fit``),
all ending at the same newest row, so their validation and test days are the same rows and none of them
trains on those: the lowest validation loss (``best_window``) chooses which one the gates judge.

Example::

    traffic = labelled_traffic(feedback_lines, schema, target="delayed", task="classification")
    table, end = retraining_window(history, traffic, "time_hour", days=90)
    derived = retraining_config(cfg, "/work/loop/window-2013-07-31.parquet", end)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import FileSourceConfig, PipelineConfig, RetrainingConfig, TimeSplitConfig
from raymlops.errors import ConfigError
from raymlops.monitoring.feedback import PREDICTED_AT
from raymlops.model.inputs import coerce_to_schema


def labelled_traffic(lines: Iterable[str], schema: dict[str, dict[str, Any]], target: str, task: str,
                     time_column: str | None = None, classes: list[str] | None = None) -> pd.DataFrame:
    """Labelled requests (inputs + label) from the monitor's ``feedback.jsonl`` lines, typed by the schema.

    A request labelled twice keeps its latest label. When the time column is not a model input, the
    time the prediction was made stands in for it. With ``classes`` (a model's class names) the labels,
    kept as class indices, become the names again; a label that is no class index is dropped.
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash of the monitor: the rest of the log still counts
        if not isinstance(item, dict) or "record" not in item:
            continue  # labelled before inputs were kept, or a request row beyond the sampled ones
        rows[(item["request_id"], int(item.get("index", 0)))] = {
            **item["record"], target: item["label"], PREDICTED_AT: item.get("predicted_at")}
    columns = [*schema, target]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(list(rows.values()))
    typed = coerce_to_schema(frame[list(schema)], schema)[0]
    if classes:
        index = pd.to_numeric(frame[target], errors="coerce")
        known = index.isin(range(len(classes))).to_numpy()
        frame, typed = frame[known], typed[known]
        typed[target] = np.asarray(classes, dtype=object)[index[known].astype("int64").to_numpy()]
    elif task == "classification":
        typed[target] = frame[target].round().astype("int64")
    else:
        typed[target] = frame[target].astype(float)
    if time_column and time_column not in schema:
        typed[time_column] = pd.to_datetime(frame[PREDICTED_AT], unit="s", utc=True)
    return typed


def retraining_window(history: pd.DataFrame | None, traffic: pd.DataFrame, time_column: str | None,
                      days: float | None, until: pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """History and traffic together, cut to the latest ``days`` before the newest row; (table, end).

    ``until`` drops rows timed after it: what is known at the loop's clock. Live, that is every row; in a
    replay on the stream's clock, the champion's snapshot may hold rows the stream has not reached yet
    (its test month is also the first month replayed), and a retrain must not learn from them."""
    parts = [f for f in (history, traffic) if f is not None and len(f)]
    if not parts:
        return traffic.iloc[0:0], None
    cols = list(parts[-1].columns)
    # Traffic repeats rows the champion already knew (its test month, replays): count each row once.
    table = pd.concat([p[[c for c in cols if c in p.columns]] for p in parts], ignore_index=True).drop_duplicates(
        ignore_index=True)
    if not time_column:
        return table, None
    times = pd.to_datetime(table[time_column], utc=True)
    if until is not None:
        known = (times <= until).to_numpy()
        table, times = table[known].reset_index(drop=True), times[known].reset_index(drop=True)
        if not len(table):
            return table, None
    end = times.max()
    return cut_window(table, time_column, end, days), end


RECENCY_WEIGHT = "raymlops_recency_weight"  # the window's weight column under retraining.half_life_days


def recency_weights(times: pd.Series, end: pd.Timestamp, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half_life_days) per row, its age in days before ``end`` (a row at ``end`` weighs 1)."""
    age_days = (end - pd.to_datetime(times, utc=True)).dt.total_seconds().to_numpy() / 86_400.0
    return np.power(0.5, np.maximum(age_days, 0.0) / half_life_days)


def with_recency_weights(table: pd.DataFrame, time_column: str, end: pd.Timestamp,
                         half_life_days: float) -> pd.DataFrame:
    """``table`` with its rows' recency weights as the ``RECENCY_WEIGHT`` column."""
    return table.assign(**{RECENCY_WEIGHT: recency_weights(table[time_column], end, half_life_days)})


def window_days_to_fit(r: RetrainingConfig) -> list[float | None]:
    """The windows a retrain fits a candidate on: ``window_days`` first, then ``candidate_windows`` (each once)."""
    days: list[float | None] = []
    for d in (r.window_days, *r.candidate_windows):
        if d not in days:
            days.append(d)
    return days


def window_label(days: float | None) -> str:
    """A window's name in run names, file names and decisions: ``all`` or ``90d``."""
    return "all" if days is None else f"{days:g}d"


def cut_window(table: pd.DataFrame, time_column: str | None, end: pd.Timestamp | None,
               days: float | None) -> pd.DataFrame:
    """The rows of ``table`` in the latest ``days`` up to ``end`` (all of them for ``days=None``)."""
    if days is None or not time_column or end is None:
        return table
    keep = pd.to_datetime(table[time_column], utc=True) > end - pd.Timedelta(days=days)
    return table[keep.to_numpy()].reset_index(drop=True)


@dataclass(frozen=True)
class WindowFit:
    """One window's candidate in a retrain: its rows and how it did on the shared validation days."""

    days: float | None
    rows: int
    val_loss: float
    seconds: float

    @property
    def label(self) -> str:
        return window_label(self.days)


def best_window(fits: list[WindowFit]) -> WindowFit:
    """The candidate with the lowest validation loss; a tie keeps the earlier one (``window_days`` first).
    A NaN loss (a fit that never validated) never wins while another has a number."""
    if not fits:
        raise ValueError("no window was fitted")
    return min(fits, key=lambda f: math.inf if math.isnan(f.val_loss) else f.val_loss)


def split_starts(r: RetrainingConfig, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(validation_start, test_start) of a retrain whose window ends at ``end``: the newest ``test_days``
    are its test split, the ``validation_days`` before them its early stopping."""
    test_start = end - pd.Timedelta(days=r.test_days)
    return test_start - pd.Timedelta(days=r.validation_days), test_start


def retraining_config(cfg: PipelineConfig, table_path: str | Path, end: pd.Timestamp | None) -> PipelineConfig:
    """The pipeline config of a retrain: the window as its only source, a split relative to ``end``,
    expectations kept for the columns the window has, and the retraining resource overrides."""
    r = cfg.retraining
    data = cfg.data.model_copy(update={
        "sources": [FileSourceConfig(type="parquet", name="window", path=str(Path(table_path).resolve()))],
        "base": None, "joins": [], "cleaning": cfg.data.cleaning.model_copy(update={"drop_columns": []}),
    })
    if isinstance(cfg.data.split, TimeSplitConfig):
        if end is None:
            raise ConfigError(f"retraining with a time split needs rows with {cfg.data.split.column!r}")
        validation_start, test_start = split_starts(r, end)
        data = data.model_copy(update={"split": cfg.data.split.model_copy(update={
            "validation_start": validation_start.isoformat(), "test_start": test_start.isoformat()})})
    validation = cfg.validation.model_copy(update={
        "require_declared_columns": False,
        "row_count": cfg.validation.row_count.model_copy(update={"min": r.min_rows, "max": None}),
    })
    # The user's weight column is not on live traffic; a recency-weighted retrain weighs by age instead.
    features = cfg.features.model_copy(update={"weight_column": RECENCY_WEIGHT if r.half_life_days else None})
    training = cfg.training.model_copy(update={k: v for k, v in {
        "num_workers": r.num_workers, "cpus_per_worker": r.cpus_per_worker, "epochs": r.epochs,
        "refit": r.refit or None}.items() if v is not None})
    return cfg.model_copy(update={"data": data, "validation": validation, "training": training, "features": features,
                                  "tuning": cfg.tuning.model_copy(update={"enabled": r.tune})})


__all__ = ["RECENCY_WEIGHT", "WindowFit", "best_window", "cut_window", "labelled_traffic", "recency_weights",
           "retraining_config", "retraining_window", "split_starts", "window_days_to_fit", "window_label",
           "with_recency_weights"]
