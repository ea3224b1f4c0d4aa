"""Benchmark of the training stage: raymlops' Ray Train loop vs plain PyTorch, and ASHA vs a full search.

What it measures (all in ONE invocation, on a local Ray started by ``ray_runtime(num_cpus=2)``)

1. Training throughput, samples/s = epochs x train rows / seconds, of

   * raymlops: ``run_training(cfg, data, run_name)`` (the real Ray Train V2 TorchTrainer with
     ``train_loop_per_worker``), once with ``num_workers=1, cpus_per_worker=1`` and once with
     ``num_workers=2, cpus_per_worker=1`` (DDP over gloo; ``batch_size`` is per worker, so the global
     batch doubles). Two figures each:
       - "whole run": the wall time of the ``run_training`` call (materialising the lazily transformed
         train/validation datasets, Ray Train controller + worker start-up, process group, every epoch
         with its validation pass and checkpoint, shutdown);
       - "steady state": per-epoch time between consecutive epoch reports. Each epoch's checkpoint
         directory is named by Ray with the wall-clock time of that ``ray.train.report`` call
         (``checkpoint_YYYY-mm-dd_HH-MM-SS.ffffff``); a thread polls
         ``<workdir>/checkpoints/<run_name>/`` every 20 ms and records every name it sees (Ray keeps
         only 2, so they are caught before deletion). steady epoch = (t_report_last - t_report_first) /
         (epochs - 1); an epoch there includes training, the validation pass (loss + AUC) and the
         checkpoint write, as the plain loop's "train+val" figure does.
   * plain torch (the named baseline): one process, no Ray, the same model (``build_model`` with the
     same ``ModelSpec.from_features`` / ``ModelConfig``, same seed), the same data (the transformed
     train/validation splits pulled into memory with ``ds.to_pandas()`` and turned into tensors ONCE by
     raymlops' own ``collate(spec, target)``), the same batch size, epochs, Adam learning rate, loss
     (``BCEWithLogitsLoss(reduction="sum")`` divided by the batch length), a fresh random permutation
     per epoch, and per epoch the same validation pass (batches of 4096, loss + sklearn AUC). Run with
     ``torch.set_num_threads(1)`` (what a Ray worker with 1 CPU gets: Ray sets OMP_NUM_THREADS to the
     worker's CPUs; the script checks this with a probe actor) and with ``torch.set_num_threads(2)``.
     Figures: "train+val" (epochs only) and "whole" (including ``to_pandas`` + collate + model build).
     A third plain variant calls ``collate`` per batch on shuffled numpy slices (as Ray's iterator does)
     to show what per-batch collation costs.
   * a diagnostic: Ray Data iteration alone in the driver (``iter_torch_batches`` over the materialised
     train split with the loop's batch size, ``collate_fn`` and ``local_shuffle_buffer_size``), with and
     without the local shuffle buffer, no model: the data-loading floor of an epoch.
   Ratios "raymlops / plain torch" are printed (<1 means raymlops is slower).

2. Time to first step. raymlops: time from calling ``run_training`` to the first epoch's checkpoint
   (the first report, from its directory name; the time it was first seen by the poller is printed
   too), plus an estimated time to the first optimizer step = first report - one steady epoch. The
   same poller records when the ``ray::TrainController`` and ``ray::RayTrainWorker`` processes first
   appear (psutil, every 0.1 s), which splits start-up into: materialise + controller start, worker
   start, worker set-up + epoch 0. plain torch: time from the start (before ``to_pandas``) to the end
   of the first ``optimizer.step()``, and from model build to it.

3. ASHA vs a full random search (``run_tuning``): the same search space, ``num_samples``,
   ``search_alg: random``, fixed ``training.seed``, 1 worker x 0.5 CPU per trial so 2 trials run at
   once; (a) ASHA as configured (grace_period 1, reduction_factor 2), (b) "full": grace_period = epochs,
   so ASHA's only rung is max_t and no trial is stopped early. raymlops does not seed random search
   (only Optuna gets ``training.seed``), so the script seeds numpy's and Python's global RNGs before
   each ``run_tuning`` (Tune's BasicVariantGenerator samples from numpy's global RNG when it has no
   ``random_state``) and checks that both searches drew the same trial parameters. Reported per search:
   wall seconds, the best val_loss, epochs as Tune saw them (``TuningResult.total_epochs``: results the
   driver processed) and epochs actually trained (a thread polls every trial's checkpoint folder every
   20 ms; each checkpoint name carries its worker-side report time, and the last checkpoint's
   state.json holds every trained epoch's val_loss; a trial that ASHA stops can have trained epochs Tune
   never processed). Epochs-to-best: all trained epochs of all trials ordered by worker-side report time;
   epochs-to-best = how many of them were done up to and including the first whose val_loss reached the
   target (its own best, and the worse of the two searches' bests, which both reach), with the seconds
   since ``run_tuning`` was called. The same is computed "as Tune saw it" from MLflow (Ray's
   ``MLflowLoggerCallback`` writes one metric point per processed result, with driver-side millisecond
   timestamps); the mean delay between a worker's report and MLflow's record of it is printed too.
   ASHA here is asynchronous: its stop decisions depend on the order in which results reach the driver,
   so repeated runs with the same trial parameters can stop different trials (and find a different best).

4. Diagnostic (``--no-poll-variant`` skips it): Ray is restarted with
   ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1`` in the environment and both raymlops training runs are
   repeated. Ray Train V2 workers hand each ``ray.train.report`` to a queue of size 1 that the
   controller drains at most every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (default 2 s), so a loop that
   reports every epoch blocks in ``report`` whenever its epochs are shorter than that; the variant
   shows how much of raymlops' per-epoch and shutdown time that is. Not a raymlops setting: raymlops
   runs as is in parts 1-3. The transformed train/validation splits are written to Parquet in the temp
   dir before the restart and read back (``run_training`` then materialises a Parquet read instead of
   the lazy feature transform, a few tenths of a second either way).

Noise
   Timings are only meaningful on an otherwise idle machine (2 cores). Before each timed section the
   script waits (up to ``--max-wait`` s) until other processes use < 25% of the CPUs, and measures the
   CPU time used by processes outside its own tree (the driver and its Ray processes) during the
   section; a section where they used > 5% of the machine is flagged "NOT quiet".

How to run (from the repository root; prepare the flights data first)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/train_bench.py            # full: flights throughput + smoke tuning
    .venv/bin/python benchmarks/train_bench.py --quick    # smoke config only, fewer epochs and trials

Options: ``--quick``, ``--epochs N`` (throughput epochs; default 3, quick 2), ``--tune-config
smoke|flights`` (default smoke), ``--tune-samples N`` (default 6, quick 4), ``--tune-epochs N`` (default 6,
quick 4), ``--no-tune``, ``--no-poll-variant``, ``--poll-interval S``
(default 0.1), ``--max-wait S`` (default 30). Results are printed and written to
benchmarks/out/train_bench.json (temp file, then renamed). Nothing is written into the repository's
.raymlops: the workdir and the MLflow store are in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
OUT_JSON = REPO / "benchmarks" / "out" / "train_bench.json"
CONFIGS = REPO / "configs"
NOISY_SHARE = 0.05
HC_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PLAIN_REPEAT = 3  # plain-torch runs are cheap: best (fastest) of 3 after a warm-up run; raymlops runs once each
CKPT_RE = re.compile(r"^checkpoint_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{6})$")
LOCAL_CKPT_RE = re.compile(r"^checkpoint_\d{6}$")  # written by the loop itself in local mode

if str(REPO) not in sys.path:  # run as a script from anywhere: import the repository's raymlops
    sys.path.insert(0, str(REPO))
os.environ["RAYMLOPS_PROGRESS"] = "0"  # before Ray (and Ray Data's context) is set up


# ------------------------------------------------------------------------------ machine noise
def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def _tree(psutil, root: int) -> set[int]:
    try:
        return {root} | {c.pid for c in psutil.Process(root).children(recursive=True)}
    except psutil.Error:
        return {root}


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25) -> dict[str, Any]:
    """Wait until processes outside this process tree use < threshold of the CPUs (at most max_wait_s)."""
    import psutil

    ncpu = os.cpu_count() or 1
    t0 = time.perf_counter()

    def foreign_share(seconds: float) -> float:
        ours = _tree(psutil, os.getpid())
        before = {}
        for p in psutil.process_iter(["pid", "cpu_times"]):
            if p.info["cpu_times"] is not None and p.info["pid"] not in ours:
                before[p.info["pid"]] = p.info["cpu_times"].user + p.info["cpu_times"].system
        time.sleep(seconds)
        used = 0.0
        for p in psutil.process_iter(["pid", "cpu_times"]):
            if p.info["cpu_times"] is not None and p.info["pid"] not in ours:
                used += max(0.0, p.info["cpu_times"].user + p.info["cpu_times"].system - before.get(p.info["pid"], 0.0))
        return used / (ncpu * seconds)

    busy = foreign_share(1.5)
    said = False
    while busy >= threshold and time.perf_counter() - t0 < max_wait_s:
        if not said:
            print(f"  (other processes use {busy:.0%} of the CPUs; waiting up to {max_wait_s:.0f} s ...)",
                  end="", flush=True)
            said = True
        busy = foreign_share(3.0)
    if said:
        print(f" {'ok' if busy < threshold else 'still busy, going on'} ({busy:.0%})", flush=True)
    return {"busy_before": round(busy, 3), "waited_s": round(time.perf_counter() - t0, 1)}


class ForeignCpu:
    """CPU seconds used during a section by this process tree vs every other process (polled every 1 s)."""

    def __init__(self, interval: float = 1.0):
        import psutil

        self.ps = psutil
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.ours: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self) -> None:
        self.ours |= _tree(self.ps, os.getpid())
        for p in self.ps.process_iter(["pid", "cpu_times", "create_time"]):
            ct = p.info["cpu_times"]
            if ct is None:
                continue
            pid, cpu = p.info["pid"], ct.user + ct.system
            if pid not in self.first:
                self.first[pid] = 0.0 if (p.info["create_time"] or 0) >= self.start - 0.5 else cpu
            self.last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception:  # noqa: BLE001, S110 - a poller must outlive vanishing processes and folders
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.start = time.time()
        self.t0 = time.perf_counter()
        self.j0 = _cpu_jiffies()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._poll()
        except Exception:  # noqa: BLE001, S110 - best effort final poll
            pass
        self.wall = time.perf_counter() - self.t0
        b1, t1 = _cpu_jiffies()
        self.busy = (b1 - self.j0[0]) / (t1 - self.j0[1]) if t1 > self.j0[1] else 0.0

    def result(self) -> dict[str, Any]:
        ncpu = os.cpu_count() or 1
        own = sum(self.last[p] - self.first[p] for p in self.last if p in self.ours)
        other = sum(max(0.0, self.last[p] - self.first[p]) for p in self.last if p not in self.ours)
        return {"wall_s": round(self.wall, 2), "own_cpu_s": round(own, 1), "other_cpu_s": round(other, 1),
                "other_share_of_machine": round(other / (ncpu * self.wall), 3) if self.wall else 0.0,
                "machine_busy_share": round(self.busy, 3)}


def section(name: str, max_wait_s: float):
    """Context: wait for a quiet machine, then monitor foreign CPU; results land in ``SECTIONS[name]``."""
    class _S:
        def __enter__(self):
            self.quiet = wait_for_quiet(max_wait_s)
            self.mon = ForeignCpu().__enter__()
            return self

        def __exit__(self, *exc):
            self.mon.__exit__(*exc)
            res = {**self.mon.result(), **self.quiet}
            res["disturbed"] = res["other_share_of_machine"] > NOISY_SHARE
            SECTIONS[name] = res
            flag = "  <-- NOT quiet: timings disturbed" if res["disturbed"] else ""
            print(f"   [machine during {name}: other processes used {res['other_share_of_machine']:.0%} of the "
                  f"CPUs, own tree {res['own_cpu_s']:.0f} CPU-s in {res['wall_s']:.0f} s]{flag}", flush=True)
            return False
    return _S()


SECTIONS: dict[str, dict[str, Any]] = {}


# -------------------------------------------------------------------------------------- configs
def make_config(case: str, workdir: Path, training: dict[str, Any], tuning: dict[str, Any] | None = None):
    import yaml

    from raymlops.config import parse_config

    path = CONFIGS / ("flights.yaml" if case == "flights" else "smoke.yaml")
    data = yaml.safe_load(path.read_text())
    data = copy.deepcopy(data)
    data["workdir"] = str(workdir)
    data["training"] = training
    data["tuning"] = tuning or {"enabled": False}
    data.pop("registry", None)
    return parse_config(data, source=f"{path} (benchmark overrides)", base_dir=str(path.parent))


def training_section(case: str, epochs: int, num_workers: int, cpus_per_worker: float, seed: int) -> dict[str, Any]:
    return {"num_workers": num_workers, "cpus_per_worker": cpus_per_worker, "epochs": epochs,
            "batch_size": 512 if case == "flights" else 128, "learning_rate": 0.002,
            "early_stopping_patience": 1000, "max_failures": 0, "seed": seed, "use_gpu": False}


# ---------------------------------------------------------------------------------- plain torch
def plain_torch(cfg, data, threads: int, per_batch_collate: bool = False) -> dict[str, Any]:
    """Single-process PyTorch on the same model/data/batching; no Ray except ``to_pandas`` to load the data."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from raymlops.model.mlp_worker import collate
    from raymlops.model.contract import ModelSpec
    from raymlops.model.mlp import build_model

    torch.set_num_threads(threads)
    t = cfg.training
    target = cfg.features.target
    t0 = time.perf_counter()
    train_df = data.datasets["train"].to_pandas()
    val_df = data.datasets["validation"].to_pandas()
    t_pandas = time.perf_counter() - t0
    spec = ModelSpec.from_features(data.features, cfg.model.task)
    fn = collate(spec, target)
    cols = [*spec.numeric, *spec.categorical, target]

    def arrays(df) -> dict[str, np.ndarray]:
        return {c: df[c].to_numpy() for c in cols}

    train_np, val_np = arrays(train_df), arrays(val_df)
    xn, xc, y = fn(train_np)
    vn, vc, vy = fn(val_np)
    n = len(y)
    t_loaded = time.perf_counter() - t0

    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    t_build0 = time.perf_counter()
    model = build_model(spec, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    first_step = None
    epoch_ends, train_secs, history = [], [], []
    t_epochs0 = time.perf_counter()
    for epoch in range(t.epochs):
        e0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(t.seed + epoch))
        perm_np = perm.numpy()
        for i in range(0, n, t.batch_size):
            if per_batch_collate:
                idx = perm_np[i:i + t.batch_size]
                bn, bc, by = fn({c: a[idx] for c, a in train_np.items()})
            else:
                idx = perm[i:i + t.batch_size]
                bn, bc, by = xn[idx], xc[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            out = model(bn, bc)
            loss = loss_fn(out.float(), by)
            (loss / max(1, len(by))).backward()
            optimizer.step()
            if first_step is None:
                first_step = time.perf_counter()
            total += loss.item()
            count += len(by)
        train_secs.append(time.perf_counter() - e0)
        model.eval()
        val_total, scores = 0.0, []
        with torch.no_grad():
            for i in range(0, len(vy), 4096):
                out = model(vn[i:i + 4096], vc[i:i + 4096]).float()
                val_total += loss_fn(out, vy[i:i + 4096]).item()
                scores.append(torch.sigmoid(out).numpy())
        s = np.concatenate(scores)
        auc = float(roc_auc_score(vy.numpy(), s)) if len(np.unique(vy.numpy())) == 2 else float("nan")
        history.append({"epoch": epoch, "train_loss": total / max(1, count), "val_loss": val_total / max(1, len(vy)),
                        "val_auc": auc, "train_rows": count})
        epoch_ends.append(time.perf_counter())
    end = time.perf_counter()
    epochs_s = end - t_epochs0
    train_only_s = sum(train_secs)
    rows = n * t.epochs
    return {
        "threads": threads, "per_batch_collate": per_batch_collate, "train_rows": n, "epochs": t.epochs,
        "batch_size": t.batch_size, "to_pandas_s": t_pandas, "load_s": t_loaded,
        "epochs_s": epochs_s, "train_only_s": train_only_s, "whole_s": end - t0,
        "epoch_s": [b - a for a, b in zip([t_epochs0, *epoch_ends[:-1]], epoch_ends)],
        "samples_per_s_train_val": rows / epochs_s, "samples_per_s_train_only": rows / train_only_s,
        "samples_per_s_whole": rows / (end - t0),
        "first_step_from_start_s": first_step - t0, "first_step_from_model_build_s": first_step - t_build0,
        "first_epoch_end_from_start_s": epoch_ends[0] - t0,
        "history": history,
    }


def ray_data_iteration(cfg, data, shuffle: bool) -> dict[str, Any]:
    """Ray Data's iterator over the materialised train split in the driver, same args as the loop, no model."""
    import torch

    from raymlops.model.mlp_worker import collate
    from raymlops.model.contract import ModelSpec

    torch.set_num_threads(1)
    t = cfg.training
    spec = ModelSpec.from_features(data.features, cfg.model.task)
    fn = collate(spec, cfg.features.target)
    ds = data.datasets["train"].materialize()
    kw = {"local_shuffle_buffer_size": 4 * t.batch_size, "local_shuffle_seed": t.seed} if shuffle else {}
    t0 = time.perf_counter()
    rows = 0
    with warnings.catch_warnings():  # Ray 2.47+ deprecates a plain function as collate_fn (the loop passes one)
        warnings.simplefilter("ignore")
        for _numeric, _categorical, y in ds.iter_torch_batches(batch_size=t.batch_size, collate_fn=fn, **kw):
            rows += len(y)
    s = time.perf_counter() - t0
    return {"shuffle_buffer": shuffle, "rows": rows, "seconds": s, "samples_per_s": rows / s}


# ------------------------------------------------------------------------------ raymlops training
class RunWatcher:
    """Polls a run's checkpoint folder (every 20 ms) and Ray's processes (every 0.1 s) in a thread."""

    def __init__(self, run_dir: Path):
        import psutil

        self.ps = psutil
        self.run_dir = run_dir
        self.ckpts: dict[str, dict[str, float]] = {}
        self.procs: dict[str, float] = {}
        self.worker_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.keys = ("ray::TrainController", "ray::RayTrainWorker")
        self.stale = {p.pid for p in psutil.process_iter(["cmdline"])  # left over from an earlier run
                      if " ".join(p.info["cmdline"] or []).startswith(self.keys)}

    def start(self) -> RunWatcher:
        self.t0 = time.perf_counter()
        self.wall0 = datetime.today()  # noqa: DTZ002 - naive local time, as Ray's date_str() names checkpoints
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _scan_procs(self) -> None:
        now = time.perf_counter() - self.t0
        for p in self.ps.process_iter(["pid", "cmdline"]):
            if p.info["pid"] in self.stale:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            for key in self.keys:
                if not cmd.startswith(key):
                    continue
                if key == "ray::RayTrainWorker" and p.info["pid"] not in self.worker_pids:
                    self.worker_pids.add(p.info["pid"])
                    self.procs.setdefault(f"worker{len(self.worker_pids)}", now)
                self.procs.setdefault(key, now)

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                if self.run_dir.is_dir():
                    for entry in os.listdir(self.run_dir):
                        if LOCAL_CKPT_RE.match(entry) and entry not in self.ckpts:  # local mode: renamed at report
                            seen = time.perf_counter() - self.t0
                            self.ckpts[entry] = {"seen_s": seen, "reported_s": seen}
                        m = CKPT_RE.match(entry)
                        if m and entry not in self.ckpts:
                            named = datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S.%f")
                            self.ckpts[entry] = {"seen_s": time.perf_counter() - self.t0,
                                                 "reported_s": (named - self.wall0).total_seconds()}
                if tick % 5 == 0:
                    self._scan_procs()
            except Exception:  # noqa: BLE001, S110 - a poller must outlive vanishing processes and folders
                pass
            tick += 1
            self._stop.wait(0.02)

    def reports(self) -> list[dict[str, float]]:
        return sorted(self.ckpts.values(), key=lambda c: c["reported_s"])


def raymlops_training(cfg, data, run_name: str) -> dict[str, Any]:
    from raymlops.training.trainer import run_training
    from raymlops.workspace import Workspace

    ws = Workspace(cfg.workdir_path).ensure()
    watcher = RunWatcher(ws.checkpoints / run_name).start()
    t0 = time.perf_counter()
    try:
        result = run_training(cfg, data, run_name=run_name)
    finally:
        wall = time.perf_counter() - t0
        watcher.stop()
    reports = watcher.reports()
    t = cfg.training
    n_train = data.split_rows["train"]
    out: dict[str, Any] = {
        "num_workers": t.num_workers, "cpus_per_worker": t.cpus_per_worker, "epochs": t.epochs,
        "batch_size_per_worker": t.batch_size, "train_rows": n_train, "whole_s": wall,
        "result_seconds": result.seconds, "epochs_run": result.epochs_run,
        "rows_trained_per_epoch": [h.get("train_rows") for h in result.history],
        "history": [{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_auc") if k in h}
                    for h in result.history],
        "reports": reports, "processes_first_seen_s": watcher.procs,
        "samples_per_s_whole": result.epochs_run * n_train / wall,
    }
    if len(reports) == result.epochs_run and reports:
        r = [c["reported_s"] for c in reports]
        out["first_report_s"] = r[0]
        out["first_checkpoint_seen_s"] = reports[0]["seen_s"]
        out["epoch_report_intervals_s"] = [b - a for a, b in itertools.pairwise(r)]
        out["last_report_to_return_s"] = wall - r[-1]
        if len(r) >= 2:
            steady = (r[-1] - r[0]) / (len(r) - 1)
            out["steady_epoch_s"] = steady
            out["samples_per_s_steady"] = n_train / steady
            out["est_first_step_s"] = r[0] - steady
            ctrl = watcher.procs.get("ray::TrainController")
            w1 = watcher.procs.get("ray::RayTrainWorker")
            out["startup_breakdown_s"] = {
                "call -> TrainController up (materialise datasets, trainer, controller actor)": ctrl,
                "TrainController up -> first RayTrainWorker up": (w1 - ctrl) if ctrl is not None and w1 else None,
                "first worker up -> est. first step (imports, process group, dataset shard, iterator)":
                    (r[0] - steady - w1) if w1 else None,
                "epochs (first step -> last report)": r[-1] - (r[0] - steady),
                "last report -> run_training returns (shutdown)": wall - r[-1],
            }
    else:
        out["note"] = (f"saw {len(reports)} checkpoint names for {result.epochs_run} epochs: per-epoch timing "
                       "unavailable")
    return out


def omp_probe() -> dict[str, Any]:
    """What torch thread count a Ray actor with 1 (and 0.5) CPU gets, as a Ray Train worker with those CPUs."""
    import ray

    @ray.remote
    class Probe:
        def threads(self):
            import torch

            return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}

    res = {}
    for cpus in (1, 0.5):
        a = Probe.options(num_cpus=cpus).remote()
        res[f"num_cpus={cpus}"] = ray.get(a.threads.remote())
        ray.kill(a)
    return res


# ------------------------------------------------------------------------------------- tuning
class TrialCheckpointWatcher:
    """Records every checkpoint name (= worker-side report time) of every trial's Ray Train run, every 20 ms."""

    def __init__(self, root: Path, run_name: str):
        self.root, self.prefix, self.skip = root, f"{run_name}-", f"{run_name}-tune"
        self.seen: dict[str, dict[str, float]] = {}  # trial dir -> {checkpoint name: report time, s}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> TrialCheckpointWatcher:
        self.wall0 = datetime.today()  # noqa: DTZ002 - as Ray's date_str()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def _scan(self) -> None:
        if not self.root.is_dir():
            return
        for d in os.listdir(self.root):
            if not d.startswith(self.prefix) or d == self.skip:
                continue
            names = self.seen.setdefault(d, {})
            try:
                entries = os.listdir(self.root / d)
            except OSError:
                continue
            for entry in entries:
                m = CKPT_RE.match(entry)
                if m and entry not in names:
                    named = datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S.%f")
                    names[entry] = (named - self.wall0).total_seconds()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan()
            except Exception:  # noqa: BLE001, S110 - a poller must outlive vanishing processes and folders
                pass
            self._stop.wait(0.02)

    def epochs(self) -> list[dict[str, Any]]:
        """One row per epoch a trial's workers finished: trial, epoch, worker-side report time, val_loss."""
        rows = []
        for d, names in self.seen.items():
            trial_id = d[len(self.prefix):]
            history: list[dict[str, Any]] = []
            for entry in os.listdir(self.root / d) if (self.root / d).is_dir() else []:
                state = self.root / d / entry / "state.json"
                try:
                    h = json.loads(state.read_text()).get("history", [])
                except (OSError, ValueError):
                    continue
                if len(h) > len(history):
                    history = h
            times = sorted(names.values())
            for i, t in enumerate(times):
                val = history[i]["val_loss"] if i < len(history) else float("nan")
                rows.append({"trial_id": trial_id, "epoch": i, "report_s": t, "val_loss": val})
        rows.sort(key=lambda r: r["report_s"])
        return rows


def _to_best(rows: list[dict[str, Any]], target: float, time_key: str) -> dict[str, Any] | None:
    for i, r in enumerate(rows):
        if r["val_loss"] <= target + 1e-12:
            return {"epochs": i + 1, "seconds": r[time_key], "trial_id": r["trial_id"], "epoch": r["epoch"]}
    return None


def tuning_run(cfg, data, run_name: str, tracking_uri: str, experiment: str, seed: int) -> dict[str, Any]:
    import numpy as np
    from mlflow.tracking import MlflowClient

    from raymlops.training.tuning import run_tuning
    from raymlops.workspace import Workspace

    ws = Workspace(cfg.workdir_path).ensure()
    np.random.seed(seed)  # raymlops passes no random_state to random search: seed the global RNG it falls back to
    random.seed(seed)
    watcher = TrialCheckpointWatcher(ws.checkpoints, run_name).start()
    t0 = time.perf_counter()
    t0_ms = time.time() * 1000
    try:
        res = run_tuning(cfg, data, run_name, tracking_uri=tracking_uri, experiment=experiment, parent_run_id=None)
    finally:
        wall = time.perf_counter() - t0
        watcher.stop()
    computed = watcher.epochs()  # what the workers actually trained (worker-side times)

    # What Tune (and MLflow) saw: one MLflow metric point per result the driver processed, driver-side times.
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    seen, timeline = [], []
    worker_time = {(r["trial_id"], r["epoch"]): r["report_s"] for r in computed}
    lags = []
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        trial_id = next((tr.trial_id for tr in res.trials if run.info.run_name.endswith(tr.trial_id)), run.info.run_name)
        hist = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
        for m in hist:
            t = (m.timestamp - t0_ms) / 1000
            seen.append({"trial_id": trial_id, "epoch": m.step - 1, "logged_s": t, "val_loss": m.value})
            if (trial_id, m.step - 1) in worker_time:
                lags.append(t - worker_time[(trial_id, m.step - 1)])
        start = (run.info.start_time - t0_ms) / 1000 if run.info.start_time else None
        w = sorted(r["report_s"] for r in computed if r["trial_id"] == trial_id)
        timeline.append({"trial_id": trial_id, "epochs_seen_by_tune": len(hist), "epochs_trained": len(w),
                         "mlflow_start_s": start,
                         "mlflow_end_s": (run.info.end_time - t0_ms) / 1000 if run.info.end_time else None,
                         "start_to_first_worker_report_s": (w[0] - start) if w and start is not None else None,
                         "worker_epoch_intervals_s": [b - a for a, b in itertools.pairwise(w)]})
    seen.sort(key=lambda r: r["logged_s"])
    timeline.sort(key=lambda r: r["mlflow_start_s"] or 0)
    trials = [{"trial_id": tr.trial_id, "params": tr.params, "epochs": tr.epochs,
               "best_val_loss": tr.best_val_loss, "status": tr.status} for tr in res.trials]
    best = min((tr.best_val_loss for tr in res.trials if not math.isnan(tr.best_val_loss)), default=float("nan"))
    return {"grace_period": cfg.tuning.grace_period, "reduction_factor": cfg.tuning.reduction_factor,
            "max_t": cfg.training.epochs, "num_samples": cfg.tuning.num_samples, "wall_s": wall,
            "total_epochs": res.total_epochs, "epochs_trained": len(computed), "best_val_loss": best,
            "best_overrides": res.best_overrides, "trials": trials, "mlflow_epoch_reports": len(seen),
            "result_lag_s": {"mean": sum(lags) / len(lags), "max": max(lags)} if lags else None,
            "trial_timeline": timeline, "worker_epochs": computed, "tune_epochs": seen}


def add_to_best(r: dict[str, Any], target: float) -> None:
    """Epochs (and seconds) until val_loss <= target: over epochs trained (worker times) and as Tune saw them."""
    r["to_target"] = {"target_val_loss": target,
                      "trained": _to_best(r["worker_epochs"], target, "report_s"),
                      "seen_by_tune": _to_best(r["tune_epochs"], target, "logged_s")}


def tuning_cfg(case: str, workdir: Path, epochs: int, samples: int, grace: int, seed: int):
    training = training_section(case, epochs, 1, 0.5, seed)
    training["batch_size"] = 256 if case == "flights" else 128
    tuning = {"enabled": True, "num_samples": samples, "max_concurrent_trials": 2, "search_alg": "random",
              "grace_period": grace, "reduction_factor": 2,
              "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                               "hidden_sizes": {"type": "choice", "values": [[8], [32, 16], [64, 32]]},
                               "dropout": {"type": "uniform", "low": 0.0, "high": 0.3}}}
    return make_config(case, workdir, training, tuning)


