"""Hyperparameter search: ASHA as raymlops configures it against the named baseline "full random search",
the same search run with every trial trained to the end.

What is measured (``run_tuning`` on a local Ray from ``ray_runtime(num_cpus=2)``)
    The same search space, ``num_samples``, ``search_alg: random`` and ``training.seed``, 1 worker x 0.5
    CPU per trial so 2 trials run at once: (a) ASHA (grace_period 1, reduction_factor 2), (b) full:
    grace_period = epochs, so ASHA's only rung is max_t and no trial stops early. raymlops seeds only
    Optuna, so the script seeds numpy's and Python's global RNGs before each search (Tune's random search
    samples from numpy's) and checks that both drew the same trial parameters.
    Per search: wall seconds, the best val_loss, epochs Tune processed (``TuningResult.total_epochs``) and
    epochs actually trained (a thread lists every trial's checkpoint folder every 20 ms; each checkpoint
    name carries its worker-side report time and the last one's state.json every trained epoch's val_loss:
    a trial ASHA stops can have trained epochs Tune never processed). Epochs-to-best: all trained epochs of
    all trials in report order, counted up to the first that reached the worse of the two searches' best
    val_loss (both reach it). ASHA is asynchronous: its stops depend on the order results reach the
    driver, so repeated runs with the same trials can stop different ones.

How to run (from the repository root)::

    .venv/bin/python benchmarks/tune_bench.py            # smoke config, 6 trials x 6 epochs
    .venv/bin/python benchmarks/tune_bench.py --quick    # 4 trials x 2 epochs

Writes ``benchmarks/out/tune_bench.json``; the workdir and MLflow store are temporary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from harness import REPO, Comparison

CKPT_RE = re.compile(r"^checkpoint_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{6})$")
BASELINE = "full random search (no early stopping)"
os.environ["RAYMLOPS_PROGRESS"] = "0"


def tuning_config(case: str, workdir: Path, epochs: int, samples: int, grace: int, seed: int):
    def edit(data: dict[str, Any]) -> None:
        data.pop("registry", None)
        data["training"] = {"num_workers": 1, "cpus_per_worker": 0.5, "epochs": epochs, "learning_rate": 0.002,
                            "batch_size": 256 if case == "flights" else 128, "early_stopping_patience": 1000,
                            "max_failures": 0, "seed": seed, "use_gpu": False}
        data["tuning"] = {
            "enabled": True, "num_samples": samples, "max_concurrent_trials": 2, "search_alg": "random",
            "grace_period": grace, "reduction_factor": 2,
            "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                             "hidden_sizes": {"type": "choice", "values": [[8], [32, 16], [64, 32]]},
                             "dropout": {"type": "uniform", "low": 0.0, "high": 0.3}}}

    return harness.bench_config(case, workdir, edit)


class TrialWatcher:
    """Every checkpoint name (= worker-side report time) of every trial's run, listed every 20 ms."""

    def __init__(self, root: Path, run_name: str):
        self.root, self.prefix, self.skip = root, f"{run_name}-", f"{run_name}-tune"
        self.seen: dict[str, dict[str, float]] = {}  # trial folder -> {checkpoint name: report time, s}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TrialWatcher:
        self.wall0 = datetime.today()  # noqa: DTZ002 - naive local time, as Ray names checkpoints
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def _scan(self) -> None:
        for d in os.listdir(self.root) if self.root.is_dir() else []:
            if not d.startswith(self.prefix) or d == self.skip:
                continue
            names = self.seen.setdefault(d, {})
            for entry in os.listdir(self.root / d):
                if (m := CKPT_RE.match(entry)) and entry not in names:
                    named = datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S.%f")
                    names[entry] = (named - self.wall0).total_seconds()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self._scan()
            except OSError:  # a trial folder vanished between two calls
                continue

    def epochs(self) -> list[dict[str, Any]]:
        """One row per epoch a trial trained: trial, epoch, report time, val_loss; in report order."""
        rows = []
        for d, names in self.seen.items():
            history: list[dict[str, Any]] = []
            for state in (self.root / d).glob("*/state.json"):
                try:
                    h = json.loads(state.read_text()).get("history", [])
                except (OSError, ValueError):
                    continue
                history = h if len(h) > len(history) else history
            for i, t in enumerate(sorted(names.values())):
                rows.append({"trial_id": d[len(self.prefix):], "epoch": i, "report_s": t,
                             "val_loss": history[i]["val_loss"] if i < len(history) else float("nan")})
        return sorted(rows, key=lambda r: r["report_s"])


