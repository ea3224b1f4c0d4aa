"""The flagship replay as `make demo` runs it, on a sample of three months: real data through HTTP in
weekly steps, the loop deciding on its own, the monitor killed mid-month, and the report written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.test_cli import ENV
from tests.helpers import REPO

pytestmark = pytest.mark.e2e


def test_replay_streams_months_through_the_loop_and_writes_the_report(tmp_path):
    prep = subprocess.run([sys.executable, "examples/flights/prepare.py", "--out", "examples/flights/data"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    done = subprocess.run([sys.executable, "examples/flights/replay.py", "--sample", "0.05", "--months", "4-6",
                           "--kill-monitor-month", "6", "--out", str(tmp_path)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    print(done.stdout[-2500:])
    report = json.loads((tmp_path / "report.json").read_text())
    months = report["months"]
    assert [m["month"] for m in months] == [4, 5, 6]
    for m in months:
        assert sum(m["versions"].values()) == m["rows"] > 1000  # every flight answered
        assert 0.55 < m["static_auc"] < 0.9 and 0.55 < m["served_auc"] < 0.9
        assert 0.55 < m["scheduled_all_auc"] < 0.9 and 0.55 < m["scheduled_window_auc"] < 0.9
    # The loop steps at least weekly (days 1-7, 8-14, 15-21, 22-28, 29-end); the cron baselines refit at
    # every step, the all-history one on ever more rows, the window one on fewer.
    assert [m["steps"] for m in months] == [5, 5, 5]
    all_rows = [m["scheduled_all_train_rows"] for m in months]
    assert all_rows == sorted(all_rows) and all_rows[0] < all_rows[-1]
    assert all(m["scheduled_window_train_rows"] < m["scheduled_all_train_rows"] for m in months)
    assert report["mean_scheduled_auc"] == max(report["mean_scheduled_all_auc"], report["mean_scheduled_window_auc"])
    cost = report["cost"]
    assert cost["scheduled_all"]["retrains"] == cost["scheduled_window"]["retrains"] == 15
    assert cost["scheduled_all"]["train_seconds"] > 0
    assert cost["closed_loop"]["retrains"] == len(report["retrains"]) >= 1  # the 28-day schedule, at least
    decisions = [json.loads(line) for line in open(report["decisions_log"])]
    for d in decisions:
        if d["kind"] == "retrain" and d["action"] == "retrain":
            assert d["reasons"] and d["outcome"]["result"] in ("challenger", "rejected by the gates"), d
        # Canary and rollback verdicts compare both versions on the same labelled rows.
        if d["kind"] in ("canary", "rollback") and d["action"] in ("promote", "discard", "rollback", "keep") \
                and "comparison" in d["evidence"]:
            assert d["evidence"]["comparison"]["test"].startswith("paired"), d["evidence"]["comparison"]
    # April's weather is not January's: the drift is in the report, and with labels it is context only.
    assert len(months[0]["drifted"]) >= 3
    assert not any("features drifted" in r or "score distribution drifted" in r
                   for d in decisions if d["action"] == "retrain" and d["evidence"].get("labelled", 0) >= 500
                   for r in d["reasons"])
    killed = months[2]["monitor_killed"]
    assert killed["killed"] and killed["failed_requests"] == 0
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "closed loop" in md and "scheduled: retrain at every step on all labelled history" in md
    assert len(decisions) == sum(len(m["decisions"]) + m["waits"] for m in months)
