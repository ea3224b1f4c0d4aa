"""The monitoring actor: one per served model, fed by replicas, publishing Prometheus metrics.

Replicas buffer samples of their answers (inputs, scores, latency, version) and hand them over every
0.25 s with fire-and-forget calls, so a slow or dead monitor never slows or fails a request. The actor
is named, detached and restarted by Ray when it dies; each replica numbers what it sent, so samples lost
while the monitor was down are counted (``raymlops_monitor_lost_samples``), not silently dropped: each
replica checks its earlier hand-overs and reports how many samples failed to arrive.

Feedback is joined here by request id and appended to ``<workdir>/monitoring/<model>/feedback.jsonl``;
reference profiles are kept under ``references/`` beside it so a restarted monitor judges drift at once,
and sampled answers in ``predictions.jsonl`` (the latest ``keep_predictions``) so labels for answers given
before a restart still join.
Metrics are served by ``prometheus-client`` on ``monitoring.metrics_host:metrics_port`` (127.0.0.1:9108
by default; the scrape target in ``cluster/prometheus/prometheus.yml``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray

from raymlops.config import MonitoringConfig
from raymlops.monitoring import retention
from raymlops.monitoring.windows import MonitorState
from raymlops.workspace import append_lines, write_json_atomic

NAMESPACE = "raymlops"
log = logging.getLogger(__name__)


class _Metrics:
    """The Prometheus series of one model, on their own registry and HTTP endpoint."""

    def __init__(self, model: str, host: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.model = model
        self.registry = r = CollectorRegistry()
        self.requests = Counter("raymlops_requests", "Sampled requests answered", ["model", "version", "alias"], registry=r)
        self.latency = Histogram("raymlops_request_latency_seconds", "In-replica latency of sampled requests",
                                 ["model"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.psi = Gauge("raymlops_feature_psi", "PSI of the latest window per feature", ["model", "feature"], registry=r)
        self.p_value = Gauge("raymlops_feature_drift_p_value", "Adjusted p-value per feature", ["model", "feature"], registry=r)
        self.drifted = Gauge("raymlops_feature_drifted", "1 when the feature drifted in the latest window",
                             ["model", "feature"], registry=r)
        self.drifted_count = Gauge("raymlops_drifted_features", "Features drifted in the latest window", ["model"], registry=r)
        self.score_mean = Gauge("raymlops_prediction_mean", "Mean score of the latest window", ["model"], registry=r)
        self.prediction_psi = Gauge("raymlops_prediction_psi", "PSI of the champion's scores against its training "
                                    "scores", ["model"], registry=r)
        self.quality = Gauge("raymlops_live_quality", "Live quality over labelled traffic", ["model", "version", "metric"],
                             registry=r)
        self.feedback = Counter("raymlops_feedback", "Labels joined to predictions", ["model"], registry=r)
        self.lost = Gauge("raymlops_monitor_lost_samples", "Samples sent by replicas that never arrived", ["model"], registry=r)
        self.events = Counter("raymlops_events", "Loop decisions taken", ["model", "kind", "action"], registry=r)
        self.latency_slo = Gauge("raymlops_latency_slo_seconds", "p99 latency the service is sized to meet "
                                 "(monitoring.latency_slo_ms)", ["model"], registry=r)
        self.version = Gauge("raymlops_model_version", "Version serving per alias (value is the version)",
                             ["model", "alias"], registry=r)
        self.endpoint: str | None = None
        try:
            start_http_server(port, addr=host, registry=r)
            self.endpoint = f"http://{host}:{port}/metrics"
        except OSError as exc:
            # A monitor Ray restarts can come up while its dead predecessor still holds the port: keep
            # trying in the background instead of leaving the restarted monitor unscraped for good.
            log.error("metrics endpoint %s:%d unavailable (%s); metrics are kept and the port is retried",
                      host, port, exc)
            threading.Thread(target=self._bind_later, args=(start_http_server, host, port), daemon=True).start()

    def _bind_later(self, start_http_server: Any, host: str, port: int, every_s: float = 0.5,
                    max_every_s: float = 10.0) -> None:
        while True:
            time.sleep(every_s)
            try:
                start_http_server(port, addr=host, registry=self.registry)
            except OSError:
                every_s = min(max_every_s, every_s * 1.5)
                continue
            self.endpoint = f"http://{host}:{port}/metrics"
            log.warning("metrics endpoint %s is up", self.endpoint)
            return


class PredictionJournal:
    """Sampled answers on disk (``predictions.jsonl``, rotated into ``predictions.1.jsonl`` every ``keep``
    lines), so a restarted monitor can still join labels for answers it received before it died."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.current, self.previous = folder / "predictions.jsonl", folder / "predictions.1.jsonl"
        self.keep = keep
        self.recount()

    def recount(self) -> None:
        """Lines in the current file (after a restart, or after retention cut it)."""
        self.lines = sum(1 for _ in open(self.current, encoding="utf-8")) if self.current.is_file() else 0

    def append(self, samples: list[dict[str, Any]]) -> None:
        with open(self.current, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(s, default=str) + "\n" for s in samples)
        self.lines += len(samples)
        if self.lines >= self.keep:
            self.current.replace(self.previous)
            self.lines = 0

    def load(self) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        for path in (self.previous, self.current):
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        samples.append(json.loads(line))
                    except ValueError:  # a line cut short by the crash that restarted us
                        continue
        return samples[-self.keep:]


