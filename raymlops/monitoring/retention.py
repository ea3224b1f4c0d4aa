"""Retention of raw request records: the feedback log and the prediction journal keep inputs that may be
personal data, so they are cut to ``monitoring.retention`` (an age in days and a size in bytes).

Compaction rewrites a log whole (temp file, fsync, rename: ``workspace.write_text_atomic``) keeping its
newest lines in their order, so readers that rely on the order (``shadow.first_offset``) keep working. A
line that does not parse is dropped with the old ones. ``due`` is cheap (a stat and the first line), so
the monitor can ask it often and compact rarely.

Example::

    if due(path, cutoff=time.time() - 90 * 86400, max_bytes=512 << 20, time_key="received_at"):
        compact(path, cutoff=..., max_bytes=..., time_key="received_at")   # (kept, dropped)
"""

from __future__ import annotations

import json
from pathlib import Path

from raymlops.workspace import write_text_atomic


def _time_of(line: bytes, time_key: str) -> float | None:
    try:
        value = json.loads(line)
        return float(value[time_key])
    except (ValueError, KeyError, TypeError):
        return None


def due(path: Path, *, cutoff: float | None, max_bytes: int | None, time_key: str) -> bool:
    """Whether ``path`` holds more than ``max_bytes`` or a first line older than ``cutoff`` (or unreadable)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if max_bytes is not None and size > max_bytes:
        return True
    if cutoff is None or size == 0:
        return False
    with open(path, "rb") as f:
        first = f.readline()
    when = _time_of(first, time_key)
    return when is None or when < cutoff


def compact(path: Path, *, cutoff: float | None, max_bytes: int | None, time_key: str) -> tuple[int, int]:
    """Keep the lines of ``path`` timed at or after ``cutoff`` whose total, newest first, fits ``max_bytes``;
    return (kept, dropped). Nothing is rewritten when nothing is dropped."""
    if not path.is_file():
        return 0, 0
    lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]
    fresh = []
    for line in lines:
        when = _time_of(line, time_key)
        if when is not None and (cutoff is None or when >= cutoff):
            fresh.append(line if line.endswith(b"\n") else line + b"\n")
    if max_bytes is not None:
        total, start = 0, len(fresh)
        while start > 0 and total + len(fresh[start - 1]) <= max_bytes:
            start -= 1
            total += len(fresh[start])
        fresh = fresh[start:]
    dropped = len(lines) - len(fresh)
    if dropped:
        write_text_atomic(path, b"".join(fresh).decode("utf-8"))
    return len(fresh), dropped


__all__ = ["compact", "due"]
