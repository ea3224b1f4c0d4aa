"""A pipeline's model fitted in this process on a frame of raw rows, without Ray: the features fitted on
the training rows (the same pure functions as the data stage), the newest days held out for early
stopping, and the family's own ``fit_local``. It is what a user's cron job would do, so the replay uses
it for its scheduled-retrain baselines; it is also the small-data path for jobs too small for Ray.

Example::

    model = fit_frame(cfg, history, time_column="time_hour", validation_days=7)
    scores = model.predict_frame(next_month)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raymlops.config import PipelineConfig
from raymlops.data.features import FittedFeatures, fit_features, fit_partial
from raymlops.errors import TrainingError
from raymlops.model.contract import ModelSpec, Predictor, get_family


@dataclass(frozen=True)
class LocalModel:
    features: FittedFeatures
    spec: ModelSpec
    predictor: Predictor
    train_rows: int
    seconds: float

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.predictor.predict(self.features.transform_frame(frame)), dtype=np.float64)


def window(frame: pd.DataFrame, time_column: str, days: float | None, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The rows of the latest ``days`` before ``end`` (default: the newest row); all rows when days is None."""
    if days is None:
        return frame
    times = pd.to_datetime(frame[time_column], utc=True)
    end = times.max() if end is None else end
    return frame[(times > end - pd.Timedelta(days=days)).to_numpy()]


def fit_frame(cfg: PipelineConfig, frame: pd.DataFrame, *, time_column: str, validation_days: float,
              threads: int | None = None) -> LocalModel:
    """Fit ``cfg``'s model family on ``frame`` (raw rows with the target), holding out its newest
    ``validation_days`` for early stopping. ``threads`` defaults to every core of this machine. Every row
    counts the same (the replay's cron lines fit what live traffic carries, which has no weight column)."""
    started = time.perf_counter()
    target = cfg.features.target
    frame = frame.drop(columns=[c for c in cfg.data.cleaning.drop_columns if c in frame.columns])
    frame = frame[frame[target].notna()]
    times = pd.to_datetime(frame[time_column], utc=True)
    validation_start = times.max() - pd.Timedelta(days=validation_days)
    train, validation = frame[(times < validation_start).to_numpy()], frame[(times >= validation_start).to_numpy()]
    if len(train) == 0 or len(validation) == 0:
        raise TrainingError(f"cannot fit on {len(frame)} rows: the training or the validation part is empty")
    fitted = fit_features([fit_partial(train, cfg.features, cfg.model.task)], cfg.features, cfg.model.task)
    scaling = {}
    if cfg.model.task == "regression":
        y = pd.to_numeric(train[target]).astype("float64")
        scaling = {"target_mean": float(y.mean()), "target_std": float(y.std(ddof=0)) or 1.0}
    spec = ModelSpec.from_features(fitted, cfg.model.task, **scaling)
    training = cfg.training.model_dump() | {"cpus_per_worker": threads or os.cpu_count() or 1}
    predictor = get_family(cfg.model.family).fit_local(
        spec, cfg.model.model_dump(), training, fitted.transform_frame(train, keep=[target]),
        fitted.transform_frame(validation, keep=[target]), target)
    return LocalModel(features=fitted, spec=spec, predictor=predictor, train_rows=len(train),
                      seconds=time.perf_counter() - started)