# -------------------------------------------------------------------------------------- output
def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty_files": git("status", "--porcelain", "raymlops").splitlines()}


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_throughput(res: dict[str, Any]) -> None:
    plain = res["plain"]
    print("\n== 1. training throughput (samples/s = epochs x train rows / seconds; higher is better) ==")
    p1 = plain["threads1"]
    print(f"   data: {res['case']} train split {p1['train_rows']:,} rows, validation "
          f"{res['split_rows']['validation']:,} rows; {p1['epochs']} epochs, batch {p1['batch_size']} "
          f"(per worker for raymlops), Adam lr {res['learning_rate']}, model {res['model']}")
    print(f"   torch threads in a Ray worker (probe actor): {res['omp_probe']}")
    for key, label in (("threads1", "plain torch, 1 thread (baseline)"), ("threads2", "plain torch, 2 threads"),
                       ("threads1_per_batch_collate", "plain torch, 1 thread, collate per batch")):
        p = plain.get(key)
        if not p:
            continue
        print(f"   {label:44s} train+val {p['samples_per_s_train_val']:9,.0f}/s  train-only "
              f"{p['samples_per_s_train_only']:9,.0f}/s  whole (incl. to_pandas+collate {p['load_s']:.1f} s) "
              f"{p['samples_per_s_whole']:9,.0f}/s   epochs {' '.join(_f(e) for e in p['epoch_s'])} s")
    for d in res.get("ray_data_iteration", []):
        print(f"   Ray Data iter_torch_batches in the driver, no model, shuffle buffer "
              f"{'4xbatch' if d['shuffle_buffer'] else 'off    '}: {d['samples_per_s']:9,.0f}/s ({d['seconds']:.2f} s/epoch)")
    for key in ("raymlops_w0", "raymlops_w1", "raymlops_w2"):
        r = res.get(key)
        if not r:
            continue
        if "error" in r:
            print(f"   raymlops {key}: FAILED: {r['error']}")
            continue
        label = f"raymlops run_training, {r['num_workers']} worker(s) x {r['cpus_per_worker']:g} CPU"
        print(f"   {label:44s} whole run {r['samples_per_s_whole']:9,.0f}/s ({r['whole_s']:.1f} s for "
              f"{r['epochs_run']} epochs)   steady {_f(r.get('samples_per_s_steady'), ',.0f')}/s "
              f"({_f(r.get('steady_epoch_s'))} s/epoch; report intervals "
              f"{' '.join(_f(x) for x in r.get('epoch_report_intervals_s', []))} s)   rows/epoch "
              f"{r['rows_trained_per_epoch']}")
    print("\n   ratios raymlops / plain torch (samples/s; <1 = raymlops slower):")
    for key in ("raymlops_w0", "raymlops_w1", "raymlops_w2"):
        r = res.get(key)
        if not r or "error" in r:
            continue
        for pkey, plabel in (("threads1", "plain 1 thread"), ("threads2", "plain 2 threads")):
            p = plain[pkey]
            whole = r["samples_per_s_whole"] / p["samples_per_s_whole"]
            steady = (r["samples_per_s_steady"] / p["samples_per_s_train_val"]) if "samples_per_s_steady" in r else None
            print(f"     {r['num_workers']} worker(s) vs {plabel:15s}: whole run / plain whole {whole:7.4f}x   "
                  f"steady epoch / plain train+val epoch {_f(steady, '7.4f')}x")


