"""When to retrain, promote a challenger or roll back a champion (pure: evidence in, decision out).

Every function returns a ``Decision`` carrying the action, the reasons for it, what blocked it (cool-down,
daily cap, too few samples) and the evidence it was judged on, so the audit log can say *why* for every
decision, taken or not. Quality comparisons reuse the evaluation gates ("auc >= champion - 0.01"), with
live metrics over labelled traffic in place of test-split metrics.

Given a ``Comparison`` of the gate's metric (the loop builds a paired one: both versions scored on the
same labelled traffic, ``monitoring/shadow.py``), the canary and the rollback
act only when the interval of the difference settles the gate; while it straddles the threshold they
wait for more labels, up to ``max_wait_s``, after which the champion of the time stays (or, with
``after_wait: challenger``, a challenger not shown worse takes over).

Example::

    d = retrain_decision(cfg.retraining, history, Evidence(now, rows=2000, drifted=["temp", "visib"]))
    d.action                      # "retrain"
    d.reasons                     # ["2 features drifted (temp, visib) >= 2"]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from raymlops.config import MonitoringConfig, RetrainingConfig
from raymlops.training.comparison import Comparison
from raymlops.training.evaluation import evaluate_gates, parse_gate

DAY_S = 86_400.0


@dataclass(frozen=True)
class Evidence:
    """What the monitor saw in the latest window."""

    now: float
    rows: int = 0
    drifted: list[str] = field(default_factory=list)
    prediction_drift: bool = False
    live: dict[str, float] | None = None  # live quality of the champion over labelled traffic
    labelled: int = 0
    quality_drop: str | None = None  # why the champion's live quality is below its own test quality, if it is


@dataclass(frozen=True)
class Decision:
    kind: str       # retrain | canary | rollback
    action: str     # retrain/hold, promote/discard/wait, rollback/keep/wait
    reasons: list[str]
    blocked_by: list[str]
    evidence: dict[str, Any]
    at: float = field(default_factory=time.time)

    @property
    def taken(self) -> bool:
        return self.action in ("retrain", "promote", "discard", "rollback")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_decision(cfg: RetrainingConfig, monitoring: MonitoringConfig, retrains_at: list[float],
                     evidence: Evidence, last_scheduled_at: float | None = None) -> Decision:
    """Retrain on enough drift, on prediction drift, on live quality below the floor, or on schedule,
    unless the window is too small, the cool-down runs, or today's cap is reached."""
    reasons, blocked, drift = [], [], []
    ev = asdict(evidence)
    if evidence.rows >= monitoring.min_window_rows:
        if len(evidence.drifted) >= cfg.min_drifted_features:
            drift.append(f"{len(evidence.drifted)} features drifted ({', '.join(evidence.drifted)}) "
                         f">= {cfg.min_drifted_features}")
        if cfg.on_prediction_drift and evidence.prediction_drift:
            drift.append("the score distribution drifted")
    labels = evidence.labelled >= monitoring.min_window_rows
    if cfg.drift_trigger == "always" or not labels:
        reasons += drift
    elif drift:  # with labels the quality decides: drift (seasons change the weather) is context only
        ev["drift_noted"] = f"{'; '.join(drift)}: not a trigger while the champion has {evidence.labelled} " \
                            f"labelled answers (retraining.drift_trigger {cfg.drift_trigger!r})"
    if evidence.quality_drop:
        reasons.append(evidence.quality_drop)
    if cfg.quality_floor and evidence.live and evidence.labelled >= monitoring.min_window_rows:
        (gate,) = evaluate_gates([cfg.quality_floor], evidence.live)
        if not gate.passed:
            reasons.append(f"live quality breaks {cfg.quality_floor!r}: {gate.detail}")
    if cfg.every_s is not None:
        since = last_scheduled_at if last_scheduled_at is not None else (max(retrains_at) if retrains_at else None)
        if since is None or evidence.now - since >= cfg.every_s:
            reasons.append(f"scheduled every {cfg.every_s:g} s")
    if not reasons and evidence.rows < monitoring.min_window_rows:
        blocked.append(f"window has {evidence.rows} rows < {monitoring.min_window_rows}")
    if reasons:
        if retrains_at and evidence.now - max(retrains_at) < cfg.cooldown_s:
            blocked.append(f"cool-down: last retrain {evidence.now - max(retrains_at):.0f} s ago < {cfg.cooldown_s:g} s")
        today = [t for t in retrains_at if evidence.now - t < DAY_S]
        if len(today) >= cfg.max_per_day:
            blocked.append(f"cap: {len(today)} retrains in the last 24 h >= {cfg.max_per_day}")
    action = "retrain" if reasons and not blocked else "hold"
    return Decision("retrain", action, reasons, blocked, ev, at=evidence.now)


def gate_metric(gate: str) -> str:
    return parse_gate(gate)[0]


def _judged(gate: str, champion_live: dict[str, float] | None, live: dict[str, float],
            comparison: Comparison | None) -> tuple[str, str, dict[str, Any] | None]:
    """(meets | fails | unsure, what was compared, the comparison as recorded) for a champion-relative gate."""
    comparisons = {comparison.metric: comparison} if comparison is not None else None
    (result,) = evaluate_gates([gate], live, champion_live, comparisons)
    verdict = (result.comparison or {}).get("gate_verdict") or ("meets" if result.passed else "fails")
    return verdict, f"{gate!r}: {result.detail}", result.comparison


