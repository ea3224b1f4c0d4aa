"""What the monitor keeps: sliding windows of inputs, scores, latencies and labelled outcomes (pure).

``MonitorState`` is the monitor actor's state without Ray: replicas' sample batches go in with a per-
replica count of hand-overs that failed, so batches lost while the actor was down are *counted* (the gap).
It answers the questions the policy asks: has the input drifted (``drift``), has the score distribution
drifted (``prediction_drift``), and how good are live predictions per version (``live_quality``).

Example::

    state = MonitorState(cfg.monitoring, task="classification")
    state.set_reference("3", reference_profile, score_reference)
    state.add(samples, replica="ab12", lost=0)
    state.drift()                  # DriftReport over the latest window, or None while it fills
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import MonitoringConfig
from raymlops.monitoring.drift import DriftReport, FeatureDrift, detect_drift, prediction_drift, prediction_values
from raymlops.monitoring.feedback import PredictionLog
from raymlops.model.metrics import compute_metrics


class MonitorState:
    def __init__(self, cfg: MonitoringConfig, task: str, capacity: int | None = None) -> None:
        self.cfg = cfg
        self.task = task
        self.log = PredictionLog(capacity or cfg.keep_predictions)
        self.champion: str | None = None  # the version that answered the latest champion request
        self.rows: deque[dict[str, Any]] = deque(maxlen=cfg.window_rows)
        self.scores: deque[float] = deque(maxlen=cfg.window_rows)
        self.latencies: deque[float] = deque(maxlen=cfg.window_rows)
        self.labelled: dict[str, deque[tuple[float, float, float]]] = {}  # (score, label, predicted_at)
        self.unusable_labels: dict[str, int] = {}  # per version: labels in the window the task cannot use
        self.references: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self.received: Counter[str] = Counter()    # samples received per replica
        self.requests: Counter[tuple[str, str]] = Counter()  # (version, alias) -> sampled requests
        self.lost: dict[str, int] = {}             # replica -> samples it sent that never arrived
        self.rows_since_check = 0

    # ------------------------------------------------------------------------------- intake
    def set_reference(self, version: str, profile: dict[str, Any], scores: dict[str, Any] | None = None) -> None:
        self.references[str(version)] = (profile, scores if scores is not None else profile.get("scores"))

    def add(self, samples: list[dict[str, Any]], replica: str | None = None, lost: int = 0) -> None:
        """Take a batch. ``lost`` is the replica's running count of samples whose hand-over failed
        (it checks each fire-and-forget call afterwards), so the gap survives a monitor restart."""
        if replica is not None:
            self.lost[replica] = max(self.lost.get(replica, 0), lost)
            self.received[replica] += len(samples)
        self.log.add(samples)
        for s in samples:
            self.requests[(s["version"], s["alias"])] += 1
            if s.get("latency_s") is not None:
                self.latencies.append(float(s["latency_s"]))
            if s.get("alias") != "champion":
                continue  # drift is about the champion's traffic
            if s["version"] != self.champion:
                self.champion = s["version"]
                self.scores.clear()  # prediction drift is about one model's scores; inputs stay comparable
            self.scores.extend(prediction_values(s["scores"]).tolist())  # a multiclass row: its predicted class
            for record in s.get("records") or []:
                self.rows.append(record)
                self.rows_since_check += 1
        return lost

    def join(self, feedback: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        labelled, unknown = self.log.join(feedback)
        for row in labelled:
            window = self.labelled.setdefault(row["version"], deque(maxlen=self.cfg.quality_window))
            window.append((row["score"], row["label"], float(row.get("predicted_at") or 0.0)))
        return labelled, unknown

    # ------------------------------------------------------------------------------ answers
    def champion_version(self) -> str | None:
        return self.champion

    def drift(self, version: str | None = None) -> DriftReport | None:
        """Input drift of the latest window against the reference of ``version`` (the champion's)."""
        version = version or self.champion_version()
        if version not in self.references or len(self.rows) < self.cfg.min_window_rows:
            return None
        self.rows_since_check = 0
        d = self.cfg.drift
        return detect_drift(self.references[version][0], pd.DataFrame(list(self.rows)), alpha=d.alpha,
                            correction=d.correction, min_psi=d.min_psi)

    def prediction_drift(self, version: str | None = None) -> FeatureDrift | None:
        version = version or self.champion_version()
        ref = self.references.get(version, (None, None))[1]
        if ref is None or len(self.scores) < self.cfg.min_window_rows:
            return None
        result = prediction_drift(ref, np.fromiter(self.scores, float))
        drifted = result.p_value < self.cfg.drift.alpha and result.psi >= self.cfg.drift.min_psi
        return FeatureDrift(**{**result.to_dict(), "adjusted_p": result.p_value, "drifted": drifted})

    def live_quality(self, version: str) -> tuple[dict[str, float] | None, int]:
        window = self.labelled.get(str(version))
        if not window:
            return None, 0
        scores, labels = np.array([w[0] for w in window], float), np.array([w[1] for w in window], float)
        usable = self._usable_labels(labels, scores)
        if not usable.all():  # labels stored before the route checked them: skipped, and counted
            self.unusable_labels[str(version)] = int((~usable).sum())
            scores, labels = scores[usable], labels[usable]
            if len(labels) == 0:
                return None, 0
        if self.task == "classification" and len(np.unique(labels)) < 2:
            return None, len(labels)  # AUC needs both classes
        return compute_metrics(self.task, labels, scores), len(labels)

    def _usable_labels(self, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        finite = np.isfinite(labels)
        if self.task == "multiclass":  # a class index of the model's probability rows
            return finite & np.isin(labels, np.arange(scores.shape[1] if scores.ndim == 2 else 0, dtype=float))
        return finite & np.isin(labels, (0.0, 1.0)) if self.task == "classification" else finite

    def answers(self, version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, scores, predicted_at) of ``version``'s labelled answers in the window: the rows of its
        own traffic only (no row is answered by two versions, so comparisons between versions are unpaired)."""
        window = self.labelled.get(str(version)) or ()
        labels, scores, at = (np.array([w[i] for w in window], dtype=float) for i in (1, 0, 2))
        usable = self._usable_labels(labels, scores)
        return labels[usable], scores[usable], at[usable]

    @property
    def gap(self) -> int:
        return sum(self.lost.values())

    def latency_quantiles(self) -> dict[str, float]:
        if not self.latencies:
            return {}
        q = np.quantile(np.fromiter(self.latencies, float), [0.5, 0.9, 0.99])
        return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2])}

    def summary(self) -> dict[str, Any]:
        return {"requests": {f"{v}/{a}": n for (v, a), n in self.requests.items()}, "gap": self.gap,
                "window_rows": len(self.rows), "labelled": {v: len(w) for v, w in self.labelled.items()},
                "unusable_labels": dict(self.unusable_labels),
                "latency_s": self.latency_quantiles(), "kept_predictions": len(self.log),
                "references": sorted(self.references, key=int)}
