"""Metrics on held-out data, per-slice metrics, and gates (pure: numpy and scikit-learn).

A gate is a small expression over metric names: ``auc >= 0.70`` (absolute) or
``auc >= champion - 0.005`` (no regression against the current champion on the same test data).
Each gate evaluates to a GateResult that says what was compared, so a failure explains itself.

Example::

    metrics = classification_metrics(y, p)
    results = evaluate_gates(["auc >= 0.7", "log_loss <= champion + 0.01"], metrics, champion_metrics)
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from raymlops.errors import ConfigError

_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==)\s*(champion\s*([+-])\s*)?([0-9.eE+-]+|champion)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


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
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else math.nan,
        "rows": float(len(y)),
    }


def compute_metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
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


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    metric: str
    value: float
    threshold: float | None
    detail: str


def parse_gate(text: str) -> tuple[str, str, bool, str, float]:
    """(metric, op, relative_to_champion, sign, number). Raises ConfigError on a malformed gate."""
    m = _GATE.match(text)
    if not m:
        raise ConfigError(f"evaluation.gates: cannot read gate {text!r}; write e.g. 'auc >= 0.70' or "
                          "'auc >= champion - 0.005'")
    metric, op, rel, sign, number = m.group(1), m.group(2), m.group(3), m.group(4) or "+", m.group(5)
    if number == "champion":
        return metric, op, True, "+", 0.0
    return metric, op, bool(rel), sign, float(number)


def evaluate_gates(gates: list[str], metrics: dict[str, float],
                   champion: dict[str, float] | None = None) -> list[GateResult]:
    """Judge each gate; a champion-relative gate passes when there is no champion yet (said in detail)."""
    results = []
    for gate in gates:
        metric, op, relative, sign, number = parse_gate(gate)
        value = metrics.get(metric)
        if value is None:
            raise ConfigError(f"evaluation.gates: {gate!r} names metric {metric!r}; available: {sorted(metrics)}")
        if relative:
            if not champion or metric not in champion:
                results.append(GateResult(gate, True, metric, value, None, "no champion yet: nothing to regress from"))
                continue
            threshold = champion[metric] + (number if sign == "+" else -number)
            base = f"champion {champion[metric]:.4f} {sign} {number:g} = {threshold:.4f}"
        else:
            threshold, base = number, f"{number:g}"
        ok = not math.isnan(value) and _OPS[op](value, threshold)
        results.append(GateResult(gate, ok, metric, value, threshold,
                                  f"{metric} = {value:.4f} {'meets' if ok else 'fails'} {op} {base}"))
    return results


def failed(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def as_plain(results: list[GateResult]) -> list[dict[str, Any]]:
    return [r.__dict__.copy() for r in results]
