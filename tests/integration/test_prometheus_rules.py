"""The operations files: the alert rules are valid and fire as intended; the scrape config is valid."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import REPO
from tests.integration.prometheus import prometheus_bins

pytestmark = pytest.mark.integration
PROM = REPO / "cluster" / "prometheus"


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    _, promtool = prometheus_bins()
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=PROM, capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM, capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_scrape_config_is_valid():
    _, promtool = prometheus_bins()
    done = subprocess.run([promtool, "check", "config", "--syntax-only", "prometheus.yml"], cwd=PROM,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_dashboard_queries_only_metrics_that_exist():
    dash = json.loads((REPO / "cluster" / "grafana" / "raymlops-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    from raymlops.monitoring import monitor

    source = (REPO / "raymlops" / "monitoring" / "monitor.py").read_text()
    for name in ("raymlops_requests", "raymlops_request_latency_seconds", "raymlops_feature_psi",
                 "raymlops_drifted_features", "raymlops_live_quality", "raymlops_model_version",
                 "raymlops_events", "raymlops_monitor_lost_samples", "raymlops_prediction_mean"):
        assert name in exprs and f'"{name}"' in source, name
    assert monitor.NAMESPACE
