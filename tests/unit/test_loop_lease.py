"""One loop writer (issue 18, item 5): `raymlops serve` with the loop on and `raymlops loop` cannot both step
one model's loop. Real processes: the lease's holder is another Python process, alive and then killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from raymlops.loop.lease import Lease, LeaseHeld

HOLD = """
import sys, time
from raymlops.loop.lease import Lease
Lease(sys.argv[1], purpose="`raymlops serve`", ttl_s=float(sys.argv[2])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(path, ttl_s=60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(ttl_s)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_until_the_holder_dies(tmp_path):
    path = tmp_path / "loop" / "m" / "lease.json"
    holder = _holder(path)
    try:
        with pytest.raises(LeaseHeld, match=rf"run by `raymlops serve` \(pid {holder.pid} on .*one loop writer"):
            Lease(path, purpose="`raymlops loop`").acquire(heartbeat=False)
    finally:
        holder.kill()
        holder.wait()
    taken = Lease(path, purpose="`raymlops loop`").acquire(heartbeat=False)  # a dead pid on this host: at once
    assert taken["purpose"] == "`raymlops loop`" and json.loads(path.read_text())["id"] == taken["id"]


def test_the_holder_renews_its_lease_while_it_lives(tmp_path):
    path = tmp_path / "lease.json"
    holder = _holder(path, ttl_s=1.5)  # renewed every 0.5 s by its heartbeat thread
    try:
        first = json.loads(path.read_text())["expires_at"]
        time.sleep(2.0)  # longer than the TTL: only renewals keep it
        assert json.loads(path.read_text())["expires_at"] > first
        with pytest.raises(LeaseHeld):
            Lease(path).acquire(heartbeat=False)
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_of_another_host_is_taken_only_after_it_expires(tmp_path):
    path = tmp_path / "lease.json"
    path.write_text(json.dumps({"id": "elsewhere:1", "host": "elsewhere", "pid": 1, "purpose": "`raymlops loop`",
                                "taken_at": 1000.0, "expires_at": 1060.0}))
    with pytest.raises(LeaseHeld, match="pid 1 on elsewhere"):
        Lease(path).acquire(now=1059.0, heartbeat=False)
    assert Lease(path).acquire(now=1061.0, heartbeat=False)["host"] != "elsewhere"


def test_one_process_renews_its_own_lease_and_release_frees_it(tmp_path):
    path = tmp_path / "lease.json"
    a, b = Lease(path), Lease(path)  # two controllers of one process share its lease
    first = a.acquire(now=100.0, heartbeat=False)
    again = b.acquire(now=110.0, heartbeat=False)
    assert again["taken_at"] == first["taken_at"] == 100.0 and again["expires_at"] == 110.0 + b.ttl_s
    a.release()
    assert not path.exists()


def test_a_loop_step_of_a_second_writer_changes_nothing(tmp_path):
    """The controller takes the lease before it looks at anything: a second writer's step raises, and the
    loop's state and decision log stay the holder's."""
    from raymlops.config import load_config
    from raymlops.loop.controller import LoopController
    from tests.helpers import smoke_config

    cfg = load_config(smoke_config(tmp_path, workdir=str(tmp_path / "work")))
    controller = LoopController(cfg, monitor=object(), purpose="`raymlops loop`")
    holder = _holder(controller.dir / "lease.json")
    try:
        with pytest.raises(LeaseHeld, match="`raymlops serve`"):
            controller.tick(evidence={"quality": {}})
    finally:
        holder.kill()
        holder.wait()
    assert not controller.state_path.exists() and not controller.decisions_path.exists()
