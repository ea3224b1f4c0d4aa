"""How good a model's predictions are: metrics per task and per slice (pure: numpy and scikit-learn).

Training judges its test split with these, the monitor judges live labelled traffic with the same
functions, so a gate and a live-quality alarm read the same numbers.

Example::

    metrics = compute_metrics("classification", y, p)   # {"auc": ..., "log_loss": ..., "rows": ...}
"""

from __future__ import annotations

import math

import numpy as np

from raymlops.config import METRICS

__all__ = ["METRICS", "binary_auc", "calibration_error", "classification_metrics", "compute_metrics",
           "multiclass_metrics", "regression_metrics", "slice_metrics"]


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of 0/1 labels from the ranks of the scores (Mann-Whitney; tied scores count one half), as
    ``sklearn.metrics.roc_auc_score`` gives it, at a fraction of its checks' cost: the MLP loop computes it
    every epoch. NaN unless both classes are present."""
    from scipy.stats import rankdata

    y = np.asarray(y).ravel() > 0.5
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64).ravel())
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: bin-weighted |mean predicted - observed rate| over equal-width bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, accuracy, F1, calibration error (NaN where undefined)."""
    from sklearn import metrics as skm  # here, not at import: sklearn costs a Ray Train worker ~1 s to load
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    both = len(np.unique(y)) == 2
    pred = (p >= threshold).astype(float)
    return {
        "auc": float(skm.roc_auc_score(y, p)) if both else math.nan,
        "pr_auc": float(skm.average_precision_score(y, p)) if both else math.nan,
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "calibration_error": calibration_error(y, p),
        "positive_rate": float(y.mean()) if len(y) else math.nan,
        "rows": float(len(y)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm  # lazily, as above
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else math.nan,
        "rows": float(len(y)),
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Log loss, accuracy, macro F1 and one-vs-rest macro AUC of class probabilities ``proba`` [n, K]
    against class indices ``y``. AUC averages the classes present in ``y`` with at least one row of
    another class beside them (NaN when fewer than two classes are present)."""
    from sklearn import metrics as skm  # lazily, as above
    y = np.asarray(y).astype(np.int64)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2:
        raise ValueError(f"multiclass metrics need class probabilities [rows, classes], got shape {proba.shape}")
    k = proba.shape[1]
    if len(y) == 0:
        return {"log_loss": math.nan, "accuracy": math.nan, "macro_f1": math.nan, "auc": math.nan, "rows": 0.0}
    p = np.clip(proba, 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    aucs = [skm.roc_auc_score(y == c, p[:, c]) for c in present]
    return {
        "log_loss": float(skm.log_loss(y, p, labels=list(range(k)))),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
        "auc": float(np.mean(aucs)) if len(present) >= 2 else math.nan,
        "rows": float(len(y)),
    }


def compute_metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if task == "multiclass":
        return multiclass_metrics(y, pred)
    return classification_metrics(y, pred) if task == "classification" else regression_metrics(y, pred)


def slice_metrics(task: str, y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                  min_rows: int = 30) -> dict[str, dict[str, float]]:
    """Metrics per value of a slice column (values with fewer than ``min_rows`` rows are skipped)."""
    out = {}
    for value in sorted({str(g) for g in groups}):
        mask = np.array([str(g) == value for g in groups])
        if mask.sum() >= min_rows:
            out[value] = compute_metrics(task, y[mask], pred[mask])
    return out
