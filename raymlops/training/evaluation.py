"""Gates: whether a candidate's test metrics pass the config's expressions (pure: numpy).

The metrics themselves are ``model.metrics``; the gate grammar, checked when a config loads, is
``config.parse_gate``.

A gate is a small expression over metric names: ``auc >= 0.70`` (absolute) or
``auc >= champion - 0.005`` (no regression against the current champion on the same test data).
Each gate evaluates to a GateResult that says what was compared, so a failure explains itself.

A champion-relative gate given a ``Comparison`` of its metric (``champion_comparisons``: both models'
scores of the same test rows, a paired bootstrap or DeLong interval of the difference) fails only when
the whole interval breaks it. A difference inside the noise passes: the candidate becomes a challenger,
not the champion, and the canary judges it on live labels; discarding it here would be bad luck.

Example::

    metrics = compute_metrics("classification", y, p)   # model.metrics
    results = evaluate_gates(["auc >= 0.7", "log_loss <= champion + 0.01"], metrics, champion_metrics)
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from raymlops.config import ComparisonConfig, parse_gate
from raymlops.errors import ConfigError
from raymlops.training.comparison import HIGHER_IS_BETTER, Comparison, compare

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    metric: str
    value: float
    threshold: float | None
    detail: str
    comparison: dict[str, Any] | None = None  # the interval a champion-relative gate was judged on


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
