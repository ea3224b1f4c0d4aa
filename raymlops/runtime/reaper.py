"""Stop an embedded Ray's processes once the driver that started it is gone, however it went.

``ray.init`` ties the GCS and raylet to the driver (the kernel kills them when it dies), but Ray
2.60's agents and workers can outlive them: a SIGKILLed ``raymlops run`` left its training workers
running for seconds and its dashboard and runtime-env agents for good (they hang reporting the
raylet's death to a GCS that is gone). Every process of the node is Ray's by its title (``ray::...``)
or program, and keeps its log files open in the node's session folder
(``/tmp/ray/session_<time>_<driver pid>``, unique per cluster), so a small
watcher started beside the driver (``python -m raymlops.runtime.reaper PID SESSION_DIR``, in its own session
so a signal to the driver's group does not stop it) waits for the driver to end, gives Ray's own
shutdown a moment, then terminates what is left of that node and nothing else.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

GRACE_S = 3.0  # after the driver ends: Ray's own shutdown usually finishes within this


def node_processes(session_dir: str, raylet_pid: int | None = None) -> list[int]:
    """Live Ray processes of the node (Linux /proc, our own user).

    A process is the node's when it is Ray's (titled ``ray::...`` or running Ray's own code) and either
    holds a file open in the node's session folder or names this raylet in its environment. A user's
    ``tail -f`` of a log there is not Ray's; another node has another folder and raylet. The environment
    alone is not enough: Ray retitles its processes, which can overwrite what /proc shows of it.
    """
    prefix = session_dir.rstrip("/") + "/"
    ours = f"RAY_RAYLET_PID={raylet_pid}".encode() if raylet_pid else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if _zombie(entry) or not _is_ray(entry):
                continue
            if ours and ours in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
                continue
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd).startswith(prefix):
                        found.append(int(entry.name))
                        break
                except OSError:
                    continue
        except OSError:  # gone, or not ours
            continue
    return found


def _is_ray(proc: Path) -> bool:
    argv = (proc / "cmdline").read_bytes().split(b"\0")
    return argv[0].startswith(b"ray::") or any(b"/ray/" in a for a in argv[:2])


def _zombie(proc: Path) -> bool:
    stat = (proc / "stat").read_text()
    return stat[stat.rindex(")") + 2] == "Z"


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (``/proc/PID/stat`` field 22), or None if it
    is gone. Not psutil's ``create_time``: that adds the boot time computed from the wall clock, so a
    clock step (NTP) changes it and a live driver looked dead, which stopped its Ray under it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _alive(pid: int, started: int) -> bool:
    """The same process still runs (a reused pid has another start time)."""
    return not _zombie_pid(pid) and start_ticks(pid) == started


def _zombie_pid(pid: int) -> bool:
    try:
        return _zombie(Path(f"/proc/{pid}"))
    except OSError:
        return True


def reap(session_dir: str, raylet_pid: int | None = None,
         signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL)) -> list[int]:
    """Terminate the node's remaining processes, then kill those that ignore it; returns the pids hit."""
    hit: list[int] = []
    for sig in signals:
        pids = node_processes(session_dir, raylet_pid)
        _log(session_dir, f"{sig.name} to {pids}")
        for pid in pids:
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except OSError:
                pass
        if not pids:
            break
        time.sleep(GRACE_S)
    return sorted(set(hit))


def watch(driver_pid: int, session_dir: str, raylet_pid: int | None = None, poll_s: float = 1.0) -> list[int]:
    started = start_ticks(driver_pid)
    while started is not None and _alive(driver_pid, started):
        time.sleep(poll_s)
    _log(session_dir, f"driver {driver_pid} ended")
    time.sleep(GRACE_S)
    return reap(session_dir, raylet_pid)


def _log(session_dir: str, message: str) -> None:
    """Nobody sees this process's output: its account goes to the session's logs."""
    try:
        with open(Path(session_dir) / "logs" / "raymlops-reaper.log", "a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    except OSError:
        pass


def start(session_dir: str, raylet_pid: int | None = None) -> None:
    """Start the watcher for this process and the Ray node it started (Linux only)."""
    import subprocess

    if not sys.platform.startswith("linux"):
        return
    subprocess.Popen([sys.executable, "-m", "raymlops.runtime.reaper", str(os.getpid()), session_dir, str(raylet_pid or 0)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


if __name__ == "__main__":
    try:
        reaped = watch(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) or None)
        _log(sys.argv[2], f"stopped {len(reaped)} leftover Ray processes {reaped}")
    except Exception as exc:
        _log(sys.argv[2], f"failed: {exc!r}")
