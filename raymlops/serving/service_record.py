"""Where a running ``raymlops serve`` can be found: ``<workdir>/serving/<model>.json``.

Why: ``raymlops status`` must show the live view of the service without joining its Ray cluster (Ray
rewrites a loopback address to the machine's, and joining a cluster costs seconds or hangs). ``serve``
records its URL and pid when the service answers and removes the record when it stops; status reads it,
checks the pid, and asks the service over HTTP (``GET /v1/monitor``).

Example::

    write(workdir, "flights-delay", url="http://127.0.0.1:8000")
    read(workdir, "flights-delay")     # {"url": ..., "pid": ..., ...} or None when nothing is served
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from raymlops.workspace import pid_alive, write_json_atomic


def path_of(workdir: str | Path, model: str) -> Path:
    return Path(workdir) / "serving" / f"{model}.json"


def write(workdir: str | Path, model: str, *, url: str, ray_address: str | None = None) -> Path:
    return write_json_atomic(path_of(workdir, model), {
        "model": model, "url": url, "pid": os.getpid(), "host": socket.gethostname(),
        "ray_address": ray_address, "started_at": time.time()})


def read(workdir: str | Path, model: str) -> dict[str, Any] | None:
    """The record of a service that still runs; None when there is none, or its process has gone (the
    stale record of a killed ``serve`` is removed)."""
    path = path_of(workdir, model)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("host") == socket.gethostname() and not pid_alive(int(record.get("pid", 0))):
        path.unlink(missing_ok=True)
        return None
    return record


def remove(workdir: str | Path, model: str) -> None:
    """Remove this process's record (not a newer service's)."""
    path = path_of(workdir, model)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


__all__ = ["path_of", "read", "remove", "write"]
