"""Guarantee 5, the driver: ``raymlops run`` SIGKILLed mid-training, then started again with the same name.

The killed process takes its embedded Ray with it (nothing of its session may be left running). The
same command with the same ``--run-name`` resumes from the last checkpoint instead of starting over,
closes the dead attempt's MLflow run (KILLED, pointing at the run that resumed it) and registers exactly
one version, with test metrics within tolerance of an undisturbed run of the same config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, SMOKE_FLIGHTS, registered_checkpoints, smoke_dict, wait_for, write_config

pytestmark = pytest.mark.reliability
NAME = "flights-smoke"  # the smoke config's pipeline, experiment and model name


def _config(tmp_path, name: str):
    """The config of one pipeline, with its working folder in ``tmp_path/name/work``."""
    flights = pd.read_csv(SMOKE_FLIGHTS)
    big = tmp_path / "flights.csv"
    if not big.exists():
        pd.concat([flights.assign(flight=flights["flight"] + 10_000 * i) for i in range(6)],
                  ignore_index=True).to_csv(big, index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(big)
    # 16 short epochs (batch 128): the kill after checkpoint 2 lands mid-training, 14 epochs before the end,
    # even when checkpoints reach disk late (the same guarantee as 8 epochs of batch 32, at half the steps).
    data["training"] = {"num_workers": 1, "epochs": 16, "batch_size": 128, "early_stopping_patience": 20}
    data["evaluation"]["gates"] = ["auc >= 0.5"]
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return write_config(folder, data)


def _run(config, run_name: str) -> subprocess.Popen:
    env = {**os.environ, "RAYMLOPS_PROGRESS": "0"}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):  # each run tracks into its own workdir
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "raymlops", "run", str(config), "--num-cpus", "2",
                             "--run-name", run_name], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _session_processes(sid: int) -> list[str]:
    """Running processes of the killed command's session (zombies excepted: they run nothing)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(" ".join(p.info["cmdline"] or []).strip()[:60] or str(p.pid))
        except (ProcessLookupError, PermissionError):
            pass
    return found


def _client(workdir) -> MlflowClient:
    uri = f"sqlite:///{workdir}/mlflow.db"
    return MlflowClient(uri, registry_uri=uri)  # not a registry URI left in this process by an earlier test


def _runs(client: MlflowClient, run_name: str) -> list:
    """Top-level MLflow runs of ``run_name``, oldest first."""
    exp = client.get_experiment_by_name(NAME)
    return client.search_runs([exp.experiment_id], f"tags.`raymlops.run_name` = '{run_name}'",
                              order_by=["attributes.start_time ASC"])


