"""One writer per loop: a lease on ``<workdir>/loop/<model>/lease.json`` with an expiry.

Why: ``raymlops serve`` (with the loop on) and ``raymlops loop`` both read and rewrite the loop's state;
two of them would start two retrains for one trigger. The loop takes the lease before each step; while
the holding process lives a heartbeat thread renews it, so a step that retrains for an hour keeps it. A
process that dies stops renewing: its lease expires after ``ttl_s`` (at once when it ran on this host and
its pid is gone). Another process's step raises ``LeaseHeld`` naming the holder, so ``raymlops loop``
says who runs the loop and waits, retrying each step.

The identity is the process (host and pid): every controller of one process shares its lease.

Example::

    lease = Lease(workdir / "loop" / "flights-delay" / "lease.json", purpose="raymlops serve")
    lease.acquire()        # raises LeaseHeld when another live process holds it
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raymlops.errors import RaymlopsError
from raymlops.workspace import pid_alive, write_json_atomic

DEFAULT_TTL_S = 60.0
_heartbeats: dict[str, threading.Event] = {}  # lease path -> stop event of this process's renewing thread
_heartbeats_lock = threading.Lock()


class LeaseHeld(RaymlopsError):
    """Another live process runs this loop."""


class Lease:
    def __init__(self, path: str | Path, *, purpose: str = "the loop", ttl_s: float = DEFAULT_TTL_S) -> None:
        self.path = Path(path)
        self.purpose = purpose
        self.ttl_s = ttl_s
        self.host, self.pid = socket.gethostname(), os.getpid()

    @property
    def holder_id(self) -> str:
        return f"{self.host}:{self.pid}"

    def read(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # none yet, or damaged: nobody holds a lease it cannot prove
        return value if isinstance(value, dict) else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _free(self, current: dict[str, Any] | None, now: float) -> bool:
        if current is None or current.get("id") == self.holder_id:
            return True
        if float(current.get("expires_at", 0)) < now:
            return True
        return current.get("host") == self.host and not pid_alive(int(current.get("pid", 0)))

    def acquire(self, now: float | None = None, heartbeat: bool = True) -> dict[str, Any]:
        """Take or renew the lease; raise LeaseHeld naming the holder when another live process has it."""
        now = time.time() if now is None else now
        with self._locked():
            current = self.read()
            if not self._free(current, now):
                raise LeaseHeld(
                    f"the loop of {self.path.parent.name!r} is run by {current.get('purpose', 'another process')} "
                    f"(pid {current.get('pid')} on {current.get('host')}, lease renewed until "
                    f"{time.strftime('%H:%M:%S', time.localtime(float(current['expires_at'])))}); one loop writer "
                    "at a time. Stop that one, or let it run the loop; this one waits and retries each step")
            taken = current.get("taken_at", now) if current and current.get("id") == self.holder_id else now
            record = {"id": self.holder_id, "host": self.host, "pid": self.pid, "purpose": self.purpose,
                      "taken_at": taken, "expires_at": now + self.ttl_s}
            write_json_atomic(self.path, record)
        if heartbeat:
            self._start_heartbeat()
        return record

    def release(self) -> None:
        """Give the lease up (only our own), and stop renewing it."""
        with _heartbeats_lock:
            stop = _heartbeats.pop(str(self.path), None)
        if stop is not None:
            stop.set()
        with self._locked():
            current = self.read()
            if current is not None and current.get("id") == self.holder_id:
                self.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        with _heartbeats_lock:
            if str(self.path) in _heartbeats:
                return
            stop = _heartbeats[str(self.path)] = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    self.acquire(heartbeat=False)
                except (LeaseHeld, OSError):  # taken over after we stalled past the expiry: the next step says so
                    with _heartbeats_lock:
                        _heartbeats.pop(str(self.path), None)
                    return

        threading.Thread(target=renew, name=f"lease {self.path.parent.name}", daemon=True).start()


__all__ = ["DEFAULT_TTL_S", "Lease", "LeaseHeld"]
