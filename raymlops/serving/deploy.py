"""Deploying the Serve application from a pipeline config (the driver side of serving).

``serving.settings.settings_for(cfg)`` resolves what the replicas need (``ServeSettings``): the
registered model, where the registry is, and the input schema of the current champion (the API is
typed by it). ``deploy(cfg)``
starts Serve on ``serving.host:port`` (127.0.0.1 by default) and runs the application; ``serve_forever``
keeps it up until Ctrl-C. Promotion needs no redeploy: replicas follow the registry aliases.

Example::

    with ray_runtime():
        url = deploy(cfg)          # http://127.0.0.1:8000/
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from raymlops import logs
from raymlops.config import PipelineConfig, ServingConfig
from raymlops.errors import RaymlopsError, ServingError
from raymlops.serving.settings import settings_for


def base_url(serving: ServingConfig) -> str:
    """Where a client on this machine reaches the service (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if serving.host in ("0.0.0.0", "::") else serving.host
    return f"http://{host}:{serving.port}{serving.route_prefix.rstrip('/')}"


def running_http() -> tuple[str, int] | None:
    """Host and port of the Serve instance already running on the connected cluster, if any."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    return client.http_config.host, client.http_config.port


def start_serve(host: str, port: int, request_timeout_s: float, access_log: bool) -> None:
    """Start Serve's proxies, or check that the running ones listen where this model's config says.

    Serve keeps one set of HTTP options per cluster; a second ``serve.start`` with another port only
    logs a warning, and the model would then answer somewhere its config does not say.
    """
    from ray import serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig

    running = running_http()
    if running is not None and running != (host, port):
        raise ServingError(f"Ray Serve on this cluster already listens on {running[0]}:{running[1]}, not on "
                           f"{host}:{port} as serving.host/serving.port say; set them to match, or stop the "
                           "other applications (`serve shutdown`)")
    from ray.exceptions import RayActorError

    options = dict(http_options=HTTPOptions(host=host, port=port, request_timeout_s=request_timeout_s),
                   logging_config=LoggingConfig(enable_access_log=access_log, log_level="WARNING"),
                   controller_options={"runtime_env": {"env_vars": PROXY_START_ENV}})
    try:
        serve.start(**options)
    except RayActorError:
        # The controller gave up on a proxy that was still starting and killed it; it starts another at
        # once (with a longer wait). The controller now exists, so this call returns without waiting, and
        # ``deploy`` waits for ``/readyz`` through the new proxy.
        serve.start(**options)


# Serve's controller kills a proxy that has not answered its ready check within 5 s. On a small machine
# busy with training (2 cores, one test per core), starting a proxy's Python process alone took longer,
# and ``serve.start`` failed with ActorDiedError. A proxy that is slow to start is not unhealthy; a value
# the user set in the environment wins.
PROXY_READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_START_ENV = {PROXY_READY_ENV: os.environ.get(PROXY_READY_ENV, "30")}


def deploy(cfg: PipelineConfig, *, port: int | None = None, ready_timeout_s: float = 120.0,
           **serving_overrides: Any) -> str:
    """Run the application on the connected Ray cluster; return its base URL once ``/readyz`` says ready."""
    from ray import serve

    from raymlops.serving.app import build_app

    if port is not None:
        serving_overrides["port"] = port
    settings = settings_for(cfg, **serving_overrides)
    s = settings.serving
    logs.reroute()  # importing Serve gave its driver-side logger a console handler
    start_serve(s.host, s.port, s.request_timeout_s, s.access_log)
    app_name = settings.app_name
    try:
        serve.run(build_app(settings), name=app_name, route_prefix=s.route_prefix, blocking=False)
        logs.reroute()  # Serve configured its driver-side logger when it started
    except Exception as exc:
        why = _why(app_name) or (str(exc) if isinstance(exc, RaymlopsError) else f"{type(exc).__name__}: {exc}")
        raise ServingError(f"deploying {app_name!r} failed: {why}") from exc
    url = base_url(s)
    wait_ready(url, ready_timeout_s)
    return url


def _why(app_name: str) -> str:
    """Serve's own account of a failed deployment (the replica's traceback), shortened."""
    from ray import serve

    try:
        app = serve.status().applications[app_name]
    except Exception:
        return ""
    messages = [d.message for d in app.deployments.values() if d.message] or [app.message]
    return "\n".join(m.strip()[-2000:] for m in messages if m)


def wait_ready(url: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise ServingError(f"{url} did not become ready within {timeout_s:.0f} s (last: {last})")


def undeploy(app_name: str) -> None:
    from ray import serve

    serve.delete(app_name)


MAX_FAILED_CHECKS = 15  # in a row, one every CHECK_INTERVAL_S: ~30 s of a service that does not answer
CHECK_INTERVAL_S = 2.0


def serve_forever(url: str, say: Any = print, tick: Any = None, tick_every_s: float = 60.0, *,
                  max_failed_checks: int = MAX_FAILED_CHECKS, check_interval_s: float = CHECK_INTERVAL_S) -> None:
    """Block until Ctrl-C, printing the served versions when they change, and running ``tick`` (one
    step of the closed loop) every ``tick_every_s``: a failing step is reported, never fatal.

    A service that stops answering (Ray or its proxy died) is fatal after ``max_failed_checks`` checks in a
    row: ServingError, so ``raymlops serve`` exits 1 saying so instead of printing failures without end."""
    last = None
    failed, first_failure = 0, 0.0
    next_tick = time.monotonic() + tick_every_s
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/model", timeout=5) as resp:
                    info = json.loads(resp.read())
                now = {a: (info.get(a) or {}).get("version") for a in ("champion", "challenger")}
                if now != last:
                    say(f"serving {info['model']}: " + ", ".join(f"{a} v{v}" for a, v in now.items() if v))
                    last = now
                failed = 0
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                failed += 1
                first_failure = time.monotonic() if failed == 1 else first_failure
                say(f"status check failed ({failed} of {max_failed_checks} in a row): {exc}")
                if failed >= max_failed_checks:
                    raise ServingError(
                        f"the service at {url} stopped answering: {failed} status checks in a row failed over "
                        f"{time.monotonic() - first_failure:.0f} s (last: {exc}). Ray or its Serve proxy has "
                        "probably died (see the Ray logs under /tmp/ray/session_latest/logs); start it again "
                        "with `raymlops serve CONFIG`")
            if tick is not None and time.monotonic() >= next_tick:
                try:
                    tick()
                except Exception as exc:  # the service outlives a failed loop step
                    say(f"loop step failed: {type(exc).__name__}: {exc}")
                next_tick = time.monotonic() + tick_every_s
            time.sleep(check_interval_s)
    except KeyboardInterrupt:
        say("stopping")
