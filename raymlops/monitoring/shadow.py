"""Two versions scored on the same labelled traffic: the paired evidence of the canary and rollback verdicts.

A canary sends each request to one version, so the monitor's own windows hold no row scored by both:
comparing them is unpaired, and a week of two versions' answers can differ because the weeks differed
(a champion judged in June against one judged in July). Every labelled request's inputs are kept in
``feedback.jsonl`` though, so the loop scores *both* versions itself on every labelled row predicted
since the canary began (or since the promotion, for a rollback): a paired comparison on several times
the rows, with what the rows share cancelled out of the difference.

``feedback.jsonl`` only grows and is appended in the order labels arrive, so the first line received at or
after a time is found by bisecting the file on its ``received_at`` (a prediction is always older than its
label), and only the lines after it are parsed.

Example::

    lines = feedback_since(path, since=promoted_at)
    frame = labelled_traffic(lines, schema, target="delayed", task="classification")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from raymlops.monitoring.feedback import PREDICTED_AT

_LINEAR_BYTES = 64 * 1024  # below this, read line by line


def _received_at(line: bytes) -> float | None:
    try:
        return float(json.loads(line)["received_at"])
    except (ValueError, KeyError, TypeError):
        return None


def first_offset(path: Path, since: float) -> int:
    """Byte offset of the first line whose label arrived at or after ``since`` (file size when none did)."""
    size = os.path.getsize(path)
    lo, hi = 0, size  # lo never passes the answer: it moves only past a line older than since
    with open(path, "rb") as f:
        while hi - lo > _LINEAR_BYTES:
            mid = (lo + hi) // 2
            f.seek(mid)
            f.readline()  # to the start of the next line
            received = _received_at(f.readline())
            if received is not None and received < since:
                lo = mid  # that line and the one holding mid are older: the answer is beyond mid
            else:
                hi = mid
        f.seek(lo)
        if lo:
            f.readline()  # the line holding lo is older than since (or lo is 0)
        offset = f.tell()
        for line in iter(f.readline, b""):
            received = _received_at(line)
            if received is not None and received >= since:
                return offset
            offset += len(line)
    return offset


def feedback_since(path: Path, since: float) -> list[str]:
    """The labelled lines of ``path`` whose prediction was made at or after ``since`` (wall clock)."""
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        f.seek(first_offset(path, since))
        out = []
        for raw in f:
            try:
                item = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a crash
            if float(item.get(PREDICTED_AT) or 0) >= since:
                out.append(raw.decode("utf-8"))
    return out


__all__ = ["feedback_since", "first_offset"]