def print_first_step(res: dict[str, Any]) -> None:
    print("\n== 2. time to first step ==")
    for pkey, plabel in (("threads1", "1 thread"), ("threads2", "2 threads")):
        p = res["plain"][pkey]
        print(f"   plain torch ({plabel}): first optimizer.step() done {p['first_step_from_start_s']:.2f} s after start "
              f"(to_pandas + collate {p['load_s']:.2f} s, then {p['first_step_from_model_build_s'] * 1000:.1f} ms from "
              f"model build); first epoch (train+val) done at {p['first_epoch_end_from_start_s']:.2f} s")
    for key in ("raymlops_w0", "raymlops_w1", "raymlops_w2"):
        r = res.get(key)
        if not r or "first_report_s" not in r:
            continue
        print(f"   raymlops {r['num_workers']} worker(s): first epoch's checkpoint reported {r['first_report_s']:.2f} s "
              f"after calling run_training (first seen on disk {r['first_checkpoint_seen_s']:.2f} s); "
              f"est. first step {_f(r.get('est_first_step_s'))} s (= first report - one steady epoch)")
        for k, v in (r.get("startup_breakdown_s") or {}).items():
            print(f"       {k:90s} {_f(v):>7s} s")


def print_tuning(res: dict[str, Any]) -> None:
    print("\n== 3. ASHA vs full random search (run_tuning) ==")
    a, f = res.get("asha"), res.get("full")
    print(f"   config {res['case']}, {res['num_samples']} samples, max_t {res['epochs']} epochs, search_alg random, "
          f"training.seed {res['seed']} (+ numpy/random global seed), 1 worker x 0.5 CPU/trial, 2 trials at once; "
          f"space {res['space']}")
    print(f"   same trial parameters in both searches: {res.get('same_params')}")
    rows = (("ASHA (grace 1, rf 2)", a), (f"full (grace {res['epochs']} = max_t)", f))
    for name, r in rows:
        if not r:
            continue
        if "error" in r:
            print(f"   {name}: FAILED: {r['error']}")
            continue
        print(f"   {name:24s} epochs seen by Tune (TuningResult.total_epochs) {r['total_epochs']:3d}, epochs actually "
              f"trained {r['epochs_trained']:3d}; wall {r['wall_s']:6.1f} s; best val_loss {r['best_val_loss']:.5f}")
        print(f"   {'':24s} epochs per trial (trials in start order) seen by Tune "
              f"{[x['epochs_seen_by_tune'] for x in r['trial_timeline']]}, trained "
              f"{[x['epochs_trained'] for x in r['trial_timeline']]}")
        tl = [x for x in r["trial_timeline"] if x["start_to_first_worker_report_s"] is not None]
        if tl:
            iv = [i for x in tl for i in x["worker_epoch_intervals_s"]]
            print(f"   {'':24s} per trial: trial start -> first epoch report {sum(x['start_to_first_worker_report_s'] for x in tl) / len(tl):.1f} s "
                  f"(mean), later epochs {_f(sum(iv) / len(iv) if iv else None)} s (mean, worker-side); "
                  f"Tune/MLflow saw each result {_f((r['result_lag_s'] or {}).get('mean'))} s (mean; max "
                  f"{_f((r['result_lag_s'] or {}).get('max'))} s) after the worker reported it")
    if a and f and "error" not in a and "error" not in f:
        print("   epochs-to-best (epoch reports of all trials ordered by worker-side report time, counted up to the first "
              "that reached the target val_loss; 'as Tune saw it' orders MLflow's driver-side times instead):")
        for target_name, key in (("its own best", "own"), ("the worse of the two bests", "common")):
            print(f"     target = {target_name}:")
            for name, r in rows:
                tt = r["to_best"][key]
                tr, sn = tt["trained"], tt["seen_by_tune"]
                print(f"       {name:24s} val_loss <= {tt['target_val_loss']:.5f}: {tr['epochs'] if tr else 'n/a'} epochs "
                      f"trained / {_f(tr['seconds'] if tr else None, '.1f')} s; as Tune saw it {sn['epochs'] if sn else 'n/a'} "
                      f"epochs / {_f(sn['seconds'] if sn else None, '.1f')} s")
        ca, cf = a["to_best"]["common"]["trained"], f["to_best"]["common"]["trained"]
        print(f"   ratios ASHA / full: epochs seen by Tune {a['total_epochs'] / f['total_epochs']:.3f}x, epochs trained "
              f"{a['epochs_trained'] / f['epochs_trained']:.3f}x, wall {a['wall_s'] / f['wall_s']:.3f}x, epochs to the "
              f"common target {_f(ca['epochs'] / cf['epochs'] if ca and cf else None, '.3f')}x, best val_loss "
              f"{a['best_val_loss'] / f['best_val_loss']:.4f}x (ASHA - full = {a['best_val_loss'] - f['best_val_loss']:+.5f})")


