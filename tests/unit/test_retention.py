"""Retention of raw request records (issue 18, item 8): the feedback log and the prediction journal are cut
to `monitoring.retention` (age and bytes), newest lines kept in order, by the monitor itself."""

from __future__ import annotations

import json
import socket

from raymlops.config import MonitoringConfig
from raymlops.monitoring.monitor import Monitor
from raymlops.monitoring.retention import compact, due
from raymlops.monitoring.shadow import feedback_since

DAY = 86400.0


def _lines(path, key, times):
    path.write_text("".join(json.dumps({key: t, "record": {"x": i}, "predicted_at": t, "request_id": f"r{i}"}) + "\n"
                            for i, t in enumerate(times)))


def test_old_lines_go_and_the_rest_keep_their_order(tmp_path):
    path = tmp_path / "feedback.jsonl"
    now = 100 * DAY
    _lines(path, "received_at", [now - 95 * DAY, now - 91 * DAY, now - 30 * DAY, now - DAY])
    assert due(path, cutoff=now - 90 * DAY, max_bytes=None, time_key="received_at")
    assert compact(path, cutoff=now - 90 * DAY, max_bytes=None, time_key="received_at") == (2, 2)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [k["record"]["x"] for k in kept] == [2, 3]
    assert not due(path, cutoff=now - 90 * DAY, max_bytes=None, time_key="received_at")
    assert compact(path, cutoff=now - 90 * DAY, max_bytes=None, time_key="received_at") == (2, 0)
    # the loop's reader still finds its rows by time in the compacted log
    assert len(feedback_since(path, now - 2 * DAY)) == 1


def test_the_size_limit_keeps_the_newest_lines_that_fit(tmp_path):
    path = tmp_path / "feedback.jsonl"
    _lines(path, "received_at", [float(t) for t in range(100)])
    newest_ten = sum(len(line) + 1 for line in path.read_text().splitlines()[-10:])
    assert due(path, cutoff=None, max_bytes=newest_ten, time_key="received_at")
    kept, dropped = compact(path, cutoff=None, max_bytes=newest_ten, time_key="received_at")
    assert (kept, dropped) == (10, 90) and path.stat().st_size == newest_ten
    assert json.loads(path.read_text().splitlines()[0])["record"]["x"] == 90


def test_a_line_that_does_not_parse_is_dropped_with_the_old(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text('{"received_at": 50.0}\n{"received_at": 5' + "\n")
    assert compact(path, cutoff=10.0, max_bytes=None, time_key="received_at") == (1, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_monitor_enforces_retention_at_start_and_on_its_calls(tmp_path):
    import time

    folder = tmp_path / "monitoring" / "m"
    folder.mkdir(parents=True)
    now = time.time()
    _lines(folder / "feedback.jsonl", "received_at", [now - 200 * DAY, now - 10])
    _lines(folder / "predictions.jsonl", "time", [now - 100 * DAY, now - 99 * DAY, now - 5])
    cfg = MonitoringConfig(metrics_port=_free_port())  # the shipped retention: 90 days, 512 MiB
    monitor = Monitor("m", str(tmp_path), cfg, "classification")
    assert len((folder / "feedback.jsonl").read_text().splitlines()) == 1
    assert monitor.predictions.lines == 1 and len(monitor.predictions.load()) == 1
    _lines(folder / "feedback.jsonl", "received_at", [now - 91 * DAY, now])
    assert monitor.enforce_retention(now=now) == {"feedback.jsonl": 1}
