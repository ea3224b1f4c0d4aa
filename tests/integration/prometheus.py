"""A real Prometheus server on 127.0.0.1 for tests (Debian's `prometheus` package), and promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.integration.servers import free_port

REQUIRE_ENV = "RAYMLOPS_REQUIRE_PROMETHEUS"
MISSING = "prometheus/promtool not found (apt-get install prometheus)"


def prometheus_bins() -> tuple[str, str]:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if prom and tool:
        return prom, tool
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {MISSING}", pytrace=False)
    pytest.skip(MISSING)


@contextmanager
def prometheus_scraping(targets: list[str], workdir: Path) -> Iterator[str]:
    """Start Prometheus scraping ``targets`` every second; yield its base URL; stop it after."""
    prom, _ = prometheus_bins()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      "scrape_configs:\n  - job_name: raymlops\n    static_configs:\n"
                      f"      - targets: {targets!r}\n")
    log = open(workdir / "prometheus.log", "w")
    proc = subprocess.Popen([prom, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                             f"--storage.tsdb.path={workdir / 'data'}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