def test_a_killed_driver_is_resumed_by_a_rerun_with_the_same_name(tmp_path):
    config = _config(tmp_path, "crash")
    run_dir = tmp_path / "crash" / "work" / "checkpoints" / "crash"

    def checkpoints():
        return sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_")) \
            if run_dir.is_dir() else []

    first = _run(config, "crash")
    try:
        wait_for(lambda: registered_checkpoints(run_dir) >= 2 or first.poll() is not None, timeout_s=300,
                 what="two registered checkpoints", every_s=0.1)
        assert first.poll() is None, first.stderr.read()[-3000:]
        os.kill(first.pid, signal.SIGKILL)  # the driver only: its Ray must follow it down
        first.wait(timeout=30)
        killed_after = len(checkpoints())
        # raymlops.runtime.reaper stops what Ray leaves of the node (its agents hang once GCS and raylet are gone).
        deadline = time.monotonic() + 30
        while _session_processes(first.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _session_processes(first.pid)
    finally:
        if _session_processes(first.pid):
            os.killpg(first.pid, signal.SIGKILL)
    assert not left, f"the killed driver's Ray processes were still running 30 s later: {left}"

    client = _client(tmp_path / "crash" / "work")
    assert not client.search_model_versions(f"name='{NAME}'"), "the kill came after registration, not mid-run"
    started = time.monotonic()
    rerun = _run(config, "crash")
    # The undisturbed run to compare with, at the same time (its own workdir and local Ray; the result of a
    # seeded CPU run does not depend on what else runs, and the pair takes ~30 s less than one after the other)
    calm = _run(_config(tmp_path, "calm"), "calm")
    out, err = rerun.communicate(timeout=600)
    resumed_in = time.monotonic() - started
    calm_out, calm_err = calm.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert "died without ending; marked KILLED" in " ".join(err.split()), err[-2000:]  # rich wraps lines
    assert calm.returncode == 0, calm_err[-3000:]

    dead, resumed = _runs(client, "crash")
    assert dead.info.status == "KILLED" and dead.data.tags["raymlops.resumed_by"] == resumed.info.run_id
    assert resumed.info.status == "FINISHED"
    starts = [m.value for m in client.get_metric_history(resumed.info.run_id, "started_at_epoch")]
    # Epochs up to the last complete checkpoint kept started_at_epoch 0; the rest ran after resuming.
    resumed_at = int(starts[-1])
    assert resumed_at >= 1 and starts[:resumed_at] == [0.0] * resumed_at, starts
    versions = client.search_model_versions(f"name='{NAME}'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == resumed.info.run_id

    (calm_run,) = _runs(_client(tmp_path / "calm" / "work"), "calm")
    auc, calm_auc = resumed.data.metrics["test_auc"], calm_run.data.metrics["test_auc"]
    print(f"\ndriver SIGKILLed after {killed_after} checkpoints; its Ray exited with it; the rerun resumed at "
          f"epoch {resumed_at} and finished in {resumed_in:.0f} s: test AUC {auc:.4f} vs undisturbed "
          f"{calm_auc:.4f}")
    assert abs(auc - calm_auc) <= 0.03


def _raylets_of(pid: int) -> list[psutil.Process]:
    """The raylet the command's own local Ray started (a descendant of it), not any other Ray's."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "raylet"]
    except psutil.NoSuchProcess:
        return []


def test_ray_dying_under_a_run_ends_it_with_a_message_a_failed_mlflow_run_and_a_rerun_resumes(tmp_path):
    """The raylet killed mid-training (what the OOM killer or a `ray stop` does): Ray ends its driver with
    ``_exit``, so the command itself must say what happened, end the MLflow run FAILED and name the rerun."""
    config = _config(tmp_path, "stopped")
    run_dir = tmp_path / "stopped" / "work" / "checkpoints" / "stopped"
    first = _run(config, "stopped")
    try:
        wait_for(lambda: registered_checkpoints(run_dir) >= 2 or first.poll() is not None, timeout_s=300,
                 what="two registered checkpoints", every_s=0.1)
        assert first.poll() is None, first.stderr.read()[-3000:]
        raylets = _raylets_of(first.pid)
        assert len(raylets) == 1, f"expected the run's own raylet among its processes, found {raylets}"
        raylets[0].kill()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None or _session_processes(first.pid):
            try:
                os.killpg(first.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group ended between the check and the kill
                pass
    said = " ".join(err.split())  # rich wraps lines
    assert first.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    supervised = "RayStopped:" in said
    if supervised:  # Ray _exit-ed the driver: the supervising parent says what happened
        assert "RayStopped: run 'stopped' stopped: the pipeline process" in said, err[-3000:]
        assert f"raymlops run {config} --run-name stopped" in said and str(run_dir) in said, err[-3000:]
    else:  # the driver outlived its raylet long enough to see its trainer die: the stage's own error
        assert "TrainingError:" in said and "node has crashed" in said, err[-3000:]
        assert "--run-name stopped" in said and str(run_dir) in said, err[-3000:]

    client = _client(tmp_path / "stopped" / "work")
    (dead,) = _runs(client, "stopped")
    assert dead.info.status == "FAILED"
    # Marked by the parent (Ray _exit-ed the driver while the run was open) or by the stage itself (the
    # driver saw its trainer die first): either way the run says why it failed.
    reason = dead.data.tags.get("raymlops.failure", "")
    assert "raylet or GCS" in reason or "crashed" in reason or "died" in reason, dead.data.tags
    assert not client.search_model_versions(f"name='{NAME}'")

    rerun = _run(config, "stopped")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    dead, resumed = _runs(client, "stopped")
    assert dead.info.status == "FAILED" and resumed.info.status == "FINISHED"
    starts = [m.value for m in client.get_metric_history(resumed.info.run_id, "started_at_epoch")]
    assert int(starts[-1]) >= 1, f"the rerun started over instead of resuming: {starts}"
    versions = client.search_model_versions(f"name='{NAME}'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == resumed.info.run_id