class Monitor:
    def __init__(self, model: str, workdir: str, monitoring: MonitoringConfig, task: str) -> None:
        self.model = model
        self.cfg = monitoring
        self.state = MonitorState(self.cfg, task)
        self.dir = Path(workdir) / "monitoring" / model
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = _Metrics(model, self.cfg.metrics_host, self.cfg.metrics_port)
        self.metrics.latency_slo.labels(model).set(self.cfg.latency_slo_ms / 1000)
        self.last_drift: dict[str, Any] | None = None
        self._load_references()
        self.predictions = PredictionJournal(self.dir, self.cfg.keep_predictions)
        self._retention_checked = 0.0
        self.enforce_retention()  # before the journal is read back: expired records never come back to memory
        self.state.log.add(self.predictions.load())  # labels for answers given before a restart still join

    def enforce_retention(self, now: float | None = None) -> dict[str, int]:
        """Cut the feedback log and the prediction journal to ``monitoring.retention``; lines dropped per log.
        Asked on every hand-over and feedback call, done at most every ``retention.check_every_s``."""
        r = self.cfg.retention
        wall = time.time() if now is None else now
        if now is None and time.monotonic() - self._retention_checked < r.check_every_s and self._retention_checked:
            return {}
        self._retention_checked = time.monotonic()
        cutoff = wall - r.days * 86400 if r.days is not None else None
        dropped: dict[str, int] = {}
        for path, key in ((self.dir / "feedback.jsonl", "received_at"), (self.predictions.previous, "time"),
                          (self.predictions.current, "time")):
            if retention.due(path, cutoff=cutoff, max_bytes=r.max_bytes, time_key=key):
                _, gone = retention.compact(path, cutoff=cutoff, max_bytes=r.max_bytes, time_key=key)
                if gone:
                    dropped[path.name] = gone
                    log.info("retention: dropped %d line(s) of %s (older than %s days or beyond %s bytes)",
                             gone, path, r.days, r.max_bytes)
        if "predictions.jsonl" in dropped:
            self.predictions.recount()
        return dropped

    def _load_references(self) -> None:
        """A restarted monitor judges drift at once: references survive in the workdir, not only in memory."""
        for path in sorted((self.dir / "references").glob("*.json")):
            try:
                saved = json.loads(path.read_text())
                self.state.set_reference(saved["version"], saved["profile"], saved.get("scores"))
            except (OSError, ValueError, KeyError) as exc:
                log.error("ignoring unreadable reference %s: %s", path, exc)

    async def set_reference(self, version: str, profile: dict[str, Any], scores: dict[str, Any] | None = None) -> None:
        self.state.set_reference(version, profile, scores)
        write_json_atomic(self.dir / "references" / f"{int(version)}.json",
                          {"version": str(version), "profile": profile, "scores": scores})

    async def record(self, samples: list[dict[str, Any]], replica: str | None = None, lost: int = 0) -> None:
        self.state.add(samples, replica, lost)
        self.predictions.append(samples)
        self.enforce_retention()
        m = self.metrics
        for s in samples:
            m.requests.labels(self.model, s["version"], s["alias"]).inc()
            if s.get("latency_s") is not None:
                m.latency.labels(self.model).observe(s["latency_s"])
            m.version.labels(self.model, s["alias"]).set(float(s["version"]))
        m.lost.labels(self.model).set(self.state.gap)
        if self.state.rows_since_check >= max(1, self.cfg.window_rows // 2):
            self.check()

    def check(self) -> dict[str, Any] | None:
        """Judge the latest window now; publish per-feature drift; return the report (None while filling)."""
        report = self.state.drift()
        if report is None:
            return None
        m = self.metrics
        for name, d in report.features.items():
            m.psi.labels(self.model, name).set(d.psi)
            m.p_value.labels(self.model, name).set(d.adjusted_p)
            m.drifted.labels(self.model, name).set(1.0 if d.drifted else 0.0)
        m.drifted_count.labels(self.model).set(len(report.drifted))
        if self.state.scores:
            m.score_mean.labels(self.model).set(sum(self.state.scores) / len(self.state.scores))
        self.last_drift = {"at": time.time(), **report.to_dict()}
        return self.last_drift

    async def drift(self) -> dict[str, Any] | None:
        return self.check()

    async def evidence(self, answers: bool = False) -> dict[str, Any]:
        """What the loop decides on: the latest window's drift and live quality of every version (with
        ``answers``, each version's labelled (label, score) pairs too, for the loop's comparisons)."""
        report = self.check()
        pred = self.state.prediction_drift()
        if pred is not None:
            self.metrics.prediction_psi.labels(self.model).set(pred.psi)
        quality = {}
        for version in list(self.state.labelled):
            metrics, n = self.state.live_quality(version)
            quality[version] = {"metrics": metrics, "labelled": n}
        return {"champion": self.state.champion_version(), "rows": len(self.state.rows),
                "drifted": list(report["drifted"]) if report else [],
                "features": {k: {"psi": v["psi"], "adjusted_p": v["adjusted_p"], "drifted": v["drifted"]}
                             for k, v in (report or {}).get("features", {}).items()},
                "prediction_drift": bool(pred and pred.drifted), "prediction_psi": pred.psi if pred else None,
                "quality": quality, "gap": self.state.gap,
                **({"answers": {v: [a.tolist() for a in self.state.answers(v)] for v in quality}} if answers else {})}

    async def feedback(self, items: list[dict[str, Any]], grace_s: float = 1.0) -> dict[str, Any]:
        """Join labels to predictions. Replicas hand samples over every 0.25 s, so ids not seen yet get
        ``grace_s`` to arrive (the actor is async: ``record`` calls run while this one waits)."""
        labelled, unknown = self.state.join(items)
        deadline = time.monotonic() + grace_s
        while unknown and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            done = {(row["request_id"], row["index"]) for row in labelled}
            items = [i for i in items if (i["request_id"], int(i.get("index", 0))) not in done]
            more, unknown = self.state.join(items)
            labelled += more
        if labelled:
            now = time.time()
            append_lines(self.dir / "feedback.jsonl", [json.dumps({**row, "received_at": now}) for row in labelled])
            self.enforce_retention()
            self.metrics.feedback.labels(self.model).inc(len(labelled))
            for version in {row["version"] for row in labelled}:
                quality, _ = self.state.live_quality(version)
                for metric, value in (quality or {}).items():
                    self.metrics.quality.labels(self.model, version, metric).set(value)
        return {"accepted": len(labelled), "unknown": unknown}

    async def quality(self, version: str) -> dict[str, Any]:
        metrics, n = self.state.live_quality(version)
        return {"version": version, "metrics": metrics, "labelled": n}

    async def event(self, kind: str, action: str) -> None:
        self.metrics.events.labels(self.model, kind, action).inc()

    async def stats(self) -> dict[str, Any]:
        return {**self.state.summary(), "metrics_endpoint": self.metrics.endpoint, "last_drift": self.last_drift,
                "pid": os.getpid()}  # a restarted monitor is another process


def monitor_name(model: str, workdir: str | Path) -> str:
    """One monitor per model and working folder: two deployments of a model with separate state never share one."""
    digest = hashlib.sha1(str(Path(workdir).resolve()).encode()).hexdigest()[:8]
    return f"monitor:{model}:{digest}"


def get_monitor(model: str, workdir: str, monitoring: MonitoringConfig, task: str) -> Any:
    """The model's monitor actor, created on first use (tiny: no CPU reserved, restarted if it dies)."""
    actor = ray.remote(Monitor).options(name=monitor_name(model, workdir), namespace=NAMESPACE, lifetime="detached",
                                        get_if_exists=True, num_cpus=0, max_restarts=-1, max_task_retries=0)
    return actor.remote(model, workdir, monitoring, task)


def stop_monitor(model: str, workdir: str | Path) -> bool:
    """Kill the model's monitor (it is detached: it outlives the deployment otherwise); True if one ran."""
    try:
        ray.kill(ray.get_actor(monitor_name(model, workdir), namespace=NAMESPACE), no_restart=True)
    except ValueError:
        return False
    return True
