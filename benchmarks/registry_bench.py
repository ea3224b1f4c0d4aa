"""Opening a new working folder's tracking store: a copy of the migrated template
(``raymlops.registry.sqlite_seed``) against the named baseline, "MLflow's own first open" (every Alembic
migration run on the new SQLite file). Both end in an MLflow client that has listed its experiments and
registered models, as ``Registry.client`` leaves it.

Each sample runs in a fresh Python process (MLflow imported in both, before the timing), so neither side
gains from the other's warm caches; the template is built once before sampling, as it is once per MLflow
version on a user's machine. Median of 5 samples each (quick: 2), wall and CPU seconds of the open.

Run: ``python benchmarks/registry_bench.py [--quick]``; writes ``benchmarks/out/registry_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from harness import Comparison

BASELINE = "MLflow's own first open (all migrations)"
SAMPLE = r"""
import dataclasses, json, sys
from pathlib import Path
import mlflow  # imported before timing: both sides pay it
from mlflow.tracking import MlflowClient
import harness
from raymlops.registry.sqlite_seed import seed_sqlite_store
db, seeded = Path(sys.argv[1]), sys.argv[2] == "seeded"
def open_store():
    if seeded:
        assert seed_sqlite_store(db)
    client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments(); client.search_registered_models(max_results=1)
print(json.dumps(dataclasses.asdict(harness.measure(open_store)[1])))
"""


def sample(folder: Path, kind: str, i: int) -> dict[str, float]:
    env = {**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run([sys.executable, "-c", SAMPLE, str(folder / f"{kind}-{i}.db"), kind], cwd=folder,
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 samples per side instead of 5")
    parser.add_argument("--max-wait", type=float, default=60.0, help="wait up to this long for a quiet machine")
    args = parser.parse_args()
    from raymlops.registry.sqlite_seed import template_path

    runs = 2 if args.quick else 5
    template = template_path()  # built here if this MLflow version has none yet: not timed
    quiet = harness.wait_for_quiet(args.max_wait)
    with harness.CpuWatch() as watch, tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        samples = {kind: [sample(Path(tmp), kind, i) for i in range(runs)] for kind in ("seeded", "migrated")}
    machine = {**watch.result(), **quiet}
    stats = {kind: {k: harness.summarize([s[k] for s in ss]) for k in ("wall_s", "cpu_s")} for kind, ss in samples.items()}
    extra = {"disturbed": machine["disturbed"], "statistic": f"median of {runs} fresh processes"}
    comparisons = [Comparison("registry_bench", f"new tracking store, {what}", stats["seeded"][key]["median"],
                              stats["migrated"][key]["median"], BASELINE, "s", extra=extra)
                   for what, key in (("wall", "wall_s"), ("CPU", "cpu_s"))]
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, {"template": str(template), "samples": samples, "stats": stats,
                                                  "machine": machine}, args)


if __name__ == "__main__":
    main()
