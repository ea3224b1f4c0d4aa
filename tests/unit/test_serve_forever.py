"""`raymlops serve` keeps watching its service, and ends (non-zero) when the service stops answering."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from raymlops.errors import ServingError
from raymlops.serving.deploy import serve_forever


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Model(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"model": "m", "champion": {"version": "3"}, "challenger": None}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_service_that_never_answers_ends_the_watch_after_the_bound():
    said: list[str] = []
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ServingError, match=r"stopped answering: 4 status checks in a row failed.*raymlops serve"):
        serve_forever(url, said.append, max_failed_checks=4, check_interval_s=0.01)
    assert [m for m in said if m.startswith("status check failed")][-1].startswith("status check failed (4 of 4")


def test_the_count_is_of_failures_in_a_row_and_the_service_dying_ends_it():
    """A loop step runs between checks; the server answers for a while (versions said once), then dies."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    said: list[str] = []
    ticks: list[int] = []

    def tick():
        ticks.append(1)
        if len(ticks) == 5:  # the service dies while the loop runs
            server.shutdown()
            server.server_close()

    with pytest.raises(ServingError, match="3 status checks in a row"):
        serve_forever(url, said.append, tick=tick, tick_every_s=0.0, max_failed_checks=3, check_interval_s=0.01)
    assert said[0] == "serving m: champion v3"
    assert said.count("serving m: champion v3") == 1  # said when it changes, not at every check
    assert len(ticks) >= 5 + 2  # the loop kept stepping while the failures were counted


def test_status_finds_the_recorded_service_and_says_when_nothing_is_served(tmp_path):
    """Issue 15.1: status reads the live view from the `raymlops serve` recorded for the workdir, over HTTP."""
    import subprocess
    import sys

    from raymlops.config import load_config
    from raymlops.loop.controller import _service_evidence
    from raymlops.serving import service_record
    from tests.helpers import smoke_config

    cfg = load_config(smoke_config(tmp_path, workdir=str(tmp_path / "work")))
    assert "nothing is served" in _service_evidence(cfg)["error"]

    class _Monitor(_Model):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"rows": 12, "drifted": [], "quality": {"1": {"labelled": 0}}}).encode()
            self.send_response(200 if self.path == "/v1/monitor" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Monitor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service_record.write(cfg.workdir_path, cfg.model_name, url=f"http://127.0.0.1:{server.server_address[1]}")
        assert _service_evidence(cfg) == {"rows": 12, "drifted": [], "quality": {"1": {"labelled": 0}}}
    finally:
        server.shutdown()
        server.server_close()
    assert "did not answer" in _service_evidence(cfg)["error"]
    # A record left by a `serve` that was killed is not a service: removed, and said so
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = service_record.path_of(cfg.workdir_path, cfg.model_name)
    record.write_text(json.dumps({**json.loads(record.read_text()), "pid": gone.pid}))
    assert "nothing is served" in _service_evidence(cfg)["error"] and not record.exists()
