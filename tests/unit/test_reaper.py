"""raymlops.runtime.reaper finds a node's processes by session folder and Ray's environment marker (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from raymlops.runtime import reaper

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
HOLD = "import sys, time; f = open(sys.argv[1], 'a'); time.sleep(120)"


def _open_files(pid: int) -> set[str]:
    """The files ``pid`` holds open now. Its descriptors come and go while Python starts (an fd listed
    a moment ago may be closed before it is read), so one that vanishes is skipped."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return found


def _holding(path, ray_child: bool, raylet: str = "12345") -> subprocess.Popen:
    """A process holding ``path`` open: Ray's (its program lies under a ray/ folder, as Ray's own
    scripts do, with RAY_RAYLET_PID set), or a user's."""
    env = {**os.environ, "RAY_RAYLET_PID": raylet} if ray_child else \
        {k: v for k, v in os.environ.items() if k != "RAY_RAYLET_PID"}
    program = path.parent.parent / ("ray" if ray_child else "user") / "hold.py"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(HOLD)
    proc = subprocess.Popen([sys.executable, str(program), str(path)], env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if str(path) in _open_files(proc.pid):
            return proc
        time.sleep(0.05)
    raise AssertionError("the helper process never opened its file")


def test_only_ray_started_processes_of_that_session_are_reaped(tmp_path):
    session, other = tmp_path / "session_a", tmp_path / "session_b"
    (session / "logs").mkdir(parents=True)
    other.mkdir()
    worker = _holding(session / "logs" / "worker.out", ray_child=True)
    user_tail = _holding(session / "logs" / "worker.err", ray_child=False)  # e.g. a user's tail -f
    other_node = _holding(other / "raylet.out", ray_child=True)
    try:
        assert reaper.node_processes(str(session)) == [worker.pid]
        assert reaper.reap(str(session)) == [worker.pid]
        assert worker.wait(timeout=10) != 0
        assert user_tail.poll() is None and other_node.poll() is None
        assert reaper.node_processes(str(session)) == []
    finally:
        for p in (worker, user_tail, other_node):
            p.kill()
            p.wait()


def test_a_child_of_this_raylet_is_found_even_without_a_file_in_the_session(tmp_path):
    (tmp_path / "session_a").mkdir()
    child = _holding(tmp_path / "elsewhere.out", ray_child=True, raylet="424242")
    try:
        assert reaper.node_processes(str(tmp_path / "session_a")) == []
        assert reaper.node_processes(str(tmp_path / "session_a"), raylet_pid=424242) == [child.pid]
    finally:
        child.kill()
        child.wait()


def test_the_driver_is_followed_by_its_start_in_ticks_since_boot_not_by_the_wall_clock(monkeypatch):
    """psutil's create_time adds a boot time derived from the wall clock: after a clock step (NTP) a live
    driver looked dead, and the reaper stopped the Ray of a pytest session under it (GCS gone, driver
    _exit-ed mid-suite)."""
    import os
    import subprocess
    import sys

    import psutil._pslinux

    me = os.getpid()
    started = reaper.start_ticks(me)
    assert started is not None and reaper._alive(me, started)
    real = psutil._pslinux.boot_time
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real() + 5.0)  # the clock stepped 5 s
    assert reaper._alive(me, started)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_started = reaper.start_ticks(child.pid)
    child.wait()
    assert child_started is not None and not reaper._alive(child.pid, child_started)
    assert reaper.start_ticks(child.pid) is None
