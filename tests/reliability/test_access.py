"""Guarantee 10 (access), for a user's own run: the model-changing routes need the key, nothing listens
beyond loopback, and no secret reaches a log, the MLflow store (params, tags, artifacts) or the workdir.

`raymlops run` then `raymlops serve` as a user runs them, with secrets in the environment and in the
API-key file; afterwards every file they wrote (workdir, MLflow's SQLite and artifacts, the Ray session
logs of that serve) is searched for each secret. Jobs API refusals are in tests/multinode.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import REPO, free_port, interrupt, smoke_config

pytestmark = pytest.mark.reliability
RAYMLOPS = [sys.executable, "-m", "raymlops"]


def _serve_tree_listeners(root_pid: int) -> list[tuple[str, int, str]]:
    """Every listening TCP socket of the serve process and its descendants, Ray's included."""
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    pids = {p.pid for p in procs}
    # Ray's own daemons are started by the serve command's Python but may be reparented: add them by session.
    sid = os.getsid(root_pid)
    pids |= {p.pid for p in psutil.process_iter() if _sid(p.pid) == sid}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.append((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
    return found


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _files_containing(roots: list[Path], needles: dict[str, str]) -> list[str]:
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink() or path.name == "api.key":
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{name} in {path}" for name, value in needles.items() if value.encode() in data]
    return hits


def test_keys_are_required_nothing_listens_beyond_loopback_and_no_secret_is_written(tmp_path):
    api_key, mlflow_password, token = (f"sekret-{secrets.token_hex(8)}" for _ in range(3))
    (tmp_path / "api.key").write_text(api_key + "\n")
    port = free_port()
    config = smoke_config(tmp_path, serving={"port": port, "api_key_file": str(tmp_path / "api.key"),
                                             "min_replicas": 1, "max_replicas": 1, "cpus_per_replica": 0.5},
                          monitoring={"metrics_port": free_port()})
    env = {**os.environ, "RAYMLOPS_PROGRESS": "0", "MLFLOW_TRACKING_PASSWORD": mlflow_password,
           "MY_SERVICE_TOKEN": token, "RAYMLOPS_WORKER_LOGS": "1"}
    ray_temp = Path("/tmp/ray")
    before = set(ray_temp.glob("session_*")) if ray_temp.exists() else set()
    done = subprocess.run([*RAYMLOPS, "run", str(config), "--num-cpus", "2"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    server = subprocess.Popen([*RAYMLOPS, "serve", str(config), "--num-cpus", "2"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(server.stdout.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not any("serving flights-smoke at" in line for line in lines):
            assert server.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        for route, body in [("/v1/feedback", {"items": [{"request_id": "0123456789abcdef0123456789abcdef", "label": 1}]}),
                            ("/v1/admin/refresh", {})]:
            assert requests.post(base + route, json=body, timeout=10).status_code == 401
            wrong = requests.post(base + route, json=body, headers={"Authorization": "Bearer " + api_key[:-1]},
                                  timeout=10)
            assert wrong.status_code == 403 and api_key not in wrong.text
        listeners = _serve_tree_listeners(server.pid)
        assert listeners, "found no listening socket of raymlops serve"
        beyond = [entry for entry in listeners if entry[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
        print(f"\nraymlops serve listens on {len(listeners)} sockets; beyond loopback: {beyond or 'none'}")
        assert beyond == []
    finally:
        interrupt(server)

    sessions = sorted(set(ray_temp.glob("session_*")) - before)
    assert sessions, "no Ray session folder of the run or serve was found"
    roots = [tmp_path / "work", *sessions]
    needles = {"API key": api_key, "MLflow password": mlflow_password, "a service token": token}
    outputs = done.stdout + done.stderr + "".join(lines)
    assert not [n for n, v in needles.items() if v in outputs]
    hits = _files_containing(roots, needles)
    assert hits == [], hits
    print(f"searched {sum(1 for r in roots for p in r.rglob('*') if p.is_file())} files for 3 secrets: none found")