def print_poll_variant(thr: dict[str, Any], var: dict[str, Any], interval: float) -> None:
    print(f"\n== 4. diagnostic: the same raymlops runs with {HC_ENV}={interval:g} (Ray's default 2 s), Ray restarted ==")
    p1 = thr["plain"]["threads1"]
    for key in ("raymlops_w0", "raymlops_w1", "raymlops_w2"):
        a, b = thr.get(key) or {}, var.get(key) or {}
        if "error" in a or "error" in b or not a or not b:
            print(f"   {key}: n/a ({a.get('error') or b.get('error') or 'not run'})")
            continue
        for label, r in (("default 2 s", a), (f"{interval:g} s", b)):
            print(f"   raymlops {r['num_workers']} worker(s), poll {label:11s}: whole run {r['whole_s']:5.1f} s "
                  f"({r['samples_per_s_whole']:7,.0f}/s, {r['samples_per_s_whole'] / p1['samples_per_s_whole']:.4f}x plain 1 thread), "
                  f"first report {_f(r.get('first_report_s'))} s, steady epoch {_f(r.get('steady_epoch_s'))} s "
                  f"({_f(r.get('samples_per_s_steady'), ',.0f')}/s, "
                  f"{_f(r['samples_per_s_steady'] / p1['samples_per_s_train_val'] if 'samples_per_s_steady' in r else None, '.4f')}x "
                  f"plain 1 thread), report intervals {' '.join(_f(x) for x in r.get('epoch_report_intervals_s', []))} s, "
                  f"last report -> return {_f(r.get('last_report_to_return_s'))} s")


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke config only, fewer epochs and trials")
    parser.add_argument("--epochs", type=int, help="epochs of the throughput runs (default 3; quick 2)")
    parser.add_argument("--tune-config", choices=["smoke", "flights"], default="smoke")
    parser.add_argument("--tune-samples", type=int, help="trials per search (default 6; quick 4)")
    parser.add_argument("--tune-epochs", type=int, help="max epochs per trial (default 6; quick 4)")
    parser.add_argument("--no-tune", action="store_true", help="skip part 3 (ASHA vs full search)")
    parser.add_argument("--no-poll-variant", action="store_true",
                        help="skip part 4 (raymlops training again with a shorter Ray Train controller poll interval)")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help=f"{HC_ENV} for part 4 (default 0.1 s; Ray's default is 2 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="before each section wait up to this many s for other processes to go quiet")
    args = parser.parse_args()
    case = "smoke" if args.quick else "flights"
    epochs = args.epochs or (2 if args.quick else 3)
    tune_case = "smoke" if args.quick else args.tune_config
    tune_samples = args.tune_samples or (4 if args.quick else 6)
    tune_epochs = args.tune_epochs or (4 if args.quick else 6)
    if epochs < 2:
        parser.error("--epochs must be at least 2 (steady state needs two epoch reports)")
    if case == "flights" and not (REPO / "examples/flights/data/flights/2013-04.parquet").is_file():
        raise SystemExit("flights data missing; run: .venv/bin/python examples/flights/prepare.py --out "
                         "examples/flights/data (or use --quick)")

    import ray
    import torch

    from raymlops.data.stage import run_data_stage
    from raymlops.runtime.session import ray_runtime

    started = time.perf_counter()
    env_at_start = {HC_ENV: os.environ.get(HC_ENV)}  # parts 1-3 run with whatever the caller set (normally unset)
    tmp = Path(tempfile.mkdtemp(prefix="train_bench."))
    results: dict[str, Any] = {}
    try:
        t_ray = time.perf_counter()
        with ray_runtime(num_cpus=2) as rt:
            ray_startup = time.perf_counter() - t_ray
            print(f"train_bench ({'quick' if args.quick else 'full'}): Ray {ray.__version__} started in "
                  f"{ray_startup:.1f} s with {rt.num_cpus:g} CPUs; torch {torch.__version__}; temp dir {tmp}",
                  flush=True)

            # ---------------------------------------------------------------- 1 + 2: throughput
            cfg1 = make_config(case, tmp / "work", training_section(case, epochs, 1, 1, args.seed))
            t = time.perf_counter()
            data = run_data_stage(cfg1)
            print(f"data stage ({case}): {time.perf_counter() - t:.1f} s, splits {data.split_rows}", flush=True)
            t = time.perf_counter()
            data.datasets["train"].materialize()
            data.datasets["validation"].materialize()
            materialize_s = time.perf_counter() - t
            thr: dict[str, Any] = {
                "case": case, "split_rows": data.split_rows, "learning_rate": cfg1.training.learning_rate,
                "model": cfg1.model.model_dump(), "materialize_train_val_s": materialize_s,
                "omp_probe": omp_probe(), "plain": {}}
            results["throughput"] = thr
            print(f"materialising the lazily transformed train+validation splits (done inside every run_training): "
                  f"{materialize_s:.2f} s", flush=True)

            with section("plain torch", args.max_wait):
                for threads in (1, 2):
                    plain_torch(cfg1, data, threads)  # warm-up (imports, allocator, Ray Data to_pandas path)
                    reps = [plain_torch(cfg1, data, threads) for _ in range(PLAIN_REPEAT)]
                    p = min(reps, key=lambda r: r["epochs_s"])
                    p["epochs_s_all_reps"] = [r["epochs_s"] for r in reps]
                    thr["plain"][f"threads{threads}"] = p
                    print(f"plain torch {threads} thread(s): {p['epochs_s']:.2f} s for {epochs} epochs "
                          f"(train-only {p['train_only_s']:.2f} s), whole {p['whole_s']:.2f} s "
                          f"(best of {PLAIN_REPEAT}: {' '.join(f'{x:.2f}' for x in p['epochs_s_all_reps'])} s)", flush=True)
                reps = [plain_torch(cfg1, data, 1, per_batch_collate=True) for _ in range(PLAIN_REPEAT)]
                thr["plain"]["threads1_per_batch_collate"] = min(reps, key=lambda r: r["epochs_s"])
                thr["ray_data_iteration"] = [ray_data_iteration(cfg1, data, shuffle=s) for s in (True, False)]
            torch.set_num_threads(2)

            # 0 workers: Ray Train's local mode, the loop in this process (what num_workers auto picks here)
            for key, workers in (("raymlops_w0", 0), ("raymlops_w1", 1), ("raymlops_w2", 2)):
                cfg = make_config(case, tmp / "work", training_section(case, epochs, workers, 1, args.seed))
                with section(f"raymlops {workers} worker(s)", args.max_wait):
                    try:
                        thr[key] = raymlops_training(cfg, data, run_name=f"bench-w{workers}")
                        r = thr[key]
                        print(f"raymlops {workers} worker(s): run_training {r['whole_s']:.1f} s, steady epoch "
                              f"{_f(r.get('steady_epoch_s'))} s", flush=True)
                    except Exception as exc:  # noqa: BLE001 - report and go on with the other parts
                        thr[key] = {"error": f"{type(exc).__name__}: {exc}"}
                        print(f"raymlops {workers} worker(s) FAILED: {exc}", flush=True)
            print_throughput(thr)
            print_first_step(thr)
            if not args.no_poll_variant:  # part 4 runs on a new Ray: keep the transformed splits on disk for it
                for split in ("train", "validation"):
                    data.datasets[split].write_parquet(str(tmp / "splits" / split))

            # ---------------------------------------------------------------- 3: ASHA vs full
            if not args.no_tune:
                tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
                tun: dict[str, Any] = {"case": tune_case, "num_samples": tune_samples, "epochs": tune_epochs,
                                       "seed": args.seed}
                results["tuning"] = tun
                tdata = None
                for name, grace in (("asha", 1), ("full", tune_epochs)):
                    cfg = tuning_cfg(tune_case, tmp / "work-tune", tune_epochs, tune_samples, grace, args.seed)
                    tun["space"] = {k: v.model_dump() for k, v in cfg.tuning.search_space.items()}
                    if tdata is None:
                        tdata = data if tune_case == case else run_data_stage(cfg)
                        tun["train_rows"] = tdata.split_rows["train"]
                    with section(f"tuning {name}", args.max_wait):
                        try:
                            tun[name] = tuning_run(cfg, tdata, f"bench-{name}", tracking_uri, f"bench-{name}",
                                                   args.seed)
                            print(f"tuning {name}: {tun[name]['wall_s']:.1f} s, {tun[name]['total_epochs']} epochs",
                                  flush=True)
                        except Exception as exc:  # noqa: BLE001 - report and go on
                            tun[name] = {"error": f"{type(exc).__name__}: {exc}"}
                            print(f"tuning {name} FAILED: {exc}", flush=True)
                if all("trials" in tun.get(n, {}) for n in ("asha", "full")):
                    key = lambda r: sorted(json.dumps(t["params"], sort_keys=True) for t in r["trials"])
                    tun["same_params"] = key(tun["asha"]) == key(tun["full"])
                    common = max(tun["asha"]["best_val_loss"], tun["full"]["best_val_loss"])
                    for n in ("asha", "full"):
                        r = tun[n]
                        r["to_best"] = {"own": {"target_val_loss": r["best_val_loss"]}, "common": {}}
                        add_to_best(r, r["best_val_loss"])
                        r["to_best"]["own"] = r.pop("to_target")
                        add_to_best(r, common)
                        r["to_best"]["common"] = r.pop("to_target")
                print_tuning(tun)

        # -------------------------------------------- 4: diagnostic, Ray Train's controller poll interval
        if not args.no_poll_variant:
            # Ray Train V2 workers put each report into a queue of size 1 that the controller drains at most
            # every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s): epochs shorter than that block in
            # ray.train.report. The controller reads the variable in its own process, so Ray is restarted.
            os.environ[HC_ENV] = str(args.poll_interval)
            var: dict[str, Any] = {"env": {HC_ENV: args.poll_interval}}
            results["poll_interval_variant"] = var
            with ray_runtime(num_cpus=2):
                data = dataclasses.replace(data, datasets={  # the same transformed rows, read back from Parquet
                    split: ray.data.read_parquet(str(tmp / "splits" / split)) for split in ("train", "validation")})
                for key, workers in (("raymlops_w1", 1), ("raymlops_w2", 2)):
                    cfg = make_config(case, tmp / "work", training_section(case, epochs, workers, 1, args.seed))
                    with section(f"raymlops {workers}w, poll {args.poll_interval:g} s", args.max_wait):
                        try:
                            var[key] = raymlops_training(cfg, data, run_name=f"bench-poll-w{workers}")
                        except Exception as exc:  # noqa: BLE001 - report and go on
                            var[key] = {"error": f"{type(exc).__name__}: {exc}"}
            if env_at_start[HC_ENV] is None:
                os.environ.pop(HC_ENV, None)
            else:
                os.environ[HC_ENV] = env_at_start[HC_ENV]
            print_poll_variant(thr, var, args.poll_interval)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    meta = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if args.quick else "full",
            "python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__,
            "cpus": os.cpu_count(), "memory_gib": round(mem, 1), "ray_num_cpus": 2, "git": _git_state(),
            "wall_s": time.perf_counter() - started, "args": vars(args), "env_at_start": env_at_start}
    print("\n== machine noise per section (other processes' share of the CPUs) ==")
    for name, s in SECTIONS.items():
        print(f"   {name:26s} {s['other_share_of_machine']:5.0%}{'  <-- NOT quiet' if s['disturbed'] else ''}")
    from raymlops.workspace import write_json_atomic

    write_json_atomic(OUT_JSON, {"meta": meta, "sections": SECTIONS, **results})
    print(f"\nwrote {OUT_JSON.relative_to(REPO)} (total benchmark wall time {meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
