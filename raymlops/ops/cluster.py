"""A local multi-node Ray cluster for development and tests: a head and N worker nodes on this machine.

Each node is one ``ray start --block`` process (its own raylet, object store and logs) in its own
process group. ``cluster.json`` in the cluster's folder records every node's process id and Ray node
id, so ``down`` stops exactly this cluster's processes (never another Ray on the machine) and
``kill_node`` can take one node away the way a failed machine would. Token auth is on
(``RAY_AUTH_MODE=token``; the token is Ray's own, generated into ``~/.ray/auth_token`` when missing).
The dashboard, which serves the Jobs API, listens on 127.0.0.1 only. Nodes advertise 127.0.0.1;
Ray's gRPC servers (GCS, raylets) still listen on every interface in multi-node mode, and every
call to them must carry the token.

Example::

    cluster = up(Path(".raymlops/cluster"), workers=2)
    cluster.dashboard_url           # http://127.0.0.1:PORT, for `raymlops submit --address`
    kill_node(cluster, "worker-1")  # SIGKILL of the node's whole process group
    down(Path(".raymlops/cluster"))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raymlops.errors import ClusterError
from raymlops.ops.ray_auth import auth_headers, ensure_token
from raymlops.workspace import pid_alive, write_json_atomic

STATE_FILE = "cluster.json"
HEAD = "head"


def default_cluster_dir() -> Path:
    return Path(os.environ.get("RAYMLOPS_CLUSTER_DIR", ".raymlops/cluster")).resolve()


@dataclass
class NodeProcess:
    name: str
    pid: int
    num_cpus: float
    log: str
    node_id: str = ""

    @property
    def is_head(self) -> bool:
        return self.name == HEAD


@dataclass
class LocalCluster:
    dir: str
    gcs_address: str
    dashboard_url: str
    nodes: list[NodeProcess] = field(default_factory=list)

    def save(self) -> None:
        write_json_atomic(Path(self.dir) / STATE_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> LocalCluster | None:
        path = Path(directory) / STATE_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["nodes"] = [NodeProcess(**n) for n in raw["nodes"]]
        return cls(**raw)

    def node(self, name: str) -> NodeProcess:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ClusterError(f"no node {name!r} in the cluster at {self.dir}; nodes: {[n.name for n in self.nodes]}")


Progress = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env() -> dict[str, str]:
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is how raymlops.runtime.session keeps an embedded single-node Ray on
    # loopback; a process that started one (a test session) must not hand it to nodes that form a cluster.
    dropped = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["RAY_AUTH_MODE"] = "token"
    # On SIGTERM a Ray node first drains (up to 30 s) so that Serve can move replicas to other nodes. `down`
    # stops every node of this one-machine cluster, so there is nowhere to move to: the head, still holding
    # the leases of detached actors, waited out the drain and was killed at the grace period (20 s per
    # down). A value the user set wins.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    # Jobs' entrypoints (`python -m raymlops ...`) must find this Python, with raymlops installed.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def temp_root(directory: Path) -> Path:
    """Where the nodes keep their Ray session folders: short (Unix socket paths are limited to 107 bytes)."""
    digest = hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"raymlops-cluster-{digest}"


def _start_node(directory: Path, name: str, args: list[str], num_cpus: float, object_store_mb: int) -> NodeProcess:
    log = directory / f"{name}.log"
    # A session folder per node: nodes on one machine sharing Ray's default one would also share the
    # runtime_env cache, where one node's agent deletes a job's working_dir while another's driver reads it.
    temp = temp_root(directory) / name
    cmd = [_ray_executable(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus:g}",
           f"--temp-dir={temp}",
           f"--object-store-memory={object_store_mb * 1024 * 1024}", f"--node-name={name}",
           f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
           f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}", *args]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_node_env(), start_new_session=True)
    return NodeProcess(name=name, pid=proc.pid, num_cpus=num_cpus, log=str(log))


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _get_json(url: str, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def list_nodes(dashboard_url: str) -> list[dict[str, Any]]:
    """Every node the cluster's GCS knows (alive or dead): name, id, state, resources."""
    body = _get_json(f"{dashboard_url}/api/v0/nodes?detail=1&limit=1000")
    return body["data"]["result"]["result"]


def query_state(dashboard_url: str, resource: str, **equals: str) -> list[dict[str, Any]]:
    """Ray's state API (``actors``, ``tasks``, ``nodes``, ...) filtered by equality, e.g. class_name=..."""
    query = "&".join(f"filter_keys={k}&filter_predicates=%3D&filter_values={urllib.parse.quote(str(v))}"
                     for k, v in equals.items())
    body = _get_json(f"{dashboard_url}/api/v0/{resource}?detail=1&limit=10000" + (f"&{query}" if query else ""))
    return body["data"]["result"]["result"]