def search(cfg, data, name: str, tracking_uri: str, seed: int) -> dict[str, Any]:
    import numpy as np

    from raymlops.training.tuning import run_tuning
    from raymlops.workspace import Workspace

    ws = Workspace(cfg.workdir_path).ensure()
    np.random.seed(seed)  # raymlops gives random search no random_state: seed the global RNG it falls back to
    random.seed(seed)
    with TrialWatcher(ws.checkpoints, name) as watcher:
        res, usage = harness.measure(lambda: run_tuning(cfg, data, name, tracking_uri=tracking_uri,
                                                        experiment=name, parent_run_id=None))
    trials = [{"trial_id": t.trial_id, "params": t.params, "epochs": t.epochs, "best_val_loss": t.best_val_loss,
               "status": t.status} for t in res.trials]
    return {"grace_period": cfg.tuning.grace_period, "wall_s": usage.wall_s, "total_epochs": res.total_epochs,
            "best_val_loss": min((t.best_val_loss for t in res.trials if not math.isnan(t.best_val_loss)),
                                 default=float("nan")),
            "trials": trials, "worker_epochs": watcher.epochs()}


def epochs_to(rows: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """How many trained epochs (of all trials, in report order) until the first with val_loss <= target."""
    return next(({"epochs": i + 1, "seconds": r["report_s"], "trial_id": r["trial_id"]}
                 for i, r in enumerate(rows) if r["val_loss"] <= target + 1e-12), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials x 2 epochs")
    parser.add_argument("--config", choices=["smoke", "flights"], default="smoke")
    parser.add_argument("--samples", type=int, help="trials per search (default 6; quick 4)")
    parser.add_argument("--epochs", type=int, help="max epochs per trial (default 6; quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=30.0, help="before each search wait up to this long for quiet")
    args = parser.parse_args()
    case = "smoke" if args.quick else args.config
    samples, epochs = args.samples or (4 if args.quick else 6), args.epochs or (2 if args.quick else 6)
    if case == "flights" and not (REPO / "examples/flights/data/flights/2013-04.parquet").is_file():
        raise SystemExit("flights data missing; run: .venv/bin/python examples/flights/prepare.py --out "
                         "examples/flights/data")
    from raymlops.data.stage import run_data_stage
    from raymlops.runtime.session import ray_runtime

    details: dict[str, Any] = {"case": case, "samples": samples, "epochs": epochs, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp, ray_runtime(num_cpus=2):
        data = None
        for name, grace in (("asha", 1), ("full", epochs)):
            cfg = tuning_config(case, Path(tmp) / "work", epochs, samples, grace, args.seed)
            data = data or run_data_stage(cfg)
            quiet = harness.wait_for_quiet(args.max_wait)
            with harness.CpuWatch() as watch:
                details[name] = search(cfg, data, f"bench-{name}", f"sqlite:///{Path(tmp) / 'mlflow.db'}", args.seed)
            details[name]["machine"] = {**watch.result(), **quiet}
            r = details[name]
            print(f"{name}: {r['wall_s']:.1f} s, {len(r['worker_epochs'])} epochs trained "
                  f"({r['total_epochs']} seen by Tune), best val_loss {r['best_val_loss']:.5f}", flush=True)
    asha, full = details["asha"], details["full"]
    params = [sorted(json.dumps(t["params"], sort_keys=True) for t in r["trials"]) for r in (asha, full)]
    details["same_params"] = params[0] == params[1]
    target = max(asha["best_val_loss"], full["best_val_loss"])
    reached = {n: epochs_to(details[n]["worker_epochs"], target) for n in ("asha", "full")}
    details["to_common_target"] = {"val_loss": target, **reached}
    extra = {"disturbed": asha["machine"]["disturbed"] or full["machine"]["disturbed"],
             "same_params": details["same_params"]}
    label = f"{case}, {samples} trials x {epochs} epochs"
    comparisons = [
        Comparison("tune_bench", f"{label}: epochs trained", len(asha["worker_epochs"]), len(full["worker_epochs"]),
                   BASELINE, "epochs", extra=extra),
        Comparison("tune_bench", f"{label}: wall time", asha["wall_s"], full["wall_s"], BASELINE, "s", extra=extra),
        Comparison("tune_bench", f"{label}: best val_loss", asha["best_val_loss"], full["best_val_loss"], BASELINE,
                   "", extra=extra)]
    if reached["asha"] and reached["full"]:
        comparisons.append(Comparison("tune_bench", f"{label}: epochs to the worse of the two best val_loss",
                                      reached["asha"]["epochs"], reached["full"]["epochs"], BASELINE, "epochs",
                                      extra=extra))
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, details, args)


if __name__ == "__main__":
    main()
