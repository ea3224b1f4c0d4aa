"""The closed loop: watch the served model, retrain when the policy says so, canary, promote or roll back.

One ``tick`` looks at what the monitor saw and at the registry aliases, and takes its steps in order:

1. a champion promoted by the loop is on watch -> roll it back when its live quality breaks
   ``rollback_gate`` against the champion it replaced (``rollback_decision``), or keep it; a rollback, or a
   verdict that waits for more labels, ends the step;
2. a challenger is serving a canary share -> judge it on live labelled quality against the champion
   (``canary_decision``): promote it (it is on watch from the next step), discard it (the alias is removed
   and replicas stop serving it), or wait; only a promotion lets the step go on, one candidate at a time;

   both judge the interval of the difference (``evaluation.comparison``), not two point values, and both
   are *paired*: the loop scores the two versions itself on every labelled request predicted since the
   canary began (or since the promotion), from the inputs the monitor keeps in ``feedback.jsonl``
   (``monitoring/shadow.py``), so they are compared on the same rows and not on two different weeks.
   Inside the noise they wait, up to ``retraining.max_wait_s``;
3. then -> ``retrain_decision``: on drift, prediction drift, a quality floor or a schedule (with
   cool-down and a daily cap) run the training stage on the retraining window (``loop/retraining.py``);
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
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import PipelineConfig, TimeSplitConfig
from raymlops.errors import GateFailed, RaymlopsError
from raymlops.loop.lease import Lease
from raymlops.loop.policy import (Decision, Evidence, best_earlier_champion, canary_decision, gate_metric,
                                  retrain_decision, rollback_decision)
from raymlops.loop.retraining import (WindowFit, cut_window, labelled_traffic, retraining_config, retraining_window,
                                      split_starts, window_days_to_fit, window_label, with_recency_weights)
from raymlops.loop.windows import run_window_candidates
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry
from raymlops.training.comparison import HIGHER_IS_BETTER, Comparison, compare, day_groups, interval
from raymlops.workspace import append_lines, read_json_lines, write_json_atomic

log = logging.getLogger(__name__)

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
                 retrain: Retrain | None = None, progress: Progress | None = None,
                 purpose: str = "a raymlops loop") -> None:
        self.cfg = cfg
        self.name = cfg.model_name
        self.registry = registry or Registry.for_config(cfg)
        self._monitor = monitor
        self.retrain = retrain or run_training
        self.retrain_windows = run_window_candidates  # retraining.candidate_windows
        self.say = progress or (lambda step, msg: None)
        self.dir = cfg.workdir_path / "loop" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.decisions_path = self.dir / "decisions.jsonl"
        self.state = LoopState.load(self.state_path)
        self._packages: dict[str, Any] = {}
        self.lease = Lease(self.dir / "lease.json", purpose=purpose)

    # ---------------------------------------------------------------------------- plumbing
    @property
    def monitor(self) -> Any:
        if self._monitor is None:
            import ray

            from raymlops.monitoring.monitor import NAMESPACE, monitor_name

            self._monitor = ray.get_actor(monitor_name(self.name, self.cfg.workdir_path), namespace=NAMESPACE)
        return self._monitor

    def evidence(self, answers: bool = True, timeout_s: float = 60.0) -> dict[str, Any]:
        """The monitor's drift and quality view. A monitor that is restarting (it died and Ray brings it
        back; its labelled answers start again) is waited for, up to ``timeout_s``: the call only reads."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return ray.get(self.monitor.evidence.remote(answers), timeout=max(1.0, deadline - time.monotonic()))
            except (ActorUnavailableError, RayActorError):
                if time.monotonic() >= deadline:
                    raise
                self._monitor = None  # looked up again by name: the restarted actor
                time.sleep(0.5)

    def _event(self, kind: str, action: str) -> None:
        try:
            self.monitor.event.remote(kind, action)
        except Exception:  # metrics are best effort; the decision log is the record
            pass

    def _record(self, decision: Decision, **extra: Any) -> Decision:
        entry = {"model": self.name, **decision.to_dict(), **extra}
        append_lines(self.decisions_path, [json.dumps(entry, default=str)])
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
        lines, skipped = read_json_lines(self.decisions_path)  # a line torn by a crash is skipped, not fatal
        if skipped:
            log.warning("%s: skipped %d line(s) that do not parse (torn by a crash?)", self.decisions_path, skipped)
        lines = [line for line in lines if isinstance(line, dict)]
        return lines[-last:] if last else lines

    # --------------------------------------------------------------------------------- tick
    def tick(self, now: float | None = None, evidence: dict[str, Any] | None = None) -> list[Decision]:
        """Look once: judge the watch, then the canary, then maybe retrain (the module's docstring); return
        the decisions made (all are also logged).

        Only the holder of the loop's lease steps (LeaseHeld names another live holder): one writer."""
        self.lease.acquire()
        self.state = LoopState.load(self.state_path)  # a previous holder may have written it since
        now = time.time() if now is None else now
        ev = evidence if evidence is not None else self.evidence()
        champion = self.registry.version_for_alias(self.name, CHAMPION)
        challenger = self.registry.version_for_alias(self.name, CHALLENGER)
        quality = ev.get("quality", {})

        def live(version: str | None) -> tuple[dict[str, float] | None, int]:
            q = quality.get(str(version)) or {}
            return q.get("metrics"), int(q.get("labelled", 0))

        kept: list[Decision] = []
        if self.state.watch and self.state.watch["version"] == champion:
            decision = self._judge_watch(champion, live, now)
            if decision.action != "keep":
                return [decision]  # rolled back, or on probation until more labels arrive
            kept = [decision]  # probation over: the step goes on
        elif self.state.watch:
            self.state.watch = None  # someone else moved the champion: nothing of ours to watch
            self._save()
        if challenger is not None and challenger != champion:
            decision = self._judge_canary(champion, challenger, live, now)
            if decision.action != "promote":
                return [*kept, decision]  # one candidate at a time: nothing retrains while a canary is out
            # Promoted (and on watch from the next step): the policy may start the next candidate at once, so
            # a loop whose schedule is as short as its canary serves models no staler than that schedule.
            kept.append(decision)
            champion = challenger
        if not self.cfg.retraining.enabled:
            return kept
        if self.cfg.retraining.every_s is not None and self.state.last_scheduled_at is None \
                and not self.state.retrains_at:
            self.state.last_scheduled_at = now  # the schedule runs from the loop's first step, not at once
            self._save()
        metrics, labelled = live(champion)
        evidence_ = Evidence(now=now, rows=int(ev.get("rows", 0)), drifted=list(ev.get("drifted", [])),
                             prediction_drift=bool(ev.get("prediction_drift")), live=metrics, labelled=labelled,
                             quality_drop=self._quality_drop(champion, (ev.get("answers") or {}).get(str(champion))))
        decision = retrain_decision(self.cfg.retraining, self.cfg.monitoring, self.state.retrains_at, evidence_,
                                    self.state.last_scheduled_at)
        if decision.action != "retrain":
            return [*kept, self._record(decision)]
        return [*kept, self._retrain(decision, champion, now)]

    def _quality_drop(self, champion: str | None, answers: Any) -> str | None:
        """Why the champion's live quality is below its own test quality by more than
        ``retraining.quality_drop`` over the whole interval, or None (also when that cannot be judged)."""
        r, c = self.cfg.retraining, self.cfg.evaluation.comparison
        metric = gate_metric(r.promote_gate)
        if r.quality_drop is None or not champion or not answers or metric not in HIGHER_IS_BETTER:
            return None
        y, scores = (np.asarray(a, dtype=float) for a in answers[:2])
        if len(y) < self.cfg.monitoring.min_window_rows or (metric == "auc" and len(set(y.tolist())) < 2):
            return None
        try:
            tested = float((self.registry.version_info(self.name, champion).tags or {})[f"raymlops.metric.{metric}"])
        except (KeyError, ValueError, RaymlopsError):
            return None  # registered before test metrics were tagged, or the registry is away this step
        value, low, high = interval(metric, y, scores, alpha=c.alpha, resamples=c.resamples, seed=c.seed)
        higher = HIGHER_IS_BETTER[metric]
        below = (high < tested - r.quality_drop) if higher else (low > tested + r.quality_drop)
        if not below:
            return None
        return (f"live {metric} {value:.4f} ({1 - c.alpha:.0%} CI [{low:.4f}, {high:.4f}], n = {len(y)}) is below "
                f"v{champion}'s test {metric} {tested:.4f} by more than retraining.quality_drop {r.quality_drop:g}")

    def _paired(self, gate: str, champion: str | None, challenger: str, since: float,
                min_samples: int) -> tuple[Comparison | None, dict[str, float] | None, dict[str, float] | None, int]:
        """(challenger - champion) on the gate's metric, both versions scored by this process on the same
        labelled traffic predicted since ``since`` (wall clock): a paired comparison. Returns it with each
        version's point value on those rows and how many rows there were; (None, None, None, 0) where the
        statistics are off, the metric is not one they know, or there is no champion."""
        c, metric = self.cfg.evaluation.comparison, gate_metric(gate)
        if not c.enabled or metric not in HIGHER_IS_BETTER or not champion:
            return None, None, None, 0
        rows = self._labelled_since(champion, since)
        target = self.cfg.features.target
        if len(rows) == 0:
            return None, None, None, 0
        y = rows[target].to_numpy(float)
        if metric == "auc" and len(set(y)) < 2:
            return None, None, None, len(rows)
        a, b = (self._package(v).predict_frame(rows) for v in (champion, challenger))
        split = self.cfg.data.split
        groups = (day_groups(rows[split.column]) if c.group_by_day and isinstance(split, TimeSplitConfig)
                  and split.column in rows.columns else None)
        comparison = compare(metric, y, a, b, alpha=c.alpha, min_samples=min_samples, resamples=c.resamples,
                             test=c.test, seed=c.seed, groups=groups)
        return comparison, {metric: comparison.champion}, {metric: comparison.challenger}, len(rows)

    def _labelled_since(self, champion: str, since: float) -> pd.DataFrame:
        """Labelled requests predicted since ``since``, typed by the champion's input schema."""
        from raymlops.monitoring.shadow import feedback_since

        schema = self._package(champion).manifest["input_schema"]  # loaded (and verified) once per controller
        time_column = self.cfg.data.split.column if isinstance(self.cfg.data.split, TimeSplitConfig) else None
        lines = feedback_since(self.cfg.workdir_path / "monitoring" / self.name / "feedback.jsonl", since)
        return labelled_traffic(lines, schema, self.cfg.features.target, self.cfg.model.task, time_column)

    def _package(self, version: str) -> Any:
        """A version's verified package, loaded once per controller (downloaded next to the others)."""
        from raymlops.model.packaging import load_package

        if str(version) not in self._packages:
            self._packages[str(version)] = load_package(self.registry.local_package(self.name, version),
                                                        self.cfg.model.trusted_builders())
        return self._packages[str(version)]

    def _since(self, version: str) -> float:
        """When a challenger's canary began: when the loop registered it, else the version's creation."""
        if self.state.canary and self.state.canary.get("version") == str(version) and self.state.canary.get("wall"):
            return float(self.state.canary["wall"])
        created = getattr(self.registry.version_info(self.name, version), "creation_timestamp", None)
        return float(created) / 1000 if created else time.time()

    def _judge_canary(self, champion: str | None, challenger: str, live, now: float) -> Decision:
        r = self.cfg.retraining
        if not self.state.canary or self.state.canary.get("version") != str(challenger):
            self.state.canary = {"version": str(challenger), "since": now, "wall": self._since(challenger)}
            self._save()
        comparison, champ_q, chall_q, n = self._paired(r.promote_gate, champion, challenger,
                                                       float(self.state.canary["wall"]), r.canary_min_samples)
        if comparison is None:  # statistics off: each version's own live quality, as before
            (champ_q, _), (chall_q, n) = live(champion), live(challenger)
        # An earlier champion is not trained on newer data: inside the noise after max_wait_s it never wins.
        policy = r.model_copy(update={"after_wait": "champion"}) if self.state.canary.get("earlier") else r
        decision = canary_decision(policy, champ_q, chall_q, n, now, comparison, now - self.state.canary["since"])
        if decision.action == "promote":
            reason = f"canary v{challenger} passed {'; '.join(decision.reasons)} on {n} labelled answers"
            self.registry.promote(self.name, challenger, reason=reason)
            self.registry.move_alias(self.name, CHALLENGER, None, action="promoted", reason=reason)
            self.state.canary = None
            self.watch(challenger, champion, now=now, previous_live=champ_q)
        elif decision.action == "discard":
            self.registry.move_alias(self.name, CHALLENGER, None, action="discard",
                                     reason=f"canary v{challenger} failed {'; '.join(decision.reasons)}")
            self.state.canary = None
            self._save()
        return self._record(decision, champion=champion, challenger=challenger)

    def watch(self, version: str, previous: str | None, *, now: float | None = None,
              previous_live: dict[str, float] | None = None) -> None:
        """Put champion ``version`` on probation against ``previous``, the champion it replaced: from now on
        both are scored on the labelled traffic, and the loop rolls back when ``rollback_gate`` breaks.
        The loop calls it after its own promotions; call it after promoting by hand to get the same guard."""
        self.state.watch = {"version": str(version), "previous": previous, "since": time.time() if now is None else now,
                            "wall": time.time(), "previous_live": previous_live}
        self._save()

    def _judge_watch(self, champion: str, live, now: float) -> Decision:
        previous = self.state.watch["previous"]
        r = self.cfg.retraining
        since = float(self.state.watch.get("wall") or 0)
        comparison, old_q, new_q, n = (self._paired(r.rollback_gate, previous, champion, since, r.rollback_min_samples)
                                       if previous else (None, None, None, 0))
        if comparison is None:
            (new_q, n), (old_q, _) = live(champion), live(previous)
            old_q = self.state.watch.get("previous_live") or old_q
        decision = rollback_decision(r, new_q, old_q, n, r.rollback_min_samples, now, comparison,
                                     now - float(self.state.watch.get("since") or now))
        if decision.action == "rollback":
            self.registry.rollback(self.name, reason=f"v{champion} lost live quality: {'; '.join(decision.reasons)}")
        if decision.action in ("rollback", "keep"):
            self.state.watch = None
            self._save()
        return self._record(decision, champion=champion, previous=previous)

    # ------------------------------------------------------------------------------ retrain
    def _earlier_champion(self, champion: str) -> tuple[str | None, list[str]]:
        """The best of the ``retraining.earlier_champions`` most recent earlier champions against
        ``champion`` on the labelled answers of its current tenure (since it last took the alias), or None."""
        r = self.cfg.retraining
        log = self.registry.audit_log(self.name)
        moves = [m for m in log if m.alias == CHAMPION]
        tenure = max((m.time for m in moves if m.to_version == str(champion)), default=None)
        since = tenure if tenure is not None else self._since(champion)
        # One that lost its canary during this tenure already had its chance on these answers' successors.
        lost = {m.from_version for m in log if m.alias == CHALLENGER and m.action == "discard" and m.time >= since}
        earlier: list[str] = []
        for move in reversed(moves):
            for version in (move.from_version, move.to_version):
                if version and version != str(champion) and version not in earlier:
                    earlier.append(version)
        judged = {}
        for version in [v for v in earlier if v not in lost][: r.earlier_champions]:
            comparison, champion_live, live, n = self._paired(r.promote_gate, champion, version, since,
                                                              r.canary_min_samples)
            judged[version] = (champion_live, live, n, comparison)
        return best_earlier_champion(r.promote_gate, r.canary_min_samples, judged)

    def _canary_earlier(self, decision: Decision, champion: str, version: str, said: list[str],
                        now: float) -> Decision:
        """Make an earlier champion the challenger: no fit; its canary judges it on fresh traffic."""
        r = self.cfg.retraining
        reason = f"earlier champion v{version} beat v{champion} on its tenure's labelled answers: {'; '.join(said)}"
        self.registry.move_alias(self.name, CHALLENGER, version, action="earlier champion", reason=reason)
        self.state.retrains_at.append(now)  # the cool-down and the daily cap count it as a retrain
        if r.every_s is not None:
            self.state.last_scheduled_at = now
        self.state.canary = {"version": str(version), "since": now, "wall": time.time(), "earlier": True}
        self._save()
        self.say("retrain", reason)
        return self._record(decision, outcome={"result": "earlier champion", "version": str(version),
                                               "compared": said, "train_seconds": 0.0, "seconds": 0.0})

    def _retrain(self, decision: Decision, champion: str | None, now: float) -> Decision:
        r = self.cfg.retraining
        compared: list[str] = []  # what the earlier champions scored, when the config asks for them
        if r.earlier_champions and champion:
            try:
                earlier, compared = self._earlier_champion(champion)
            except (RaymlopsError, OSError, ValueError) as exc:  # e.g. an old package gone: fit as usual
                earlier, compared = None, [f"earlier champions not judged: {exc}"]
            if earlier is not None:
                return self._canary_earlier(decision, champion, earlier, compared, now)
        windows = window_days_to_fit(r)
        try:  # with several windows, the widest is built once and each is cut from it
            table, end = self.window(champion, until=pd.Timestamp(now, unit="s", tz="UTC"),
                                     days=None if None in windows else max(windows))
        except (RaymlopsError, OSError, ValueError) as exc:
            return self._record(decision, outcome={"result": "failed", "error": f"building the window: {exc}"})
        time_column = self.cfg.data.split.column if isinstance(self.cfg.data.split, TimeSplitConfig) else None
        tables = {days: cut_window(table, time_column, end, days) for days in windows}
        if r.half_life_days is not None and time_column and end is not None:  # recency-weighted history
            tables = {days: with_recency_weights(t, time_column, end, r.half_life_days) for days, t in tables.items()}
        table = tables[r.window_days]
        # another window that is too small to train on is left out; window_days alone decides whether to retrain
        tables = {days: t for days, t in tables.items() if days == r.window_days or len(t) >= r.min_rows}
        if len(table) < r.min_rows:
            blocked = Decision("retrain", "hold", decision.reasons,
                               [f"retraining window has {len(table)} rows < retraining.min_rows {r.min_rows}"],
                               decision.evidence, at=now)
            return self._record(blocked)
        thin = _thin_splits(table, self.cfg, end)
        if thin:  # e.g. labels lost while the monitor restarted leave the newest days empty
            return self._record(Decision("retrain", "hold", decision.reasons, [thin], decision.evidence, at=now))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        run_name = f"{self.cfg.name}-retrain-{stamp}"
        paths = {days: self.dir / "windows" / (f"{stamp}.parquet" if len(tables) == 1 else
                                               f"{stamp}-{window_label(days)}.parquet") for days in tables}
        path = paths[r.window_days]
        outcome: dict[str, Any] = {"run_name": run_name, "window": str(path), "rows": len(table),
                                   "window_end": str(end) if end is not None else None,
                                   **({"earlier_champions": compared} if compared else {})}
        self.state.retrains_at.append(now)
        if r.every_s is not None:
            self.state.last_scheduled_at = now
        self._save()  # counted before it runs: a crash mid-retrain still respects the cool-down
        self.say("retrain", f"run {run_name} on {len(table)} rows up to {end} ({'; '.join(decision.reasons)})")
        started = time.perf_counter()
        other_fits = 0.0  # seconds of the windows' fits that did not go to the gates

        def chosen_from(fits: list[WindowFit], chosen: WindowFit) -> None:
            nonlocal other_fits
            other_fits = sum(f.seconds for f in fits if f is not chosen)
            outcome.update(window=str(paths[chosen.days]), rows=len(tables[chosen.days]), windows=[
                {"window": f.label, "rows": len(tables[f.days]), "val_loss": round(f.val_loss, 6),
                 "seconds": f.seconds, "chosen": f is chosen} for f in fits])

        try:
            for days, frame in tables.items():
                _write_parquet_atomic(frame, paths[days])
            if len(tables) == 1:
                result = self.retrain(retraining_config(self.cfg, path, end), run_name)
            else:
                self.say("retrain", f"{len(tables)} windows ({', '.join(map(window_label, tables))}): "
                                    "the lowest validation loss goes to the gates")
                result = self.retrain_windows([(days, retraining_config(self.cfg, paths[days], end))
                                               for days in tables], run_name, self.say, chosen_from)
            outcome.update(result="challenger", version=getattr(result, "version", None),
                           metrics=getattr(result, "metrics", None),
                           champion_metrics=getattr(result, "champion_metrics", None),
                           # the fits alone (every window's, the gated run's and its refit), beside the
                           # whole retrain's seconds
                           train_seconds=round(other_fits + sum((getattr(result, "seconds", None) or {}).get(k, 0.0)
                                                                for k in ("train", "refit")), 1))
            if outcome["version"] is not None:  # its canary is judged on the traffic labelled from now on
                self.state.canary = {"version": str(outcome["version"]), "since": now, "wall": time.time()}
                self._save()
        except GateFailed as exc:
            outcome.update(result="rejected by the gates", error=str(exc))
        except RaymlopsError as exc:
            outcome.update(result="failed", error=str(exc))
        outcome["seconds"] = round(time.perf_counter() - started, 1)
        return self._record(decision, outcome=outcome)

    def window(self, champion: str | None, *, days: float | None,
               until: pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        """The retraining table: the champion's training rows and labelled traffic, cut to the latest ``days``
        (None: all) and to rows timed at or before ``until``, the loop's clock."""
        r = self.cfg.retraining
        version = self.registry.version_info(self.name, champion) if champion else None
        manifest = _champion_manifest(self.registry, self.name, champion)
        time_column = self.cfg.data.split.column if isinstance(self.cfg.data.split, TimeSplitConfig) else None
        target = self.cfg.features.target
        feedback = self.cfg.workdir_path / "monitoring" / self.name / "feedback.jsonl"
        lines = feedback.read_text().splitlines() if feedback.is_file() else []
        # Named classes: the monitor keeps labels as class indices; the window's rows carry the names,
        # as the champion's snapshot does, and the data stage fits them again.
        traffic = labelled_traffic(lines, manifest["input_schema"], target, self.cfg.model.task, time_column,
                                   classes=manifest.get("spec", {}).get("classes") or None)
        history = None
        snapshot = (version.tags or {}).get("raymlops.snapshot_path") if version is not None else None
        if r.include_history and snapshot and Path(snapshot).is_dir():
            wanted = [c for c in traffic.columns]
            files = sorted(Path(snapshot).glob("*.parquet"))
            history = pd.concat([pd.read_parquet(f, columns=wanted) for f in files], ignore_index=True) if files else None
        return retraining_window(history, traffic, time_column, days, until=until)

    # ------------------------------------------------------------------------------- status
    def status(self, live: bool = True) -> dict[str, Any]:
        """Versions, aliases, traffic split, drift, quality and the last decisions, for ``raymlops status``."""
        aliases = self.registry.aliases(self.name)
        versions = [{"version": v.version,
                     "aliases": sorted(a for a, version in aliases.items() if version == str(v.version)),
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


def _connected_to_ray() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _service_evidence(cfg: PipelineConfig) -> dict[str, Any]:
    """The live view from the ``raymlops serve`` recorded for this workdir, over HTTP (no Ray join)."""
    import urllib.error
    import urllib.request

    from raymlops.serving import service_record
    from raymlops.serving.api_key import load_api_key

    record = service_record.read(cfg.workdir_path, cfg.model_name)
    if record is None:
        return {"error": f"nothing is served: no `raymlops serve` of {cfg.model_name!r} runs from "
                         f"{cfg.workdir_path} (pass --address HOST:PORT to read a cluster's monitor)"}
    key = load_api_key(cfg.serving)
    request = urllib.request.Request(f"{record['url']}/v1/monitor",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        return {"error": f"the service at {record['url']} (pid {record['pid']}) answered {exc.code}: {detail}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"the service at {record['url']} (pid {record['pid']}) did not answer: {exc}"}


def loop_status(cfg: PipelineConfig, address: str | None = None, live: bool = True) -> dict[str, Any]:
    """``raymlops status``: the loop as the registry, the decision log and the live monitor see it.

    The live view comes from the Ray this process is connected to (the Python API serving here), else
    from ``address`` when one is given (joining that cluster), else from the ``raymlops serve`` recorded
    for this workdir, over HTTP: no Ray join, an answer within seconds. Never starts a cluster."""
    controller = LoopController(cfg)
    if not live:
        return controller.status(live=False)
    if _connected_to_ray():
        return controller.status()
    if address is None:
        status = controller.status(live=False)
        status["evidence"] = _service_evidence(cfg)
        return status
    try:
        from raymlops.runtime.session import ray_runtime

        with ray_runtime(address=address):
            return controller.status()
    except RaymlopsError as exc:
        status = controller.status(live=False)
        status["evidence"] = {"error": f"no live view: {exc}"}
        return status


def run_loop(cfg: PipelineConfig, *, address: str | None, once: bool = False, progress: Progress | None = None,
             every_s: float | None = None) -> list[Decision]:
    """``raymlops loop``: step the loop of a model served on the cluster at ``address`` (once, or forever)."""
    from raymlops.runtime.session import ray_runtime

    decisions: list[Decision] = []
    with ray_runtime(address=address):
        controller = LoopController(cfg, progress=progress, purpose="`raymlops loop`")
        while True:
            if once:
                return decisions + controller.tick()
            try:
                decisions += controller.tick()
            except RaymlopsError as exc:  # e.g. the registry away for a while: the next step tries again
                (progress or (lambda step, msg: None))("loop", f"step failed, retrying in the next one: {exc}")
            time.sleep(every_s or cfg.retraining.check_every_s)


def _champion_manifest(registry: Registry, name: str, version: str | None) -> dict[str, Any]:
    """The champion's package manifest (input schema, class names), from the workdir's copy, which
    ``local_package`` has verified against the registry's digest."""
    from raymlops.model.packaging import MANIFEST

    if version is None:
        raise RaymlopsError(f"model {name!r} has no champion: the loop needs one to retrain against")
    return json.loads((registry.local_package(name, version) / MANIFEST).read_text())


MIN_SPLIT_ROWS = 100


def _thin_splits(table: pd.DataFrame, cfg: PipelineConfig, end: pd.Timestamp | None) -> str | None:
    """Why the window's newest days cannot serve as the retrain's validation and test splits, or None."""
    if end is None or not isinstance(cfg.data.split, TimeSplitConfig):
        return None
    r = cfg.retraining
    times = pd.to_datetime(table[cfg.data.split.column], utc=True)
    validation_start, test_start = split_starts(r, end)
    test, validation = int((times >= test_start).sum()), int(((times >= validation_start) & (times < test_start)).sum())
    if min(test, validation) >= MIN_SPLIT_ROWS:
        return None
    return (f"the window's newest days are too thin to judge a candidate: {validation} rows in the "
            f"{r.validation_days:g} validation days and {test} in the {r.test_days:g} test days before {end} "
            f"(at least {MIN_SPLIT_ROWS} each; labels may be missing, e.g. while the monitor restarted)")


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


__all__ = ["LoopController", "LoopState", "loop_status", "run_loop", "run_training"]
