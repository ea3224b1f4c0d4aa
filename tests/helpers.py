"""Shared test helpers: configs pointed at a temp working folder, and small data files."""

from __future__ import annotations

import copy
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"
SMOKE_FLIGHTS = REPO / "examples" / "smoke" / "flights.csv"
SMOKE_WEATHER = REPO / "examples" / "smoke" / "weather.csv"


def smoke_dict() -> dict[str, Any]:
    """The smoke config as a dict with its paths made absolute."""
    data = yaml.safe_load(SMOKE_CONFIG.read_text())
    for src in data["data"]["sources"]:
        if "path" in src:
            src["path"] = str((SMOKE_CONFIG.parent / src["path"]).resolve())
    return data


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    """Write a config whose working folder is inside ``tmp_path``."""
    data = copy.deepcopy(data)
    data["workdir"] = str(tmp_path / "work")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def smoke_config(tmp_path: Path, **section_overrides: Any) -> Path:
    data = smoke_dict()
    data.update(section_overrides)
    return write_config(tmp_path, data)


def wait_for(predicate, timeout_s: float = 20.0, what: str = "condition", every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, outside the kernel's ephemeral range: a port the kernel
    handed out (bind to port 0) can be taken again as the local port of any process's outgoing connection
    before the test binds it (Serve's proxy once failed to bind one on CI)."""
    ephemeral = _ephemeral_ports()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        if port in ephemeral:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range is crowded: any free port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_port() -> int:
    """The port of the Serve instance this test session's Ray runs, or a free one when none runs yet.

    Serve has one HTTP port per cluster; applications deployed later in a session must use it.
    """
    from raymlops.serving.deploy import running_http

    running = running_http()
    return running[1] if running else free_port()


def interrupt(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """Ctrl-C a command started in its own session (as a user would), then kill it if it hangs."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def registered_checkpoints(run_dir: Path) -> int:
    """Checkpoints Ray Train's controller has registered for a run (its checkpoint_manager_snapshot.json).

    A ``checkpoint_*`` folder on disk is not enough: the controller collects reports when it polls the
    workers, so a kill right after a folder appears can lose it, and the run restarts from scratch.
    """
    import json

    try:
        snapshot = json.loads((Path(run_dir) / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return 0  # not written yet, or caught mid-write
    return len(snapshot.get("checkpoint_results") or [])


def ten_times_the_smoke_flights(tmp_path: Path) -> Path:
    """The smoke flights ten times over (30,000 rows, flight numbers kept distinct): long enough a run
    to kill a worker in."""
    import pandas as pd

    flights = pd.read_csv(SMOKE_FLIGHTS)
    big = pd.concat([flights.assign(flight=flights["flight"] + 10_000 * i) for i in range(10)], ignore_index=True)
    path = Path(tmp_path) / "big.csv"
    big.to_csv(path, index=False)
    return path


def own_ray_processes(title_prefix: str) -> list:
    """Processes of this test process's own Ray whose title starts with ``title_prefix`` (``ray::RayTrainWorker``).

    The session's Ray is started by this process, so its processes descend from it; the Ray of the
    other test process (`make test` runs two) does not, and a test must never touch that one's workers.
    """
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(title_prefix):
                found.append(p)
        except psutil.Error:  # ended between the listing and the look
            pass
    return found


def train_killing_a_worker(train, run_dir: Path, timeout_s: float = 300):
    """Run ``train()`` in a thread, SIGKILL one Ray Train worker once the controller has registered a
    checkpoint of ``run_dir``, and return (train's result, the killed pid or None if the run ended first)."""
    import threading

    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=train()))
    thread.start()
    killed = None
    deadline = time.time() + timeout_s
    while time.time() < deadline and thread.is_alive() and killed is None:
        if registered_checkpoints(run_dir) >= 1:
            workers = own_ray_processes("ray::RayTrainWorker")
            if workers:
                killed = workers[-1].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=600)
    return box.get("result"), killed
