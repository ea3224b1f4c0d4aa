"""The monitor's Prometheus endpoint comes up even when its port is still held as it starts (a monitor that
Ray restarts can start before its dead predecessor has let the port go)."""

from __future__ import annotations

import socket
import urllib.request

from raymlops.monitoring.monitor import _Metrics
from tests.helpers import wait_for


def test_a_port_still_held_at_start_is_bound_once_it_is_free():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        metrics = _Metrics("held", "127.0.0.1", port)
        assert metrics.endpoint is None  # the port is taken: nothing is exported yet
        metrics.latency_slo.labels("held").set(0.05)
    finally:
        holder.close()
    endpoint = wait_for(lambda: metrics.endpoint, timeout_s=15, what="the endpoint to bind once the port is free")
    assert endpoint == f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(endpoint, timeout=5) as resp:
        body = resp.read().decode()
    assert 'raymlops_latency_slo_seconds{model="held"} 0.05' in body
