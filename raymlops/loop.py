"""The closed loop: watch the served model, retrain when the policy says so, canary, promote or roll back.

One ``tick`` looks at what the monitor saw and at the registry aliases, and takes at most one step:

1. a challenger is serving a canary share -> judge it on live labelled quality against the champion
   (``canary_decision``): promote it, discard it (the alias is removed and replicas stop serving it), or wait;
2. a champion promoted by the loop is on watch -> roll it back when its live quality breaks
   ``rollback_gate`` against the champion it replaced (``rollback_decision``), or keep it;

   both judge the interval of the difference (``evaluation.comparison``), not two point values. The
   monitor keeps each version's answers to its own requests, so no row has both versions' scores: the
   comparison is an *unpaired* bootstrap (or DeLong) over each version's labelled answers (the
   champion's cut to requests made while the canary ran), named so in the decision's evidence. Inside
   the noise they wait, up to ``retraining.max_wait_s``;
3. otherwise -> ``retrain_decision``: on drift, prediction drift, a quality floor or a schedule (with
   cool-down and a daily cap) run the training stage on the retraining window (``monitoring/retraining.py``);
   a candidate that passes the same gates as always, on the newest labelled days against the champion,
   is registered as ``challenger`` and the replicas start sending it the canary share.

Every decision, taken or not, is appended with its reasons, blockers and evidence to
``<workdir>/loop/<model>/decisions.jsonl``; alias moves also go to the registry's audit log. The loop's
own state (retrain times, the version on watch) lives in ``state.json`` beside it, written atomically,
so a restarted loop carries on. The retrain runs in this process on the connected Ray cluster (Ray Data
and Ray Train do the work), and the decision records how long it took.

Example::

    with ray_runtime():
        controller = LoopController(cfg)
        for decision in controller.tick():
            print(decision.kind, decision.action, decision.reasons)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raymlops.config import PipelineConfig, TimeSplitConfig
from raymlops.errors import GateFailed, RaymlopsError
from raymlops.monitoring.policy import (Decision, Evidence, canary_decision, gate_metric, retrain_decision,
                                       rollback_decision)
from raymlops.monitoring.retraining import labelled_traffic, retraining_config, retraining_window
from raymlops.registry import CHALLENGER, CHAMPION, Registry
from raymlops.training.comparison import HIGHER_IS_BETTER, Comparison, compare_unpaired
from raymlops.workspace import write_json_atomic

Progress = Callable[[str, str], None]
Retrain = Callable[[PipelineConfig, str], Any]


@dataclass
class LoopState:
    retrains_at: list[float] = field(default_factory=list)
    last_scheduled_at: float | None = None
    watch: dict[str, Any] | None = None  # {"version", "previous", "since"}: a loop promotion on probation
    canary: dict[str, Any] | None = None  # {"version", "since"}: the canary being judged, for max_wait_s

    @classmethod
    def load(cls, path: Path) -> LoopState:
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()


def run_training(cfg: PipelineConfig, run_name: str) -> Any:
    """The retrain itself: the ordinary data and training stages on the connected Ray cluster."""
    from raymlops.data.stage import run_data_stage
    from raymlops.training.stage import run_training_stage

    data = run_data_stage(cfg)
    return run_training_stage(cfg, data, run_name)


class LoopController:
    """One model's loop. ``monitor`` is its monitor actor handle (looked up by name when omitted)."""

    def __init__(self, cfg: PipelineConfig, *, monitor: Any = None, registry: Registry | None = None,
                 retrain: Retrain | None = None, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.model_name
        self.registry = registry or Registry.for_config(cfg)
        self._monitor = monitor
        self.retrain = retrain or run_training
        self.say = progress or (lambda step, msg: None)
        self.dir = cfg.workdir_path / "loop" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.decisions_path = self.dir / "decisions.jsonl"
        self.state = LoopState.load(self.state_path)
        self._answers: dict[str, Any] = {}

    # ---------------------------------------------------------------------------- plumbing
    @property
    def monitor(self) -> Any:
        if self._monitor is None:
            import ray

            from raymlops.monitoring.monitor import NAMESPACE, monitor_name

            self._monitor = ray.get_actor(monitor_name(self.name, self.cfg.workdir_path), namespace=NAMESPACE)
        return self._monitor

    def evidence(self, answers: bool = True) -> dict[str, Any]:
        import ray

        return ray.get(self.monitor.evidence.remote(answers), timeout=60)

    def _event(self, kind: str, action: str) -> None:
        try:
            self.monitor.event.remote(kind, action)
        except Exception:  # metrics are best effort; the decision log is the record
            pass

    def _record(self, decision: Decision, **extra: Any) -> Decision:
        entry = {"model": self.name, **decision.to_dict(), **extra}
        with open(self.decisions_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        if decision.taken:
            self._event(decision.kind, decision.action)
        outcome = extra.get("outcome") or {}
        result = (f" -> {outcome.get('result')} {'v' + str(outcome['version']) if outcome.get('version') else ''} "
                  f"after {outcome.get('seconds')} s {outcome.get('error', '')}" if outcome else "")
        self.say(decision.kind, f"{decision.action}: {'; '.join(decision.reasons + decision.blocked_by) or '-'}{result}")
        return decision

    def _save(self) -> None:
        write_json_atomic(self.state_path, self.state.__dict__)

    def decisions(self, last: int | None = None) -> list[dict[str, Any]]:
        if not self.decisions_path.is_file():
            return []
        lines = [json.loads(line) for line in self.decisions_path.read_text().splitlines() if line.strip()]
        return lines[-last:] if last else lines

    # --------------------------------------------------------------------------------- tick
    def tick(self, now: float | None = None, evidence: dict[str, Any] | None = None) -> list[Decision]:
        """Look once and take at most one step; return the decisions made (all are also logged)."""
        now = time.time() if now is None else now
        ev = evidence if evidence is not None else self.evidence()
        champion = self.registry.version_for_alias(self.name, CHAMPION)
        challenger = self.registry.version_for_alias(self.name, CHALLENGER)
        quality = ev.get("quality", {})

        self._answers = ev.get("answers") or {}  # version -> [labels, scores] of its own labelled answers

        def live(version: str | None) -> tuple[dict[str, float] | None, int]:
            q = quality.get(str(version)) or {}
            return q.get("metrics"), int(q.get("labelled", 0))

        if challenger is not None and challenger != champion:
            return [self._judge_canary(champion, challenger, live, now)]
        kept: list[Decision] = []
        if self.state.watch and self.state.watch["version"] == champion:
            decision = self._judge_watch(champion, live, now)
            if decision.action != "keep":
                return [decision]
            kept = [decision]  # probation over: the loop may retrain again in the same step
        elif self.state.watch:
            self.state.watch = None  # someone else moved the champion: nothing of ours to watch
            self._save()
        if not self.cfg.retraining.enabled:
            return kept
        metrics, labelled = live(champion)
        evidence_ = Evidence(now=now, rows=int(ev.get("rows", 0)), drifted=list(ev.get("drifted", [])),
                             prediction_drift=bool(ev.get("prediction_drift")), live=metrics, labelled=labelled)
        decision = retrain_decision(self.cfg.retraining, self.cfg.monitoring, self.state.retrains_at, evidence_,
                                    self.state.last_scheduled_at)
        if decision.action != "retrain":
            return [*kept, self._record(decision)]
        return [*kept, self._retrain(decision, champion, now)]

    def _compare(self, gate: str, champion: Any, challenger: Any, min_samples: int) -> Comparison | None:
        """Unpaired interval of (challenger - champion) on the gate's metric from each version's own
        labelled answers ([labels, scores, predicted_at]); None where the statistics are off or cannot apply."""
        c, metric = self.cfg.evaluation.comparison, gate_metric(gate)
        if not c.enabled or metric not in HIGHER_IS_BETTER or not champion or not challenger:
            return None
        (ya, sa), (yb, sb) = champion[:2], challenger[:2]
        if metric == "auc" and (len(set(ya)) < 2 or len(set(yb)) < 2):
            return None
        return compare_unpaired(metric, ya, sa, yb, sb, alpha=c.alpha, min_samples=min_samples,
                                resamples=c.resamples, test=c.test, seed=c.seed)

    @staticmethod
    def _concurrent(champion: Any, challenger: Any) -> Any:
        """The champion's answers to requests made since the challenger's first labelled one: both on the
        same stretch of traffic (the champion's window also holds older traffic, maybe of another mix)."""
        if not champion or not challenger or len(champion) < 3 or len(challenger) < 3 or not challenger[2]:
            return champion
        start = min(challenger[2])
        keep = [i for i, t in enumerate(champion[2]) if t >= start]
        return [[column[i] for i in keep] for column in champion]

    def _judge_canary(self, champion: str | None, challenger: str, live, now: float) -> Decision:
        (champ_q, _), (chall_q, n) = live(champion), live(challenger)
        r = self.cfg.retraining
        if not self.state.canary or self.state.canary.get("version") != str(challenger):
            self.state.canary = {"version": str(challenger), "since": now}
            self._save()
        champion_answers = self._concurrent(self._answers.get(str(champion)), self._answers.get(str(challenger)))
        comparison = self._compare(r.promote_gate, champion_answers, self._answers.get(str(challenger)),
                                   r.canary_min_samples)
        decision = canary_decision(r, champ_q, chall_q, n, now, comparison, now - self.state.canary["since"])
        if decision.action == "promote":
            reason = f"canary v{challenger} passed {'; '.join(decision.reasons)} on {n} labelled answers"
            self.registry.promote(self.name, challenger, reason=reason)
            self.registry.move_alias(self.name, CHALLENGER, None, action="promoted", reason=reason)
            # The replaced champion's live quality now is its baseline: it serves no more traffic, and a
            # restarted monitor would not remember it.
            self.state.watch = {"version": str(challenger), "previous": champion, "since": now,
                                "previous_live": champ_q, "previous_answers": champion_answers}
            self.state.canary = None
            self._save()
        elif decision.action == "discard":
            self.registry.move_alias(self.name, CHALLENGER, None, action="discard",
                                     reason=f"canary v{challenger} failed {'; '.join(decision.reasons)}")
            self.state.canary = None
            self._save()
        return self._record(decision, champion=champion, challenger=challenger)

    def _judge_watch(self, champion: str, live, now: float) -> Decision:
        previous = self.state.watch["previous"]
        (new_q, n), (old_q, _) = live(champion), live(previous)
        old_q = self.state.watch.get("previous_live") or old_q
        r = self.cfg.retraining
        baseline = self.state.watch.get("previous_answers") or self._answers.get(str(previous))
        comparison = self._compare(r.rollback_gate, baseline, self._answers.get(str(champion)), r.rollback_min_samples)
        decision = rollback_decision(r, new_q, old_q, n, r.rollback_min_samples, now, comparison,
                                     now - float(self.state.watch.get("since") or now))
        if decision.action == "rollback":
            self.registry.rollback(self.name, reason=f"v{champion} lost live quality: {'; '.join(decision.reasons)}")
        if decision.action in ("rollback", "keep"):
            self.state.watch = None
            self._save()
        return self._record(decision, champion=champion, previous=previous)

    # ------------------------------------------------------------------------------ retrain
    def _retrain(self, decision: Decision, champion: str | None, now: float) -> Decision:
        r = self.cfg.retraining
        try:
            table, end = self.window(champion)
        except (RaymlopsError, OSError, ValueError) as exc:
            return self._record(decision, outcome={"result": "failed", "error": f"building the window: {exc}"})
        if len(table) < r.min_rows:
            blocked = Decision("retrain", "hold", decision.reasons,
                               [f"retraining window has {len(table)} rows < retraining.min_rows {r.min_rows}"],
                               decision.evidence, at=now)
            return self._record(blocked)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        run_name = f"{self.cfg.name}-retrain-{stamp}"
        path = self.dir / "windows" / f"{stamp}.parquet"
        outcome: dict[str, Any] = {"run_name": run_name, "window": str(path), "rows": len(table),
                                   "window_end": str(end) if end is not None else None}
        self.state.retrains_at.append(now)
        if r.every_s is not None:
            self.state.last_scheduled_at = now
        self._save()  # counted before it runs: a crash mid-retrain still respects the cool-down
        self.say("retrain", f"run {run_name} on {len(table)} rows up to {end} ({'; '.join(decision.reasons)})")
        started = time.perf_counter()
        try:
            _write_parquet_atomic(table, path)
            result = self.retrain(retraining_config(self.cfg, path, end), run_name)
            outcome.update(result="challenger", version=getattr(result, "version", None),
                           metrics=getattr(result, "metrics", None),
                           champion_metrics=getattr(result, "champion_metrics", None))
        except GateFailed as exc:
            outcome.update(result="rejected by the gates", error=str(exc))
        except RaymlopsError as exc:
            outcome.update(result="failed", error=str(exc))
        outcome["seconds"] = round(time.perf_counter() - started, 1)
        return self._record(decision, outcome=outcome)

    def window(self, champion: str | None) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        """The retraining table: the champion's training rows and labelled traffic, cut to the window."""
        r = self.cfg.retraining
        version = self.registry.version_info(self.name, champion) if champion else None
        schema = _input_schema(self.registry, self.name, champion, self.cfg.workdir_path)
        time_column = self.cfg.data.split.column if isinstance(self.cfg.data.split, TimeSplitConfig) else None
        target = self.cfg.features.target
        feedback = self.cfg.workdir_path / "monitoring" / self.name / "feedback.jsonl"
        lines = feedback.read_text().splitlines() if feedback.is_file() else []
        traffic = labelled_traffic(lines, schema, target, self.cfg.model.task, time_column)
        history = None
        snapshot = (version.tags or {}).get("raymlops.snapshot_path") if version is not None else None
        if r.include_history and snapshot and Path(snapshot).is_dir():
            wanted = [c for c in traffic.columns]
            files = sorted(Path(snapshot).glob("*.parquet"))
            history = pd.concat([pd.read_parquet(f, columns=wanted) for f in files], ignore_index=True) if files else None
        return retraining_window(history, traffic, time_column, r.window_days)

    # ------------------------------------------------------------------------------- status
    def status(self, live: bool = True) -> dict[str, Any]:
        """Versions, aliases, traffic split, drift, quality and the last decisions, for ``raymlops status``."""
        versions = [{"version": v.version, "aliases": list(getattr(v, "aliases", []) or []),
                     "created": getattr(v, "creation_timestamp", None),
                     "data": (v.tags or {}).get("raymlops.data_fingerprint")}
                    for v in self.registry.list_versions(self.name)]
        evidence: dict[str, Any] = {"error": "no live view (not connected to Ray)"}
        if live:
            try:
                evidence = self.evidence(answers=False)
            except Exception as exc:  # the service may be down: the registry side is still worth showing
                evidence = {"error": f"monitor unavailable: {exc}"}
        challenger = self.registry.version_for_alias(self.name, CHALLENGER)
        champion = self.registry.version_for_alias(self.name, CHAMPION)
        share = self.cfg.serving.canary_share or (self.cfg.retraining.canary_share if self.cfg.retraining.enabled else 0)
        split = {champion: 1.0} if not challenger or challenger == champion else {champion: 1 - share, challenger: share}
        return {"model": self.name, "champion": champion, "challenger": challenger, "traffic": split,
                "versions": versions, "watch": self.state.watch, "retrains": len(self.state.retrains_at),
                "evidence": evidence, "decisions": self.decisions(last=10)}


def loop_status(cfg: PipelineConfig, address: str | None = "auto") -> dict[str, Any]:
    """``raymlops status``: the loop as the registry, the decision log and (when Ray is reachable at
    ``address``) the live monitor see it. Never starts a cluster."""
    controller = LoopController(cfg)
    if address is None:
        return controller.status(live=False)
    try:
        from raymlops.runtime import ray_runtime

        with ray_runtime(address=address):
            return controller.status()
    except RaymlopsError as exc:
        status = controller.status(live=False)
        status["evidence"] = {"error": f"no live view: {exc}"}
        return status


def run_loop(cfg: PipelineConfig, *, address: str | None, once: bool = False, progress: Progress | None = None,
             every_s: float | None = None) -> list[Decision]:
    """``raymlops loop``: step the loop of a model served on the cluster at ``address`` (once, or forever)."""
    from raymlops.runtime import ray_runtime

    decisions: list[Decision] = []
    with ray_runtime(address=address):
        controller = LoopController(cfg, progress=progress)
        while True:
            if once:
                return decisions + controller.tick()
            try:
                decisions += controller.tick()
            except RaymlopsError as exc:  # e.g. the registry away for a while: the next step tries again
                (progress or (lambda step, msg: None))("loop", f"step failed, retrying in the next one: {exc}")
            time.sleep(every_s or cfg.retraining.check_every_s)


def _input_schema(registry: Registry, name: str, version: str | None, workdir: Path) -> dict[str, Any]:
    """The champion's input schema, from its package manifest (cached next to other downloaded packages)."""
    from raymlops.packaging import verify_package

    if version is None:
        raise RaymlopsError(f"model {name!r} has no champion: the loop needs one to retrain against")
    cached = workdir / "packages" / f"{name}-v{version}" / "model"
    if not cached.is_dir():
        cached = registry.download_package(name, version, cached.parent)
    return verify_package(cached)["input_schema"]


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


__all__ = ["LoopController", "LoopState", "loop_status", "run_loop", "run_training"]
