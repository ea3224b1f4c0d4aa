"""Multi-node behaviour on a real local cluster: a head and two worker nodes started with `ray start`.

One cluster for the module (`raymlops.ops.cluster.up`); jobs go through the Jobs API with Ray's token.
The nodes share this machine's 2 cores: the worker nodes offer 2 logical CPUs each so a training run
over two nodes still leaves a CPU for Ray to rebuild data a lost node held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlflow.tracking import MlflowClient

from raymlops.ops import cluster, jobs
from raymlops.registry.store import Registry
from raymlops.training.trainer import read_checkpoint_state
from raymlops.workspace import pid_alive
from tests.helpers import REPO, SMOKE_FLIGHTS, registered_checkpoints, smoke_dict, wait_for

# No wall-clock bound: the three nodes run beside the other test process (the waits are generous and a
# node lost mid-training is found by its death, not by a timing).
pytestmark = pytest.mark.multinode
RAYMLOPS = [sys.executable, "-m", "raymlops"]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cluster")
    started = cluster.up(directory, workers=2, head_cpus=1, worker_cpus=2, object_store_mb=300)
    try:
        yield started
    finally:
        cluster.down(directory)
        assert not any(pid_alive(n.pid) for n in started.nodes), "cluster down left a node running"


def _cli(local_cluster, *args, extra_env=None, timeout=600):
    env = {**os.environ, "RAYMLOPS_CLUSTER_DIR": local_cluster.dir, "RAYMLOPS_PROGRESS": "0", **(extra_env or {})}
    return subprocess.run([*RAYMLOPS, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def _post_job(url: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"{url}/api/jobs/", data=json.dumps({"entrypoint": "echo owned"}).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_head_and_two_workers_are_alive_and_the_jobs_api_is_on_loopback(local_cluster):
    status = _cli(local_cluster, "cluster", "status", "--json")
    assert status.returncode == 0, status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert [n["name"] for n in nodes] == ["head", "worker-1", "worker-2"]
    assert all(n["state"] == "ALIVE" and n["process"] == "running" for n in nodes)
    assert len({n["node_id"] for n in nodes}) == 3
    assert local_cluster.dashboard_url.startswith("http://127.0.0.1:")


def test_jobs_api_refuses_a_submission_without_the_token_or_with_a_wrong_one(local_cluster):
    assert _post_job(local_cluster.dashboard_url, None) == 401
    assert _post_job(local_cluster.dashboard_url, "not-the-token") == 403
    refused = _cli(local_cluster, "jobs", extra_env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert refused.returncode == 1 and "Invalid authentication token" in refused.stderr
    listed = _cli(local_cluster, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert not any("echo owned" in j["entrypoint"] for j in json.loads(listed.stdout))


def test_submitted_smoke_pipeline_registers_on_an_mlflow_server_with_postgresql(local_cluster, mlflow_server,
                                                                                 tmp_path):
    shared = tmp_path / "shared"
    done = _cli(local_cluster, "submit", "configs/smoke.yaml", "--workdir", str(shared), "--wait",
                "--job-id", "smoke-on-cluster", "--env", f"MLFLOW_TRACKING_URI={mlflow_server.url}")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "job smoke-on-cluster: SUCCEEDED" in done.stderr
    assert "SQLite" not in done.stderr  # no warning: the server is the store
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    version = client.get_model_version_by_alias("flights-smoke", "champion")
    assert version.version == "1" and version.tags.get("raymlops.data_fingerprint")
    run = client.get_run(version.run_id)
    assert run.data.tags.get("raymlops.snapshot_path", "").startswith(str(shared))
    assert not (shared / "mlflow.db").exists()  # nothing went to the embedded SQLite
    assert any(mlflow_server.artifacts.rglob("manifest.json")), "the model package is not on the server's store"
    listed = json.loads(_cli(local_cluster, "jobs", "--json").stdout)
    job = next(j for j in listed if j["id"] == "smoke-on-cluster")
    assert job["status"] == "SUCCEEDED" and "--workdir" in job["entrypoint"]
    logs = _cli(local_cluster, "logs", "smoke-on-cluster")
    assert "registered" in logs.stdout and "flights-smoke v1" in logs.stdout


def test_submit_refuses_a_workdir_inside_the_uploaded_project(local_cluster):
    refused = _cli(local_cluster, "submit", "configs/smoke.yaml")
    assert refused.returncode == 1
    assert "lies inside the project" in refused.stderr and "--workdir" in refused.stderr


def _training_project(tmp_path: Path) -> Path:
    """A project folder with 30,000 flights (the smoke sample ten times over) and a 2-worker SPREAD config."""
    project = tmp_path / "project"
    project.mkdir()
    flights = pd.read_csv(SMOKE_FLIGHTS)
    big = pd.concat([flights.assign(flight=flights["flight"] + 10_000 * i) for i in range(10)], ignore_index=True)
    big.to_csv(project / "flights.csv", index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = "flights.csv"
    data["training"] = {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "SPREAD", "epochs": 4,
                        "batch_size": 64, "early_stopping_patience": 10, "max_failures": 2}
    data["evaluation"]["gates"] = ["auc >= 0.5"]
    (project / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders (Ray Train also keeps a checkpoint_manager_snapshot.json there)."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))


def test_training_over_two_nodes_finishes_from_its_checkpoint_after_a_worker_node_dies(local_cluster, tmp_path):
    project, shared = _training_project(tmp_path), tmp_path / "shared"
    from raymlops.config import load_config

    plan = jobs.plan_submission(load_config(project / "pipeline.yaml"), project / "pipeline.yaml",
                                project_root=project, workdir=str(shared), run_name="two-nodes")
    job_id = jobs.submit(plan, local_cluster.dashboard_url, submission_id="two-nodes")
    run_dir = shared / "checkpoints" / "two-nodes"

    def checkpoints_so_far():
        status = jobs.job_client(local_cluster.dashboard_url).get_job_status(job_id).value
        assert status not in jobs.TERMINAL, jobs.logs(job_id, local_cluster.dashboard_url)[-3000:]
        return registered_checkpoints(run_dir)

    # Two checkpoints registered by Train's controller (a folder on disk can still be lost: see the helper).
    wait_for(lambda: checkpoints_so_far() >= 2, timeout_s=300, what="two registered checkpoints", every_s=0.1)
    workers = [a for a in cluster.query_state(local_cluster.dashboard_url, "actors", class_name="RayTrainWorker")
               if a["state"] == "ALIVE"]
    hosts = {a["node_id"] for a in workers}
    assert len(workers) == 2 and len(hosts) == 2, workers  # SPREAD: one worker per node
    names = {n.node_id: n.name for n in local_cluster.nodes}
    victim = next(names[h] for h in sorted(hosts, key=lambda h: names[h]) if names[h] != cluster.HEAD)
    cluster.kill_node(local_cluster, victim)
    killed_at = time.monotonic()

    status = jobs.wait(job_id, local_cluster.dashboard_url, timeout_s=600)
    logs = jobs.logs(job_id, local_cluster.dashboard_url)
    assert status == "SUCCEEDED", logs[-4000:]
    dead = [n for n in cluster.list_nodes(local_cluster.dashboard_url) if n["node_name"] == victim]
    assert dead and dead[0]["state"] == "DEAD"
    state = read_checkpoint_state(_checkpoints(run_dir)[-1])
    history = state["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[0]["started_at_epoch"] == 0
    assert any(h["started_at_epoch"] > 0 for h in history), f"restarted from scratch, not from a checkpoint: {history} {logs[-6000:]}"
    assert Registry.for_workdir(shared).version_for_alias("flights-smoke", "champion") == "1"
    print(f"\nnode {victim} killed; job finished {time.monotonic() - killed_at:.0f}s later, resumed at epoch "
          f"{max(h['started_at_epoch'] for h in history)}")