def best_earlier_champion(gate: str, min_samples: int,
                          judged: dict[str, tuple[dict[str, float] | None, dict[str, float] | None, int,
                                                  Comparison | None]]) -> tuple[str | None, list[str]]:
    """The earlier champion to canary again instead of a new fit, or None; and what each one scored.

    ``judged``: version -> (champion's live quality, its live quality, labelled answers, the paired
    comparison of it against the champion on those answers). A version qualifies only where the paired
    statistics are on, it has ``min_samples`` answers, and the whole interval passes ``gate``; of those,
    the largest estimated gain wins. Inside the noise nothing is re-used (a fit happens as usual).
    """
    said, best, best_gain = [], None, -float("inf")
    for version, (champion_live, live, samples, comparison) in judged.items():
        if comparison is None or not live or samples < min_samples or comparison.verdict == "wait":
            said.append(f"v{version}: {samples} labelled answers, not judged (needs {min_samples}, paired)")
            continue
        verdict, detail, _ = _judged(gate, champion_live, live, comparison)
        said.append(f"v{version}: {detail} ({verdict})")
        if verdict == "meets" and comparison.estimate > best_gain:
            best, best_gain = version, comparison.estimate
    return best, said


def _waited(reason: str, waited_s: float, max_wait_s: float) -> list[str]:
    return [f"{reason}; waited {waited_s:.0f} s of retraining.max_wait_s {max_wait_s:g} s for more labels"]


def canary_decision(cfg: RetrainingConfig, champion_live: dict[str, float] | None,
                    challenger_live: dict[str, float] | None, challenger_samples: int, now: float,
                    comparison: Comparison | None = None, waited_s: float = 0.0) -> Decision:
    """Promote the challenger when its live quality passes ``promote_gate`` against the champion on
    enough labelled answers; discard it when it fails; wait for samples otherwise. With a ``comparison``
    the interval decides: inside the noise, wait up to ``max_wait_s``, then keep the champion (discard)."""
    ev = {"champion": champion_live, "challenger": challenger_live, "challenger_samples": challenger_samples}
    if comparison is not None:
        ev["comparison"] = comparison.to_dict()
    if challenger_samples < cfg.canary_min_samples or not challenger_live:
        return Decision("canary", "wait", [], [f"{challenger_samples} labelled answers since the canary began "
                                               f"< {cfg.canary_min_samples}"], ev, at=now)
    if comparison is not None and comparison.verdict == "wait":  # e.g. few champion answers alongside the canary
        return Decision("canary", "wait", [], [comparison.describe()], ev, at=now)
    verdict, said, _ = _judged(cfg.promote_gate, champion_live, challenger_live, comparison)
    if verdict == "unsure":
        if waited_s < cfg.max_wait_s:
            return Decision("canary", "wait", [], _waited(said, waited_s, cfg.max_wait_s), ev, at=now)
        if cfg.after_wait == "challenger":
            return Decision("canary", "promote", [f"{said}; still inside the noise after {waited_s:.0f} s "
                                                  f">= retraining.max_wait_s: the challenger, not shown worse and "
                                                  f"trained on newer data, takes over (retraining.after_wait)"],
                            [], ev, at=now)
        return Decision("canary", "discard", [f"{said}; still inside the noise after {waited_s:.0f} s "
                                              f">= retraining.max_wait_s: the champion stays"], [], ev, at=now)
    return Decision("canary", "promote" if verdict == "meets" else "discard", [said], [], ev, at=now)


def rollback_decision(cfg: RetrainingConfig, new_live: dict[str, float] | None,
                      previous_live: dict[str, float] | None, samples: int, min_samples: int, now: float,
                      comparison: Comparison | None = None, waited_s: float = 0.0) -> Decision:
    """Roll a new champion back when its live quality breaks ``rollback_gate`` against the one it replaced.
    With a ``comparison`` only when the whole interval breaks it; inside the noise, wait up to
    ``max_wait_s``, then keep it (no evidence that it lost quality)."""
    ev = {"champion": new_live, "previous": previous_live, "samples": samples}
    if comparison is not None:
        ev["comparison"] = comparison.to_dict()
    blocked = []
    if samples < min_samples or not new_live:
        blocked.append(f"{samples} labelled answers < {min_samples}")
    if not previous_live:
        blocked.append("no live quality of the champion it replaced")
    if not blocked and comparison is not None and comparison.verdict == "wait":
        blocked.append(comparison.describe())
    if blocked:
        return Decision("rollback", "wait", [], blocked, ev, at=now)
    verdict, said, _ = _judged(cfg.rollback_gate, previous_live, new_live, comparison)
    if verdict == "unsure":
        if waited_s < cfg.max_wait_s:
            return Decision("rollback", "wait", [], _waited(said, waited_s, cfg.max_wait_s), ev, at=now)
        return Decision("rollback", "keep", [f"{said}; still inside the noise after {waited_s:.0f} s "
                                             f">= retraining.max_wait_s: no evidence it lost quality"], [], ev, at=now)
    return Decision("rollback", "keep" if verdict == "meets" else "rollback", [said], [], ev, at=now)
