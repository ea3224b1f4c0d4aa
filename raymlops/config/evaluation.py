"""``evaluation``: the gates a version must pass, and the gate grammar checked at load."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from raymlops.config.base import StrictModel
from raymlops.errors import ConfigError


class ComparisonConfig(StrictModel):
    """How a model is judged against the champion: on an interval of the difference, not on two point values.

    One AUC on ~6,500 rows has a standard error near 0.007, so ``auc >= champion - 0.005`` on point
    values is decided by noise. With this on, a champion-relative gate fails only when the whole interval
    of (candidate - champion) breaks it; the loop promotes, discards or rolls back only when the interval
    says so, and waits for more labels (up to retraining.max_wait_s) while it straddles the threshold.
    """

    enabled: bool = Field(True, description="Judge champion-relative gates on a confidence interval of the "
                          "difference; False: compare the point values, as before.")
    test: Literal["bootstrap", "delong"] = Field(
        "bootstrap", description="bootstrap: resample rows (any of auc, log_loss, accuracy, f1, rmse, mae, mse, r2); "
        "delong: DeLong's test for auc (other metrics still bootstrap).")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level: intervals cover 1 - alpha.")
    resamples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    min_samples: int = Field(
        200, ge=10, description="Fewest labelled rows for an interval; a test split below it falls back to point "
        "values (the gate's detail says so).")
    seed: int = Field(0, description="Seed of the bootstrap: the same rows give the same verdict.")
    group_by_day: bool = Field(
        True, description="With a time split, resample whole days of its column rather than rows (rows of one day "
        "share its weather and delays, so they are not independent and a row bootstrap is overconfident). "
        "Used by the gates on the test split and by the loop's canary and rollback verdicts.")


class EvaluationConfig(StrictModel):
    gates: list[str] = Field(default_factory=list, description="Conditions such as 'auc >= 0.70'.")
    slices: list[str] = Field(default_factory=list, description="Columns to report metrics per value of.")
    comparison: ComparisonConfig = Field(
        default_factory=ComparisonConfig, description="Statistics of champion-relative gates and of the loop's verdicts.")


# Gates: the expressions `evaluation.gates` holds, read here so a config with a bad one fails to load.
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==)\s*(champion\s*([+-])\s*)?([0-9.eE+-]+|champion)\s*$")


# What compute_metrics gives per task: the names a gate may use (checked when the config is loaded).
METRICS = {"classification": ("auc", "pr_auc", "log_loss", "accuracy", "f1", "calibration_error", "positive_rate",
                              "rows"),
           "regression": ("rmse", "mae", "r2", "rows"),
           "multiclass": ("log_loss", "accuracy", "macro_f1", "auc", "rows")}


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
