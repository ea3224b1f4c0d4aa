"""The training stage: samples/s and time to the first step of raymlops' training loop, against the named
baseline "plain PyTorch, 1 thread" (``baselines/plain_torch.py``: the same model, data and batching in
one process, no Ray; 2 threads for the 2-worker run).

What is timed (one invocation, a local Ray from ``ray_runtime(num_cpus=2)``)
    raymlops: ``run_training(cfg, data, run_name)`` with ``num_workers`` 0 (Ray Train's local mode, the
    loop in this process), 1 and 2 (``cpus_per_worker`` 1; DDP over gloo, ``batch_size`` per worker):
    * "whole run": the ``run_training`` call (materialising the lazily transformed splits, controller and
      worker start-up, every epoch with its validation pass and checkpoint, shutdown);
    * "steady epoch": the time between consecutive epoch reports. Ray names each epoch's checkpoint
      folder with the wall-clock time of its ``ray.train.report`` (``checkpoint_YYYY-mm-dd_HH-MM-SS.ffffff``);
      a thread lists the run's checkpoint folder every 20 ms and keeps every name (Ray keeps only 2).
      steady epoch = (last report - first report) / (epochs - 1), validation and checkpoint included, as
      the plain loop's "train+val" epoch is;
    * time to the first step: first report - one steady epoch; the same thread records when the
      ``ray::TrainController`` and ``ray::RayTrainWorker`` processes appear, which splits start-up.
    plain PyTorch: best of 3 runs after a warm-up, with 1 and 2 torch threads (a 1-CPU Ray
    worker gets 1: Ray sets OMP_NUM_THREADS, which a probe actor checks), and once with ``collate`` per
    batch; its time to the first step runs from before ``to_pandas``.
    A diagnostic without a baseline: Ray Data's ``iter_torch_batches`` alone over the train split, the
    loop's data-loading floor.

How to run (from the repository root; prepare the flights data first)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/train_bench.py            # flights, 3 epochs, 0/1/2 workers
    .venv/bin/python benchmarks/train_bench.py --quick    # smoke config, 2 epochs, 0/1 workers

ASHA against a full search: ``benchmarks/tune_bench.py``. Writes ``benchmarks/out/train_bench.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import tempfile
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from harness import REPO, Comparison

CKPT_RE = re.compile(r"^checkpoint_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{6})$")
LOCAL_CKPT_RE = re.compile(r"^checkpoint_\d{6}$")  # written by the loop itself in local mode, at report
BASELINE = "plain PyTorch, {} thread(s)"
PLAIN_REPEAT = 3  # plain runs are cheap: the best of 3 after a warm-up; raymlops runs once per worker count
os.environ["RAYMLOPS_PROGRESS"] = "0"  # before Ray (and Ray Data's context) is set up


def make_config(case: str, workdir: Path, epochs: int, workers: int, seed: int):
    training = {"num_workers": workers, "cpus_per_worker": 1, "epochs": epochs,
                "batch_size": 512 if case == "flights" else 128, "learning_rate": 0.002,
                "early_stopping_patience": 1000, "max_failures": 0, "seed": seed, "use_gpu": False}

    def edit(data: dict[str, Any]) -> None:
        data.update(training=training, tuning={"enabled": False})
        data.pop("registry", None)

    return harness.bench_config(case, workdir, edit)


class RunWatcher:
    """Lists a run's checkpoint folder every 20 ms and Ray Train's processes every 0.1 s, in a thread."""

    KEYS = ("ray::TrainController", "ray::RayTrainWorker")

    def __init__(self, run_dir: Path):
        import psutil

        self.ps, self.run_dir = psutil, run_dir
        self.ckpts: dict[str, float] = {}  # checkpoint name -> report time, s since start
        self.procs: dict[str, float] = {}  # process kind -> first seen, s since start
        self.stale = {p.pid for p in psutil.process_iter(["cmdline"])  # left over from an earlier run
                      if " ".join(p.info["cmdline"] or []).startswith(self.KEYS)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RunWatcher:
        self.t0 = time.perf_counter()
        self.wall0 = datetime.today()  # noqa: DTZ002 - naive local time, as Ray names checkpoints
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan(procs=False)  # a loop in this process can starve the thread: the names are still on disk

    def _scan(self, procs: bool) -> None:
        now = time.perf_counter() - self.t0
        for entry in os.listdir(self.run_dir) if self.run_dir.is_dir() else []:
            if entry in self.ckpts:
                continue
            if LOCAL_CKPT_RE.match(entry):  # renamed into place at its report: the rename sets its ctime
                self.ckpts[entry] = (self.run_dir / entry).stat().st_ctime - self.wall0.timestamp()
            elif m := CKPT_RE.match(entry):
                self.ckpts[entry] = (datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S.%f") - self.wall0).total_seconds()
        for p in self.ps.process_iter(["pid", "cmdline"]) if procs else []:
            cmd = " ".join(p.info["cmdline"] or [])
            for key in self.KEYS if p.info["pid"] not in self.stale else ():
                if cmd.startswith(key):
                    self.procs.setdefault(key, now)

    def _loop(self) -> None:
        for tick in itertools.count():
            if self._stop.wait(0.02):
                return
            try:
                self._scan(procs=tick % 5 == 0)
            except (OSError, self.ps.Error):
                continue

    def reports(self) -> list[float]:
        return sorted(self.ckpts.values())


def raymlops_training(cfg, data, run_name: str) -> dict[str, Any]:
    from raymlops.training.trainer import run_training
    from raymlops.workspace import Workspace

    ws = Workspace(cfg.workdir_path).ensure()
    with RunWatcher(ws.checkpoints / run_name) as watcher:
        result, usage = harness.measure(lambda: run_training(cfg, data, run_name=run_name))
    r, n = watcher.reports(), data.split_rows["train"]
    out: dict[str, Any] = {"num_workers": cfg.training.num_workers, "whole_s": usage.wall_s,
                           "driver_cpu_s": usage.cpu_s, "epochs_run": result.epochs_run, "reports_s": r,
                           "processes_first_seen_s": watcher.procs,
                           "samples_per_s_whole": result.epochs_run * n / usage.wall_s}
    if len(r) != result.epochs_run or len(r) < 2:
        out["note"] = f"saw {len(r)} checkpoint names for {result.epochs_run} epochs: no per-epoch timing"
        return out
    steady = (r[-1] - r[0]) / (len(r) - 1)
    ctrl, worker = watcher.procs.get("ray::TrainController"), watcher.procs.get("ray::RayTrainWorker")
    out.update(steady_epoch_s=steady, samples_per_s_steady=n / steady, first_report_s=r[0],
               est_first_step_s=r[0] - steady, last_report_to_return_s=usage.wall_s - r[-1],
               startup_s={"call -> controller up": ctrl,
                          "controller up -> first worker up": worker - ctrl if ctrl and worker else None,
                          "first worker up -> est. first step": r[0] - steady - worker if worker else None})
    return out


def omp_probe() -> dict[str, Any]:
    """The torch thread count a Ray actor with 1 CPU gets, as a Ray Train worker with 1 CPU does."""
    import ray

    @ray.remote(num_cpus=1)
    def threads() -> dict[str, Any]:
        import torch

        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}

    return ray.get(threads.remote())


def ray_data_iteration(cfg, data) -> dict[str, float]:
    """Ray Data's iterator over the materialised train split, the loop's arguments, no model."""
    from raymlops.model.contract import ModelSpec
    from raymlops.model.mlp_worker import collate

    t = cfg.training
    fn = collate(ModelSpec.from_features(data.features, cfg.model.task), cfg.features.target)
    ds = data.datasets["train"].materialize()
    t0, rows = time.perf_counter(), 0
    with warnings.catch_warnings():  # Ray deprecates a plain function as collate_fn (the loop passes one)
        warnings.simplefilter("ignore")
        for *_x, y in ds.iter_torch_batches(batch_size=t.batch_size, collate_fn=fn,
                                            local_shuffle_buffer_size=4 * t.batch_size, local_shuffle_seed=t.seed):
            rows += len(y)
    return {"rows": rows, "samples_per_s": rows / (time.perf_counter() - t0)}


def compare(case: str, plain: dict[str, Any], runs: dict[int, dict[str, Any]]) -> list[Comparison]:
    found = []
    for workers, r in runs.items():
        threads = max(1, workers)
        p, label = plain[f"threads{threads}"], f"{case}, {workers} worker(s)"
        extra = {"disturbed": r["machine"]["disturbed"] or plain["machine"]["disturbed"]}
        base = BASELINE.format(threads)
        found.append(Comparison("train_bench", f"{label}: whole run", r["samples_per_s_whole"],
                                p["samples_per_s_whole"], base, "samples/s", higher_is_better=True, extra=extra))
        if "steady_epoch_s" in r:
            found += [Comparison("train_bench", f"{label}: steady epoch (train + validation)",
                                 r["samples_per_s_steady"], p["samples_per_s_train_val"], base, "samples/s",
                                 higher_is_better=True, extra=extra),
                      Comparison("train_bench", f"{label}: time to the first step", r["est_first_step_s"],
                                 p["first_step_from_start_s"], base, "s", extra=extra)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke config, 2 epochs, 0 and 1 workers")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 3; quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="before each section wait up to this many seconds for a quiet machine")
    args = parser.parse_args()
    case = "smoke" if args.quick else "flights"
    epochs = args.epochs or (2 if args.quick else 3)
    worker_counts = (0, 1) if args.quick else (0, 1, 2)
    if epochs < 2:
        parser.error("--epochs must be at least 2 (a steady epoch needs two epoch reports)")
    if case == "flights" and not (REPO / "examples/flights/data/flights/2013-04.parquet").is_file():
        raise SystemExit("flights data missing; run: .venv/bin/python examples/flights/prepare.py --out "
                         "examples/flights/data (or use --quick)")
    import torch

    from baselines.plain_torch import plain_torch
    from raymlops.data.stage import run_data_stage
    from raymlops.runtime.session import ray_runtime

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp, ray_runtime(num_cpus=2):
        cfg = make_config(case, Path(tmp) / "work", epochs, 1, args.seed)
        data = run_data_stage(cfg)
        for split in ("train", "validation"):
            data.datasets[split].materialize()
        details: dict[str, Any] = {"case": case, "epochs": epochs, "split_rows": data.split_rows,
                                   "omp_probe": omp_probe(), "plain": {}, "raymlops": {}}
        print(f"train_bench ({case}, {epochs} epochs): splits {data.split_rows}; a 1-CPU Ray worker gets "
              f"{details['omp_probe']}", flush=True)

        plain = details["plain"]
        quiet = harness.wait_for_quiet(args.max_wait)
        with harness.CpuWatch() as watch:
            for key, threads, per_batch in (("threads1", 1, False), ("threads2", 2, False),
                                            ("threads1_per_batch_collate", 1, True)):
                plain_torch(cfg, data, threads, per_batch)  # warm-up: imports, allocator, the to_pandas path
                plain[key] = min((plain_torch(cfg, data, threads, per_batch) for _ in range(PLAIN_REPEAT)),
                                 key=lambda r: r["epochs_s"])
                print(f"plain PyTorch ({key}): {plain[key]['samples_per_s_train_val']:,.0f} samples/s train+val, "
                      f"first step after {plain[key]['first_step_from_start_s']:.2f} s", flush=True)
            details["ray_data_iteration"] = ray_data_iteration(cfg, data)
        plain["machine"] = {**watch.result(), **quiet}
        torch.set_num_threads(2)

        for workers in worker_counts:
            cfg = make_config(case, Path(tmp) / "work", epochs, workers, args.seed)
            quiet = harness.wait_for_quiet(args.max_wait)
            with harness.CpuWatch() as watch:
                r = raymlops_training(cfg, data, run_name=f"bench-w{workers}")
            r["machine"] = {**watch.result(), **quiet}
            details["raymlops"][workers] = r
            print(f"raymlops {workers} worker(s): whole run {r['whole_s']:.1f} s, steady epoch "
                  f"{harness.fmt(r.get('steady_epoch_s'), 's')}, est. first step "
                  f"{harness.fmt(r.get('est_first_step_s'), 's')}; start-up {r.get('startup_s')}", flush=True)
    comparisons = compare(case, plain, details["raymlops"])
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, details, args)


if __name__ == "__main__":
    main()
