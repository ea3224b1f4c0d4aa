"""Benchmark of opening a new working folder's tracking store: a copy of the migrated template
(``raymlops.registry.sqlite_seed``) versus the named baseline, "MLflow's own first open" (every Alembic
migration run on the new SQLite file), both ending in an MLflow client that has listed its experiments
and registered models, as ``Registry.client`` leaves it.

Each sample runs in a fresh Python process (MLflow imported in both; the import is timed apart), so
neither side gains from the other's warm caches; the template is built once before sampling, as it is
once per MLflow version on a user's machine. Median of 5 runs each; ratio ours / baseline (< 1: ours is
cheaper), wall time and the process's CPU time.

Run: ``python benchmarks/registry_bench.py``; writes ``benchmarks/out/registry_bench.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from raymlops.workspace import write_json_atomic

RUNS = 5
SAMPLE = r"""
import json, sys, time, resource
from pathlib import Path
import mlflow  # imported before timing: both sides pay it
from mlflow.tracking import MlflowClient
from raymlops.registry.sqlite_seed import seed_sqlite_store
db, seeded = Path(sys.argv[1]), sys.argv[2] == "seeded"
cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if seeded:
    assert seed_sqlite_store(db)
client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
client.search_experiments(); client.search_registered_models(max_results=1)
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": time.perf_counter() - t0,
                  "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)}))
"""


def sample(folder: Path, kind: str, i: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", SAMPLE, str(folder / f"{kind}-{i}.db"), kind], cwd=folder,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from raymlops.registry.sqlite_seed import template_path

    template = template_path()
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        folder = Path(tmp)
        runs = {kind: [sample(folder, kind, i) for i in range(RUNS)] for kind in ("seeded", "migrated")}
    median = {kind: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")} for kind, rs in runs.items()}
    ours, base = median["seeded"], median["migrated"]
    print(f"new tracking store, median of {RUNS} fresh processes (template: {template})")
    print(f"  ours (copy of the migrated template): {ours['wall_s']:.3f} s wall, {ours['cpu_s']:.3f} s CPU")
    print(f"  baseline (MLflow's own first open):   {base['wall_s']:.3f} s wall, {base['cpu_s']:.3f} s CPU")
    print(f"  ours / baseline: wall {ours['wall_s'] / base['wall_s']:.3f}, CPU {ours['cpu_s'] / base['cpu_s']:.3f}")
    out = Path(__file__).parent / "out" / "registry_bench.json"
    out.parent.mkdir(exist_ok=True)
    write_json_atomic(out, {"runs": runs, "median": median, "baseline": "MLflow's own first open (all migrations)",
                            "ratio_wall": ours["wall_s"] / base["wall_s"], "ratio_cpu": ours["cpu_s"] / base["cpu_s"]})


if __name__ == "__main__":
    main()