def _wait_for(node: NodeProcess, dashboard_url: str, timeout_s: float) -> str:
    """Wait until the node is ALIVE in the GCS; returns its Ray node id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(node.pid):
            raise ClusterError(f"node {node.name} exited while starting; its log ({node.log}) ends:\n{_tail(node.log)}")
        try:
            for n in list_nodes(dashboard_url):
                if n.get("node_name") == node.name and n.get("state") == "ALIVE":
                    return n["node_id"]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            pass  # dashboard not up yet
        time.sleep(0.5)
    raise ClusterError(f"node {node.name} did not join within {timeout_s:.0f}s; its log ({node.log}) ends:\n"
                       f"{_tail(node.log)}")


def up(directory: Path | None = None, *, workers: int = 2, head_cpus: float = 1, worker_cpus: float = 1,
       object_store_mb: int = 512, port: int | None = None, dashboard_port: int | None = None,
       timeout_s: float = 90, progress: Progress | None = None) -> LocalCluster:
    """Start a head and ``workers`` worker nodes; stops whatever started if any node fails to join."""
    say = progress or (lambda msg: None)
    directory = Path(directory or default_cluster_dir()).resolve()
    existing = LocalCluster.load(directory)
    if existing and any(pid_alive(n.pid) for n in existing.nodes):
        raise ClusterError(f"a cluster is already up at {directory} (dashboard {existing.dashboard_url}); "
                           "`raymlops cluster down` first, or add nodes with `raymlops cluster add-worker`")
    directory.mkdir(parents=True, exist_ok=True)
    ensure_token()
    port, dashboard_port = port or _free_port(), dashboard_port or _free_port()
    cluster = LocalCluster(dir=str(directory), gcs_address=f"127.0.0.1:{port}",
                           dashboard_url=f"http://127.0.0.1:{dashboard_port}")
    try:
        head = _start_node(directory, HEAD, [
            "--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={_free_port()}"],
            head_cpus, object_store_mb)
        cluster.nodes.append(head)
        cluster.save()
        say(f"head starting (pid {head.pid}, GCS {cluster.gcs_address})")
        head.node_id = _wait_for(head, cluster.dashboard_url, timeout_s)
        cluster.save()
        for _ in range(workers):
            add_worker(cluster, num_cpus=worker_cpus, object_store_mb=object_store_mb, timeout_s=timeout_s,
                       progress=say)
    except BaseException:
        down(directory)
        raise
    return cluster


def add_worker(cluster: LocalCluster, *, num_cpus: float = 1, object_store_mb: int = 512, timeout_s: float = 90,
               progress: Progress | None = None) -> NodeProcess:
    """Join one more worker node (as an autoscaler would replace a lost machine)."""
    used = {n.name for n in cluster.nodes}
    name = next(f"worker-{i}" for i in range(1, 10_000) if f"worker-{i}" not in used)
    node = _start_node(Path(cluster.dir), name, [f"--address={cluster.gcs_address}"], num_cpus, object_store_mb)
    cluster.nodes.append(node)
    cluster.save()
    node.node_id = _wait_for(node, cluster.dashboard_url, timeout_s)
    cluster.save()
    (progress or (lambda msg: None))(f"{name} joined (pid {node.pid}, node {node.node_id[:12]})")
    return node


def _session_members(sid: int) -> list[int]:
    """Processes of the session a node's `ray start` leads: Ray gives each worker its own process group,
    but they all stay in the session (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # after "pid (comm) ": state ppid pgrp session
            members.append(int(entry.name))
    return members


def _stop_group(pid: int, sig: int) -> None:
    for member in [pid, *(m for m in _session_members(pid) if m != pid)]:
        try:
            os.kill(member, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_node(cluster: LocalCluster, name: str) -> NodeProcess:
    """SIGKILL every process of one node (raylet, its workers, the node's agents): a machine failure."""
    node = cluster.node(name)
    _stop_group(node.pid, signal.SIGKILL)
    _reap(node.pid)
    return node


def down(directory: Path | None = None, *, grace_s: float = 20, progress: Progress | None = None) -> list[str]:
    """Stop this cluster's nodes (workers first, the head last); returns the names stopped."""
    directory = Path(directory or default_cluster_dir()).resolve()
    cluster = LocalCluster.load(directory)
    if cluster is None:
        return []
    stopped = []
    for node in sorted(cluster.nodes, key=lambda n: n.is_head):
        if pid_alive(node.pid):
            # `ray start --block` stops its processes on SIGTERM, in order, within ~3 s. Signalling them all
            # at once instead leaves the GCS waiting out the whole grace period.
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while pid_alive(node.pid) and time.monotonic() < deadline:
                _reap(node.pid)
                time.sleep(0.2)
            stopped.append(node.name)
        _stop_group(node.pid, signal.SIGKILL)  # anything of the group that outlived it
        _reap(node.pid)
        (progress or (lambda msg: None))(f"stopped {node.name}")
    (directory / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(temp_root(directory), ignore_errors=True)  # session folders (the node logs stay in `directory`)
    return stopped


def status(directory: Path | None = None) -> dict[str, Any]:
    """The recorded nodes with their process and GCS states; ``up`` is False when nothing runs."""
    directory = Path(directory or default_cluster_dir()).resolve()
    cluster = LocalCluster.load(directory)
    if cluster is None:
        return {"dir": str(directory), "up": False, "nodes": []}
    known: dict[str, dict[str, Any]] = {}
    reachable = True
    try:
        known = {n["node_id"]: n for n in list_nodes(cluster.dashboard_url)}
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        reachable = False
    nodes = []
    for n in cluster.nodes:
        gcs = known.get(n.node_id, {})
        nodes.append({"name": n.name, "pid": n.pid, "process": "running" if pid_alive(n.pid) else "gone",
                      "node_id": n.node_id, "state": gcs.get("state", "unknown"), "cpus": n.num_cpus,
                      "log": n.log})
    return {"dir": str(directory), "up": reachable, "gcs_address": cluster.gcs_address,
            "dashboard_url": cluster.dashboard_url, "nodes": nodes}
