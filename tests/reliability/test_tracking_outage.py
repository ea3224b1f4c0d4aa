"""Guarantee 6: the MLflow tracking server stops during training.

`raymlops run` against an `mlflow server` on PostgreSQL; the server is stopped once training has
written its first checkpoint. The run must fail clearly (RegistryError naming the server and the way to
resume, exit 1, no traceback), register nothing, keep its checkpoint; with the server back on the same
address and store, the same command with the same --run-name resumes from the checkpoint and registers.

Training runs at the shipped default (``num_workers: auto``: this small run trains in the driver). The
rerun may find every epoch already trained (the first attempt failed registering): it must register that
run's last checkpoint, which local mode once reported as "no epoch completed". Ray Train workers' resume
is proven by ``test_driver_killed.py`` and ``tests/integration/test_training.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, SMOKE_FLIGHTS, smoke_dict, wait_for, write_config
from tests.integration.servers import start_mlflow_server, stop_process_group

pytestmark = pytest.mark.reliability


def test_training_survives_a_tracking_outage_and_registers_once_the_server_is_back(postgres_server, tmp_path):
    proc, server = start_mlflow_server(postgres_server, tmp_path / "mlflow", database="outage")
    port = int(server.url.rsplit(":", 1)[1])
    flights = pd.read_csv(SMOKE_FLIGHTS)
    big = pd.concat([flights.assign(flight=flights["flight"] + 10_000 * i) for i in range(6)], ignore_index=True)
    big.to_csv(tmp_path / "flights.csv", index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(tmp_path / "flights.csv")
    # batch 64: the epochs after the first checkpoint still outlast stopping the server (the run cannot
    # finish without it anyway), at half the steps of batch 32.
    data["training"] = {"epochs": 5, "batch_size": 64, "early_stopping_patience": 10}
    data["evaluation"]["gates"] = ["auc >= 0.5"]
    config = write_config(tmp_path, data)
    env = {**os.environ, "RAYMLOPS_PROGRESS": "0", "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    command = [sys.executable, "-m", "raymlops", "run", str(config), "--num-cpus", "2", "--run-name", "outage"]
    run_dir = tmp_path / "work" / "checkpoints" / "outage"

    def checkpoints():
        return sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_")) \
            if run_dir.is_dir() else []

    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: checkpoints() or first.poll() is not None, timeout_s=300, what="a checkpoint")
        assert first.poll() is None, first.stderr.read()[-3000:]
        stopped_at = time.monotonic()
        stop_process_group(proc)  # the server goes away mid-training
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    print(f"\nrun failed {time.monotonic() - stopped_at:.0f}s after the tracking server stopped")
    assert first.returncode == 1, err[-3000:]
    assert "RegistryError" in err and server.url in err and "--run-name outage" in err, err[-3000:]
    assert "Traceback" not in err
    assert checkpoints(), "the checkpoint was lost"

    proc, server = start_mlflow_server(postgres_server, tmp_path / "mlflow", database="outage", port=port,
                                       fresh=False)
    try:
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        assert client.search_registered_models() == [] or not client.search_model_versions("name='flights-smoke'")
        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        versions = client.search_model_versions("name='flights-smoke'")
        assert [v.version for v in versions] == ["1"]
        assert client.get_model_version_by_alias("flights-smoke", "champion").version == "1"
        runs = client.search_runs([client.get_experiment_by_name("flights-smoke").experiment_id])
        # The first attempt could not close its run while the server was down (or closed it FAILED); the
        # rerun of the same name closes a run left RUNNING as KILLED, naming itself.
        assert sorted(r.info.status for r in runs) in (["FINISHED", "KILLED"], ["FAILED", "FINISHED"])
        done = next(r for r in runs if r.info.status == "FINISHED")
        assert all(r.data.tags.get("raymlops.resumed_by") == done.info.run_id
                   for r in runs if r.info.status == "KILLED")
        state = yaml.safe_load((checkpoints()[-1] / "state.json").read_text())
        assert state["history"][-1]["epoch"] == 4
    finally:
        stop_process_group(proc)
