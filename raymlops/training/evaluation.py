"""Metrics on held-out data, per-slice metrics, and gates (pure: numpy and scikit-learn).

A gate is a small expression over metric names: ``auc >= 0.70`` (absolute) or
``auc >= champion - 0.005`` (no regression against the current champion on the same test data).
Each gate evaluates to a GateResult that says what was compared, so a failure explains itself.

A champion-relative gate given a ``Comparison`` of its metric (``champion_comparisons``: both models'
scores of the same test rows, a paired bootstrap or DeLong interval of the difference) fails only when
the whole interval breaks it. A difference inside the noise passes: the candidate becomes a challenger,
not the champion, and the canary judges it on live labels; discarding it here would be bad luck.

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

from raymlops.config import ComparisonConfig
from raymlops.errors import ConfigError
from raymlops.training.comparison import HIGHER_IS_BETTER, Comparison, compare

_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==)\s*(champion\s*([+-])\s*)?([0-9.eE+-]+|champion)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
# What compute_metrics gives per task: the names a gate may use (checked when the config is loaded).
METRICS = {"classification": ("auc", "pr_auc", "log_loss", "accuracy", "f1", "calibration_error", "positive_rate",
                              "rows"),
           "regression": ("rmse", "mae", "r2", "rows"),
           "multiclass": ("log_loss", "accuracy", "macro_f1", "auc", "rows")}


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


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Log loss, accuracy, macro F1 and one-vs-rest macro AUC of class probabilities ``proba`` [n, K]
    against class indices ``y``. AUC averages the classes present in ``y`` with at least one row of
    another class beside them (NaN when fewer than two classes are present)."""
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


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    metric: str
    value: float
    threshold: float | None
    detail: str
    comparison: dict[str, Any] | None = None  # the interval a champion-relative gate was judged on


def parse_gate(text: str) -> tuple[str, str, bool, str, float]:
    """(metric, op, relative_to_champion, sign, number). Raises ConfigError on a malformed gate."""
    m = _GATE.match(text)
    if not m:
        raise ConfigError(f"evaluation.gates: cannot read gate {text!r}; write e.g. 'auc >= 0.70' or "
                          "'auc >= champion - 0.005'")
    metric, op, rel, sign, number = m.group(1), m.group(2), m.group(3), m.group(4) or "+", m.group(5)
    if number == "champion":
        return metric, op, True, "+", 0.0
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"evaluation.gates: cannot read the number {number!r} in gate {text!r}; write e.g. "
                          "'auc >= 0.70' or 'auc >= champion - 0.005'") from None
    return metric, op, bool(rel), sign, value


def check_gate(text: str, task: str) -> None:
    """A gate that can be read and names a metric the task's models report; ConfigError otherwise."""
    import difflib

    metric = parse_gate(text)[0]
    known = METRICS[task]
    if metric not in known:
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"evaluation.gates: gate {text!r} names metric {metric!r}, which a {task} model does not "
                          f"report; {hint}its metrics: {', '.join(known)}")


def evaluate_gates(gates: list[str], metrics: dict[str, float], champion: dict[str, float] | None = None,
                   comparisons: dict[str, Comparison] | None = None) -> list[GateResult]:
    """Judge each gate; a champion-relative gate passes when there is no champion yet (said in detail), and
    is judged on the interval in ``comparisons[metric]`` when there is one (see the module docstring)."""
    results = []
    for gate in gates:
        metric, op, relative, sign, number = parse_gate(gate)
        value, c = metrics.get(metric), None
        if value is None:
            raise ConfigError(f"evaluation.gates: {gate!r} names metric {metric!r}; available: {sorted(metrics)}")
        if relative:
            if not champion or metric not in champion:
                results.append(GateResult(gate, True, metric, value, None, "no champion yet: nothing to regress from"))
                continue
            offset = number if sign == "+" else -number
            threshold = champion[metric] + offset
            c = (comparisons or {}).get(metric)
            if c is not None and c.verdict != "wait":
                results.append(judge_gate(gate, metric, op, offset, value, threshold, c, f"{sign} {number:g}"))
                continue
            base = f"champion {champion[metric]:.4f} {sign} {number:g} = {threshold:.4f}"
            if c is not None:
                base += f" (point values: {c.n} rows < {c.min_samples}, too few for an interval)"
        else:
            threshold, base = number, f"{number:g}"
        ok = not math.isnan(value) and _OPS[op](value, threshold)
        results.append(GateResult(gate, ok, metric, value, threshold,
                                  f"{metric} = {value:.4f} {'meets' if ok else 'fails'} {op} {base}",
                                  c.to_dict() if c is not None else None))
    return results


def judge_gate(gate: str, metric: str, op: str, offset: float, value: float, threshold: float,
               c: Comparison, margin: str = "") -> GateResult:
    """A champion-relative gate on the interval of the difference: fails only when all of it breaks the gate."""
    verdict = c.judge(op, offset)
    ok = verdict != "fails"
    said = {"meets": "meets", "fails": "fails", "unsure": "inside the noise of"}[verdict]
    margin = margin or f"{'-' if offset < 0 else '+'} {abs(offset):g}"
    detail = (f"{metric} = {value:.4f} {said} {op} champion {margin} = {threshold:.4f}: {c.describe()}"
              + ("; passes on the benefit of the doubt" if verdict == "unsure" else ""))
    return GateResult(gate, ok, metric, value, threshold, detail, {**c.to_dict(), "gate_verdict": verdict})


def champion_comparisons(gates: list[str], task: str, y: np.ndarray, pred: np.ndarray, champion_pred: np.ndarray,
                         cfg: ComparisonConfig, groups: np.ndarray | None = None) -> dict[str, Comparison]:
    """Paired comparisons (candidate - champion, scored on the same rows) for the metrics that
    champion-relative gates name; metrics without an interval (e.g. pr_auc) are left to point values."""
    if not cfg.enabled or task == "multiclass":  # the intervals are of binary scores; multiclass: point values
        return {}
    names = {parse_gate(g)[0] for g in gates if parse_gate(g)[2]}
    if task == "classification" and len(np.unique(y)) < 2:
        names.discard("auc")
    return {m: compare(m, y, champion_pred, pred, alpha=cfg.alpha, min_samples=cfg.min_samples,
                       resamples=cfg.resamples, test=cfg.test, seed=cfg.seed, groups=groups)
            for m in sorted(names) if m in HIGHER_IS_BETTER}


def failed(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def as_plain(results: list[GateResult]) -> list[dict[str, Any]]:
    return [r.__dict__.copy() for r in results]
