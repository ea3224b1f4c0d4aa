"""Guarantee 9: several pipelines registering and promoting at once lose nothing and agree on one champion.

Each writer is its own process, as separate `raymlops run`s are: it opens a run, logs to it, registers a
version from it and promotes that version, all released by one barrier. Against the embedded SQLite store
(where MLflow 3.17 raises unique-constraint errors under concurrent writers) and against an MLflow server
on PostgreSQL.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from mlflow.tracking import MlflowClient

from raymlops.registry.store import CHAMPION, Registry

pytestmark = pytest.mark.reliability
NAME = "concurrent-model"
WRITERS = 6


def _pipeline(workdir: str, tracking_uri: str | None, index: int, barrier, results) -> None:
    reg = Registry.for_workdir(workdir, tracking_uri)
    barrier.wait()
    run_id = reg.start_run("concurrent", f"pipeline-{index}", tags={"writer": str(index)})
    reg.log_params(run_id, {"writer": index})
    reg.log_metrics(run_id, [{"epoch": e, "val_loss": 1.0 / (e + 1 + index)} for e in range(3)])
    version = reg.register(NAME, run_id, "model", tags={"writer": str(index)})
    reg.promote(NAME, version, reason=f"writer {index}")
    reg.end_run(run_id)
    results.put((index, run_id, version))


def _run_writers(workdir, tracking_uri):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_pipeline, args=(str(workdir), tracking_uri, i, barrier, results))
             for i in range(WRITERS)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    return sorted(results.get(timeout=10) for _ in range(WRITERS)), time.perf_counter() - started


@pytest.mark.parametrize("backend", ["sqlite", "mlflow-server-postgresql"])
def test_concurrent_pipelines_get_unique_contiguous_versions_and_one_champion(backend, tmp_path, request):
    tracking_uri = None if backend == "sqlite" else request.getfixturevalue("mlflow_server").url
    outcomes, seconds = _run_writers(tmp_path, tracking_uri)
    reg = Registry.for_workdir(tmp_path, tracking_uri)

    versions = sorted(int(v) for _, _, v in outcomes)
    assert versions == list(range(1, WRITERS + 1))  # unique and contiguous
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    for index, run_id, version in outcomes:  # no lost runs: each is finished, holds its data, owns its version
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["writer"] == str(index)
        assert len(client.get_metric_history(run_id, "val_loss")) == 3
        assert client.get_model_version(NAME, version).run_id == run_id

    moves = reg.audit_log(NAME)
    assert len(moves) == WRITERS and sorted(int(m.to_version) for m in moves) == versions
    assert moves[0].from_version is None
    assert all(moves[i].from_version == moves[i - 1].to_version for i in range(1, WRITERS))  # one chain
    champion = reg.version_for_alias(NAME, CHAMPION)
    assert champion == moves[-1].to_version
    holders = [str(v) for v in versions if CHAMPION in (client.get_model_version(NAME, str(v)).aliases or [])]
    assert holders == [champion]
    print(f"\n{backend}: {WRITERS} concurrent pipelines registered and promoted in {seconds:.1f}s; "
          f"versions 1..{WRITERS}, one audited chain, champion v{champion}")
