"""Benchmark of online serving: raymlops on Ray Serve vs a plain FastAPI app vs ``mlflow models serve``.

What it measures (all in ONE invocation, same model, same requests, same load generator)

0. A tiny model is trained first: ``configs/smoke.yaml`` (3,000 flights) with ``training.epochs: 2``, in
   a temp workdir (MLflow SQLite there); version 1 becomes the champion. Requests are 256 real records
   (flights of the smoke CSV joined with the weather at their departure hour, the input schema's columns,
   each checked against the model's generated pydantic ``Record``), cycled in the same order for every
   target; one record per request. Before timing, the first 8 records are scored by each target and the
   scores compared (they must agree to 1e-6).

1. Three targets, each started as its own process tree (the load generator stays in this process):
   (a) raymlops: ``raymlops.serving.deploy.deploy(cfg, port, ...)`` on a local Ray started by
       ``ray_runtime(num_cpus=2)``, pinned to 1 replica (``min_replicas = max_replicas = 1``), everything
       else as raymlops ships it (dynamic batching on: 16 / 5 ms, monitoring on with sample_rate 1,
       access log off, 0.5 CPU per replica). ``POST /v1/predict`` with ``{"record": {...}}``.
   (b) plain: ``benchmarks/baselines/plain_app.py``, one uvicorn process (``--workers 1``, access
       log off), the same body limit, pydantic request model, ``frame_from_rows`` + ``predict_frame`` and
       response model as the Serve replica; no Ray, no batching, no monitoring. Same body and route.
   (c) mlflow: the same package logged as an MLflow pyfunc with "models from code"
       (``benchmarks/baselines/mlflow_model.py``; artifacts = the package folder; a signature
       built from the input schema; nothing pickled), served by ``mlflow models serve --env-manager
       local -w 1``. ``POST /invocations`` with ``{"dataframe_records": [{...}]}``.
   (b) and (c) run with OMP_NUM_THREADS=1 (what Ray gives a 0.5-CPU replica).
   Per target:
     - closed loop, 1 and 32 concurrent clients (each sends its next request when the last answered),
       ``--closed-s`` seconds each after a 1 s warm-up at the same concurrency: requests/s, p50/p99;
     - open loop (constant rate: a request every 1/rate s whatever the answers do; latency measured from
       the scheduled send time, so queueing counts): rate steps 5, 10, 20, 40, 60, 80, 120, 160, 240,
       320, 480, 640, 960 req/s, ``--step-s`` s each but at least 80 requests (p99 of fewer is the max),
       starting at the largest step <= 30% of the 32-client closed-loop throughput and going up (or
       down) until a step fails (p99 > 50 ms or > 1% errors); then one bisection step between the last
       passing and the first failing rate. Figure: the highest passing offered rate, "req/s at p99<=50ms".
   Every non-200 answer (and every client-side error or timeout) is an error and is reported by status.
   Ratios ours/baseline (a/b, a/c) are printed for each figure (for req/s >1 is better for raymlops; for
   latencies <1 is better).

2. Dynamic batching in raymlops: (a) again with ``batching.enabled: false`` (same Ray, redeployed),
   closed loop at 1 and 32 clients; gain = batching on / off.

3. Where the time goes in (a) vs (b):
   - in-process split (no HTTP, no Ray, this process, torch 1 thread): median time per request of each
     step of the replica's handler on the same records: JSON parse + pydantic validation, ``rows()``,
     ``frame_from_rows``, ``predict_frame`` (1 row; and 16 rows, the batch Serve forms), building the
     response; their sum is the handler floor. Also per request in a batch of 16, as shipped (one
     ``frame_from_rows`` per request, ``pd.concat``, one ``predict_frame``) and with ``frame_from_rows`` run
     once on the 16 requests' rows (a proposed change);
   - CPU per request by process during every closed-loop phase: psutil CPU times of every process of
     the target's tree (grouped: Ray proxy, replica, controller, monitor actor, raylet, GCS, other Ray
     processes, HAProxy, the Ray driver; the uvicorn app for b/c), the load generator, and processes
     outside both ("foreign": another workload on the machine);
   - knobs, 1 and 32 clients, each vs (a) as shipped unless said. Same Ray as (a), redeployed: 2 replicas
     (min = max = 2), monitoring off, ``max_ongoing_requests: 64`` (default 16, fewer than the 32
     clients: Serve's router then gets rejections from the replica and backs off), and that plus a
     PROPOSED raymlops change patched into the benchmark's driver only: a deployment ``logging_config``
     (WARNING, no access log; raymlops sets it on ``serve.start`` only, so replicas log every request at
     INFO). After each Ray variant the replica log files are counted (per-request lines, "rejecting
     request" lines). Each env switch
     in its own fresh Ray (Serve's processes read them when they import their constants):
     ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0`` and ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0`` (these
     two with ``max_ongoing_requests: 64`` and compared with the max_ongoing_64 variant: with 16 the
     proxy path's 32-client figure swings by +-40% run to run, which would hide them),
     ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` (the load goes straight to the ingress replica's own HTTP port,
     found with the controller's ``get_target_groups``; the proxy stays up but is bypassed),
     ``RAY_SERVE_ENABLE_HA_PROXY=1`` with ``RAY_SERVE_HAPROXY_NBTHREAD=1`` (HAProxy on the Serve port in
     front of direct-ingress replicas; needs a ``haproxy`` binary on PATH, else the variant is reported as
     skipped), ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (Ray's bundle: direct ingress, gRPC between proxy
     and replicas, user code and router on the main loop, GC frozen after start, buffered request logs),
     HAProxy + that bundle (the load again on the Serve port), and the bundle with batching off (the
     batching gain without the proxy hop); these last two also get the open-loop rate search.
     ``monitoring.enabled: false`` runs only when named in
     ``--knobs`` (the monitor actor's CPU shows in the CPU table anyway). The access log
     is off in every run as far as raymlops controls it (``serving.access_log: false``).

Noise
   The machine has 2 cores, shared by server, load generator and anything else running. Before each
   target the script waits (up to ``--max-wait`` s) until other processes use < 15% of the CPUs; a
   closed-loop phase (or a failing open-loop step) during which foreign processes used > 5% of the CPUs
   is repeated once after waiting again, keeping the quieter of the two; phases still disturbed are
   listed as "NOT quiet" at the end.

How to run (from the repository root)::

    .venv/bin/python benchmarks/serve_bench.py            # everything, ~11 minutes on 2 cores
    .venv/bin/python benchmarks/serve_bench.py --quick    # shorter phases, fewer knob variants

Options: ``--quick``, ``--closed-s S`` (main targets: default 8, quick 5; knob variants: 5, quick 4;
setting it sets both), ``--step-s S`` (default 5, quick 4),
``--no-knobs``, ``--knobs a,b,...`` (names as printed), ``--workdir DIR`` (reuse a trained temp dir from
an earlier ``--keep``; skips training), ``--keep``, ``--max-wait S`` (default 20: wait at most this long
for a quiet machine before each target). Results are printed and written to
benchmarks/out/serve_bench.json (temp file, then renamed). Nothing is written into the repository's
.raymlops. Only one Ray cluster runs at a time; every server process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_JSON = REPO / "benchmarks" / "out" / "serve_bench.json"
BASELINES = REPO / "benchmarks" / "baselines"
SMOKE = REPO / "examples" / "smoke"
PY = sys.executable
SLO_S = 0.050
MAX_ERROR_SHARE = 0.01
NOISY_SHARE = 0.05
MIN_STEP_REQUESTS = 80
SLO_SEARCH_VARIANTS = ("haproxy+throughput_optimized", "throughput_optimized+batching_off")  # also get a rate search
RATE_STEPS = [5, 10, 20, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960]
PROTO = "@@BENCH "
HDR = {"content-type": "application/json"}
REPLICA_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
MAX_WAIT_S = 20.0  # set from --max-wait
ROOT_LABELS: dict[int, str] = {}  # pid of a server's first process -> its group name in the CPU tables

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ["RAYMLOPS_PROGRESS"] = "0"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


# ------------------------------------------------------------------------------ CPU by process
def _group(p, root: int) -> str:
    try:
        cmd = " ".join(p.cmdline()[:2])
        name = p.name()
    except Exception:  # noqa: BLE001 - vanished or no access
        return "other"
    for key, group in (("ray::ProxyActor", "proxy"), ("ray::ServeReplica", "replica"),
                       ("ray::ServeController", "controller"), ("ray::Monitor", "monitor"),
                       ("ray::", "ray-other")):
        if cmd.startswith(key) or name.startswith(key):
            return group
    if "haproxy" in name:
        return "haproxy"
    if "raylet" in name:
        return "raylet"
    if "gcs_server" in name:
        return "gcs"
    if p.pid == root:
        return ROOT_LABELS.get(root, "root")
    if "uvicorn" in cmd:
        return "app"
    return "server-other"


class CpuSnap:
    """CPU seconds of every process at one instant, grouped: the target's tree, this client, foreign."""

    def __init__(self, root: int | None):
        import psutil

        self.t = time.perf_counter()
        me = os.getpid()
        tree: set[int] = set()
        if root is not None:
            try:
                r = psutil.Process(root)
                tree = {root} | {c.pid for c in r.children(recursive=True)}
            except psutil.Error:
                pass
        self.cpu: dict[int, tuple[str, float]] = {}
        for p in psutil.process_iter(["pid", "cpu_times"]):
            ct = p.info["cpu_times"]
            if ct is None:
                continue
            pid = p.info["pid"]
            group = "client" if pid == me else (_group(p, root) if pid in tree else "foreign")
            self.cpu[pid] = (group, ct.user + ct.system)


def cpu_between(a: CpuSnap, b: CpuSnap, requests: int) -> dict[str, Any]:
    used: Counter = Counter()
    for pid, (group, cpu) in b.cpu.items():
        before = a.cpu.get(pid, (group, 0.0))[1]
        used[group] += max(0.0, cpu - before)
    wall = b.t - a.t
    ncpu = os.cpu_count() or 1
    server = {g: s for g, s in used.items() if g not in ("client", "foreign")}
    n = max(1, requests)
    return {"wall_s": round(wall, 2),
            "server_cpu_ms_per_req": {g: round(1000 * s / n, 3) for g, s in sorted(server.items()) if s > 0},
            "server_cpu_ms_per_req_total": round(1000 * sum(server.values()) / n, 3),
            "client_cpu_ms_per_req": round(1000 * used["client"] / n, 3),
            "server_cpu_share_of_machine": round(sum(server.values()) / (ncpu * wall), 3),
            "client_cpu_share_of_machine": round(used["client"] / (ncpu * wall), 3),
            "foreign_cpu_share_of_machine": round(used["foreign"] / (ncpu * wall), 3),
            "disturbed": used["foreign"] / (ncpu * wall) > NOISY_SHARE}


def wait_for_quiet(max_wait_s: float, root: int | None = None) -> float:
    """Wait (at most max_wait_s) until foreign processes use < 15% of the CPUs; return that share."""
    t0 = time.perf_counter()
    said = False
    while True:
        a = CpuSnap(root)
        time.sleep(1.0)
        b = CpuSnap(root)
        share = cpu_between(a, b, 1)["foreign_cpu_share_of_machine"]
        if share < 0.15 or time.perf_counter() - t0 > max_wait_s:
            if said:
                say(f" {'ok' if share < 0.15 else 'still busy, going on'} ({share:.0%})")
            return share
        if not said:
            print(f"    (other processes use {share:.0%} of the CPUs; waiting up to {max_wait_s:.0f} s ...)",
                  end="", flush=True)
            said = True


# ------------------------------------------------------------------------------ load generator
def run_async(coro):
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _summary(lat: list[float], errors: Counter, ok: int, seconds: float) -> dict[str, Any]:
    total = ok + sum(errors.values())
    return {"requests": total, "ok": ok, "errors": dict(errors), "error_share": round(sum(errors.values()) / max(1, total), 4),
            "throughput_rps": round(ok / seconds, 1),
            "p50_ms": round(1000 * pct(lat, 50), 2), "p90_ms": round(1000 * pct(lat, 90), 2),
            "p99_ms": round(1000 * pct(lat, 99), 2), "max_ms": round(1000 * max(lat), 2) if lat else None}


async def _post(session, url: str, body: bytes) -> int | str:
    try:
        async with session.post(url, data=body, headers=HDR) as r:
            await r.read()
            return r.status
    except asyncio.TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - every client-side failure is an error of the run
        return type(exc).__name__


async def closed_loop(url: str, bodies: list[bytes], clients: int, seconds: float, root: int | None,
                      warmup_s: float = 1.0) -> dict[str, Any]:
    """N clients, each sends its next request as soon as the last one answered."""
    import aiohttp

    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: Counter = Counter()
    ok = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + seconds
    snaps: dict[str, CpuSnap] = {}

    async def worker(i: int, session) -> None:
        nonlocal ok
        k = i
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            status = await _post(session, url, bodies[k % len(bodies)])
            k += clients
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if status == 200:
                    ok += 1
                    lat.append(t1 - t0)
                else:
                    errors[str(status)] += 1

    async def snapper() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        snaps["a"] = await loop.run_in_executor(None, CpuSnap, root)
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        snaps["b"] = await loop.run_in_executor(None, CpuSnap, root)

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(snapper(), *(worker(i, session) for i in range(clients)))
    measured = snaps["b"].t - snaps["a"].t
    res = {"clients": clients, "seconds": round(measured, 2), **_summary(lat, errors, ok, measured)}
    res["cpu"] = cpu_between(snaps["a"], snaps["b"], ok)
    return res


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float, root: int | None,
                    max_inflight: int = 512) -> dict[str, Any]:
    """Constant-rate arrivals (one every 1/rate s, whatever the answers do); latency from the scheduled
    send time, so queueing in the client and the server counts (no coordinated omission)."""
    import aiohttp

    sched = [i / rate for i in range(max(1, int(rate * seconds)))]
    lat: list[float] = []
    errors: Counter = Counter()
    ok = 0
    inflight = 0

    async def fire(session, t_sched: float, body: bytes) -> None:
        nonlocal ok, inflight
        inflight += 1
        try:
            status = await _post(session, url, body)
        finally:
            inflight -= 1
        if status == 200:
            ok += 1
            lat.append(time.perf_counter() - t_sched)
        else:
            errors[str(status)] += 1

    conn = aiohttp.TCPConnector(limit=max_inflight)
    tasks = []
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        a = CpuSnap(root)
        start = time.perf_counter()
        for i, ts in enumerate(sched):
            when = start + ts
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if inflight >= max_inflight:
                errors["client_overload"] += 1
                continue
            tasks.append(asyncio.create_task(fire(session, when, bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        b = CpuSnap(root)
    res = {"offered_rps": rate, "seconds": seconds, **_summary(lat, errors, ok, seconds)}
    res["cpu"] = cpu_between(a, b, ok)
    res["passed"] = bool(lat) and res["p99_ms"] <= 1000 * SLO_S and res["error_share"] <= MAX_ERROR_SHARE
    return res


def rate_search(url: str, bodies: list[bytes], hint_rps: float, step_s: float, root: int | None) -> dict[str, Any]:
    """Highest open-loop rate whose p99 <= 50 ms and errors <= 1% (steps, then one bisection)."""
    steps: list[dict[str, Any]] = []

    def step(rate: float) -> bool:
        seconds = max(step_s, MIN_STEP_REQUESTS / rate)  # p99 needs enough samples at low rates
        r = run_async(open_loop(url, bodies, rate, seconds, root))
        if not r["passed"] and r["cpu"]["disturbed"]:  # a failure under foreign load: once more when quiet
            say(f"      open loop {rate:5.0f} req/s: failed while NOT quiet; waiting and repeating once")
            wait_for_quiet(MAX_WAIT_S, root)
            r2 = run_async(open_loop(url, bodies, rate, seconds, root))
            r2["repeated_after_disturbance"] = True
            r = r2 if r2["cpu"]["foreign_cpu_share_of_machine"] <= r["cpu"]["foreign_cpu_share_of_machine"] else r
        steps.append(r)
        flag = " (NOT quiet)" if r["cpu"]["disturbed"] else ""
        say(f"      open loop {rate:5.0f} req/s: got {r['throughput_rps']:6.1f}/s  p50 {r['p50_ms']:7.1f} ms  "
            f"p99 {r['p99_ms']:7.1f} ms  errors {r['error_share']:.1%}  {'pass' if r['passed'] else 'FAIL'}{flag}")
        return r["passed"]

    i = max([0] + [k for k, s in enumerate(RATE_STEPS) if s <= 0.3 * hint_rps])
    best, first_fail = None, None
    if step(RATE_STEPS[i]):
        best = RATE_STEPS[i]
        for r in RATE_STEPS[i + 1:]:
            if step(r):
                best = r
            else:
                first_fail = r
                break
    else:
        first_fail = RATE_STEPS[i]
        for r in reversed(RATE_STEPS[:i]):
            if step(r):
                best = r
                break
            first_fail = r
    if best is not None and first_fail is not None and first_fail - best >= 10:
        mid = float(round((best + first_fail) / 2))
        if step(mid):
            best = mid
    at = next((s for s in steps if s["offered_rps"] == best), None)
    return {"rps_at_p99_slo": best if best is not None else 0.0, "below_lowest_step": best is None,
            "p99_ms_there": at and at["p99_ms"], "throughput_there": at and at["throughput_rps"],
            "first_failing_rps": first_fail, "steps": steps}


def closed_pair(url: str, bodies: list[bytes], seconds: float, root: int | None, counts=(1, 32)) -> dict[str, Any]:
    out = {}
    for n in counts:
        r = run_async(closed_loop(url, bodies, n, seconds, root))
        if r["cpu"]["disturbed"]:  # foreign load during the phase: once more after waiting for quiet
            share = r["cpu"]["foreign_cpu_share_of_machine"]
            say(f"      {n:2d} clients: other processes used {share:.0%} of the CPUs; waiting and repeating once")
            wait_for_quiet(MAX_WAIT_S, root)
            r2 = run_async(closed_loop(url, bodies, n, seconds, root))
            r2["repeated_after_disturbance"] = True
            r = r2 if r2["cpu"]["foreign_cpu_share_of_machine"] <= share else r
        out[f"c{n}"] = r
        c = r["cpu"]
        flag = "  <-- NOT quiet" if c["disturbed"] else ""
        err = f"  errors {r['errors']}" if r["errors"] else ""
        say(f"      {n:2d} clients: {r['throughput_rps']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  server CPU {c['server_cpu_ms_per_req_total']:.2f} ms/req{err}{flag}")
    return out


# ------------------------------------------------------------------------------ servers
class Proc:
    """A server subprocess in its own process group; stdout/stderr to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, stdin: bool = False):
        self.log = log
        self.logf = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE if stdin else self.logf,
                                  stderr=self.logf, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  text=True, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        if stdin:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            if line.startswith(PROTO):
                self.lines.put(json.loads(line[len(PROTO):]))
            else:
                self.logf.write(line)
                self.logf.flush()
        self.lines.put({"event": "exit"})

    def send(self, cmd: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.expect(timeout)

    def expect(self, timeout: float = 240) -> dict[str, Any]:
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer from the server process in {timeout:.0f} s (log: {self.log})") from None
        if msg.get("event") in ("error", "exit"):
            raise RuntimeError(f"server process: {msg.get('error', 'exited')} (log: {self.log})")
        return msg

    def stop(self, timeout: float = 60) -> None:
        if self.p.poll() is None:
            try:
                if self.p.stdin:
                    self.p.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                    self.p.stdin.flush()
                else:
                    self.p.send_signal(signal.SIGINT)
                self.p.wait(timeout)
            except (subprocess.TimeoutExpired, OSError, BrokenPipeError):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)  # only the group this script started
                except ProcessLookupError:
                    pass
                self.p.wait(10)
        self.logf.close()


def wait_http(url: str, timeout: float, method: str = "GET", body: bytes | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=body, method=method, headers=HDR)
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s ({last})")


def post_json(url: str, payload: Any) -> Any:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=HDR, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn/mlflow of this venv
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["RAYMLOPS_PROGRESS"] = "0"
    env.update(extra or {})
    return env


def ray_server_main(config_path: str, port: int) -> None:
    """Subprocess: start Ray, then deploy/undeploy on command (JSON lines on stdin); answers on stdout."""
    import logging

    def tell(**kw: Any) -> None:
        sys.stdout.write(PROTO + json.dumps(kw, default=str) + "\n")
        sys.stdout.flush()

    from raymlops.config import load_config
    from raymlops.runtime.session import ray_runtime

    cfg = load_config(config_path)
    with ray_runtime(num_cpus=2):
        import ray
        from ray import serve
        from ray.serve._private import constants as C  # the switches as this environment resolves them

        from raymlops.serving.deploy import deploy, wait_ready

        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        tell(event="ray_up")
        deployed_at = time.time()
        try:
            for line in sys.stdin:
                cmd = json.loads(line)
                if cmd["cmd"] == "stop":
                    break
                try:
                    if cmd["cmd"] == "logstats":
                        tell(event="logstats", **_replica_log_stats(deployed_at))
                        continue
                    if cmd["cmd"] == "undeploy":
                        serve.delete(cfg.serving.app_name or cfg.model_name)
                        tell(event="undeployed")
                        continue
                    c = cfg
                    if not cmd.get("monitoring", True):
                        c = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"enabled": False})})
                    _patch_replica_logging(cmd.get("replica_logging"))
                    deployed_at = time.time()
                    t0 = time.perf_counter()
                    url = deploy(c, port=port, **cmd.get("overrides", {}))
                    target = url
                    if C.RAY_SERVE_ENABLE_DIRECT_INGRESS and not C.RAY_SERVE_ENABLE_HA_PROXY:
                        target = _direct_target(ray, port, cfg.serving.route_prefix, wait_ready)
                    tell(event="ready", url=url, target=target, deploy_s=round(time.perf_counter() - t0, 1))
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which skips the variant
                    tell(event="error", error=f"{type(exc).__name__}: {exc}"[-3000:])
        finally:
            serve.shutdown()


def _replica_log_stats(since: float) -> dict[str, int]:
    """Lines in the replica log files written since ``since``: per-request access lines and rejections."""
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    stats = {"files": 0, "lines": 0, "access_lines": 0, "rejections": 0}
    for f in logs.glob("replica_*.log"):
        if f.stat().st_mtime < since:
            continue
        stats["files"] += 1
        for line in f.read_text(errors="replace").splitlines():
            stats["lines"] += 1
            stats["access_lines"] += " /v1/predict " in line
            stats["rejections"] += "rejecting request" in line
    return stats


def _patch_replica_logging(logging_config: dict[str, Any] | None) -> None:
    """PROPOSED raymlops change, applied in this benchmark process only (raymlops' files are untouched):
    give the deployment its own ``logging_config``. raymlops passes ``LoggingConfig(enable_access_log=
    access_log, log_level="WARNING")`` to ``serve.start`` only, which configures the controller and the
    proxy; replicas keep Serve's default (INFO, access log on) and write one line per request to their
    log file."""
    import raymlops.serving.app as app_module
    from raymlops.serving import serve_config

    original = serve_config.deployment_options
    if logging_config is None:
        app_module.deployment_options = original
        return

    def with_logging(serving: dict[str, Any]) -> dict[str, Any]:
        return {**original(serving), "logging_config": logging_config}

    app_module.deployment_options = with_logging


def _direct_target(ray, proxy_port: int, prefix: str, wait_ready) -> str:
    """The ingress replica's own HTTP address (direct ingress): from the controller's target groups."""
    from ray.serve.context import _get_global_client

    ctrl = _get_global_client()._controller
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        groups = ray.get(ctrl.get_target_groups.remote())
        targets = [t for g in groups if str(getattr(g.protocol, "value", g.protocol)) == "HTTP"
                   for t in g.targets if t.port != proxy_port]
        if targets:
            ip = "127.0.0.1" if targets[0].ip in ("0.0.0.0", "") else targets[0].ip
            url = f"http://{ip}:{targets[0].port}{prefix.rstrip('/')}"
            wait_ready(url, 60)
            return url
        time.sleep(0.5)
    raise RuntimeError(f"no direct-ingress target besides the proxy: {groups}")


# ------------------------------------------------------------------------------ setup
def train(tmp: Path) -> tuple[Path, Path]:
    import yaml

    from raymlops.config import load_config
    from raymlops.data.stage import run_data_stage
    from raymlops.runtime.session import ray_runtime
    from raymlops.training.stage import run_training_stage

    cfg_path = REPO / "configs" / "smoke.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    for src in data["data"]["sources"]:
        if "path" in src:
            src["path"] = str((cfg_path.parent / src["path"]).resolve())
    data["workdir"] = str(tmp / "work")
    data["training"]["epochs"] = 2
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(path)
    with ray_runtime(num_cpus=2):
        d = run_data_stage(cfg)
        trained = run_training_stage(cfg, d, run_name="bench")
    if str(trained.version) != "1":
        raise RuntimeError(f"expected version 1 to be the fresh champion, got {trained.version}")
    return path, Path(trained.package_dir)


def make_records(schema: dict[str, Any], n: int = 256) -> list[dict[str, Any]]:
    import pandas as pd

    from raymlops.model.inputs import record_model

    Record = record_model(schema)
    flights = pd.read_csv(SMOKE / "flights.csv")
    weather = pd.read_csv(SMOKE / "weather.csv")
    df = flights.merge(weather, on=["origin", "time_hour"], how="left").sample(frac=1.0, random_state=0)
    out = []
    for row in df[list(schema)].to_dict("records"):
        rec = {}
        for col, v in row.items():
            kind = schema[col].get("type")
            if v is None or (isinstance(v, float) and math.isnan(v)):
                rec[col] = None
            elif kind == "int":
                rec[col] = int(v)
            elif kind == "float":
                rec[col] = float(v)
            else:
                rec[col] = str(v)
        try:
            Record.model_validate(rec)
        except Exception:  # noqa: BLE001, S112 - keep only records the API accepts
            continue
        out.append(rec)
        if len(out) == n:
            break
    return out


def log_mlflow_model(cfg_path: Path, package: Path, schema: dict[str, Any]) -> str:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from raymlops.config import load_config
    from raymlops.registry.store import Registry

    kinds = {"int": "long", "float": "double", "bool": "boolean"}
    sig = ModelSignature(inputs=Schema([ColSpec(kinds.get(s.get("type"), "string"), col,
                                                required=not s.get("nullable", True)) for col, s in schema.items()]))
    cfg = load_config(cfg_path)
    mlflow.set_tracking_uri(Registry.for_config(cfg).tracking_uri)
    name = "serve-bench-baseline"
    if mlflow.get_experiment_by_name(name) is None:  # artifacts in the bench workdir, not ./mlruns
        mlflow.create_experiment(name, artifact_location=(cfg.workdir_path / "mlruns").resolve().as_uri())
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="pyfunc-from-code"):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(BASELINES / "mlflow_model.py"),
                                       artifacts={"package": str(package)}, signature=sig,
                                       pip_requirements=["mlflow"])
    return info.model_uri


def inprocess_split(package: Path, schema: dict[str, Any], bodies: list[bytes], cfg_path: Path,
                    n: int = 400) -> dict[str, Any]:
    """Median time of each step of the replica's predict handler, in this process (no HTTP, no Ray)."""
    import pandas as pd
    import torch

    from raymlops.config import load_config
    from raymlops.model.packaging import load_package
    from raymlops.serving.schema import PredictResponse, predict_request_model, predictions_for
    from raymlops.model.inputs import frame_from_rows, record_model

    torch.set_num_threads(1)
    serving = load_config(cfg_path).serving
    model = load_package(package)
    Request = predict_request_model(record_model(schema), serving.max_records_per_request)
    steps: dict[str, list[float]] = {k: [] for k in ("parse+validate", "rows", "frame_from_rows", "predict_frame",
                                                     "response")}
    for i in range(n + 50):
        body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        req = Request.model_validate(json.loads(body))
        t1 = time.perf_counter()
        rows = req.rows()
        t2 = time.perf_counter()
        frame = frame_from_rows(rows, schema)
        t3 = time.perf_counter()
        scores = model.predict_frame(frame)
        t4 = time.perf_counter()
        PredictResponse(request_id="0" * 32, model="m", version="1", alias="champion",
                        predictions=predictions_for(model.task, [float(s) for s in scores])).model_dump_json()
        t5 = time.perf_counter()
        if i >= 50:
            for k, a, b in zip(steps, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                steps[k].append(b - a)
    rows16 = [row for b in bodies[:16] for row in Request.model_validate(json.loads(b)).rows()]
    frames = [frame_from_rows([row], schema) for row in rows16]
    batch16, concat16, rows16_t = [], [], []
    for _ in range(60):
        t0 = time.perf_counter()
        big = pd.concat(frames, ignore_index=True)
        t1 = time.perf_counter()
        model.predict_frame(big)
        t2 = time.perf_counter()
        frame_from_rows(rows16, schema)
        t3 = time.perf_counter()
        concat16.append(t1 - t0)
        batch16.append(t2 - t1)
        rows16_t.append(t3 - t2)
    med = {k: round(1000 * pct(v, 50), 3) for k, v in steps.items()}
    return {"median_ms": med, "handler_total_ms": round(sum(med.values()), 3),
            "predict_frame_16_rows_ms": round(1000 * pct(batch16, 50), 3),
            "predict_frame_per_row_in_16_batch_ms": round(1000 * pct(batch16, 50) / 16, 3),
            "concat_16_frames_ms": round(1000 * pct(concat16, 50), 3),
            "frame_from_rows_16_rows_ms": round(1000 * pct(rows16_t, 50), 3),
            # the earlier batched path: per request frame_from_rows + share of concat + predict of 16
            "per_request_batched_frame_per_request_ms": round(med["parse+validate"] + med["rows"] + med["frame_from_rows"]
                                                       + med["response"] + 1000 * (pct(concat16, 50) + pct(batch16, 50)) / 16, 3),
            # as shipped: frame_from_rows once per batch on the rows of all 16 requests
            "per_request_batched_frame_once_ms": round(med["parse+validate"] + med["rows"] + med["response"]
                                                       + 1000 * (pct(rows16_t, 50) + pct(batch16, 50)) / 16, 3)}


# ------------------------------------------------------------------------------ the run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--closed-s", type=float)
    ap.add_argument("--step-s", type=float)
    ap.add_argument("--no-knobs", action="store_true")
    ap.add_argument("--knobs", default="")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--max-wait", type=float, default=20.0)
    ap.add_argument("--ray-server", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ray_server:
        return ray_server_main(args.ray_server[0], int(args.ray_server[1]))
    global MAX_WAIT_S
    MAX_WAIT_S = args.max_wait
    closed_s = args.closed_s or (5.0 if args.quick else 8.0)
    knob_s = args.closed_s or (4.0 if args.quick else 5.0)
    step_s = args.step_s or (4.0 if args.quick else 5.0)
    t_all = time.perf_counter()

    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="serve-bench-"))
    logs = tmp / "logs-bench"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
                              "settings": {"closed_s": closed_s, "knob_closed_s": knob_s, "step_s": step_s,
                                           "rate_steps": RATE_STEPS, "slo_p99_ms": 1000 * SLO_S,
                                           "max_error_share": MAX_ERROR_SHARE}}
    servers: list[Proc] = []
    try:
        # -------------------------------------------------------------- model, records, checks
        if args.workdir and (tmp / "pipeline.yaml").exists():
            cfg_path = tmp / "pipeline.yaml"
            package = tmp / "work" / "packages" / "bench" / "model"
            say(f"reusing the trained model in {tmp}")
        else:
            say(f"training the smoke model (2 epochs) in {tmp} ...")
            t0 = time.perf_counter()
            cfg_path, package = train(tmp)
            say(f"  trained in {time.perf_counter() - t0:.0f} s: {package}")
        import ray

        from raymlops.model.packaging import verify_package

        assert not ray.is_initialized()
        schema = verify_package(package)["input_schema"]
        records = make_records(schema)
        body_a = [json.dumps({"record": r}).encode() for r in records]
        body_c = [json.dumps({"dataframe_records": [r]}).encode() for r in records]
        say(f"{len(records)} request records (smoke flights + weather), {len(body_a[0])} bytes per body")

        say("in-process split of the predict handler (no HTTP, no Ray, 1 torch thread):")
        split = inprocess_split(package, schema, body_a, cfg_path)
        result["inprocess_split"] = split
        say("   " + ", ".join(f"{k} {v:.3f}" for k, v in split["median_ms"].items())
            + f" ms; handler total {split['handler_total_ms']:.2f} ms; predict_frame of 16 rows "
              f"{split['predict_frame_16_rows_ms']:.2f} ms ({split['predict_frame_per_row_in_16_batch_ms']:.3f} ms/row)")
        say(f"   per request in a batch of 16: a frame per request, concat, one predict (before) "
            f"{split['per_request_batched_frame_per_request_ms']:.2f} ms; frame_from_rows once per batch (as shipped) "
            f"{split['per_request_batched_frame_once_ms']:.2f} ms (frame_from_rows of 16 rows: "
            f"{split['frame_from_rows_16_rows_ms']:.2f} ms)")

        targets: dict[str, dict[str, Any]] = {}
        check_scores: dict[str, list[float]] = {}

        def measure(name: str, url: str, bodies: list[bytes], root: int, search: bool, seconds: float,
                    counts=(1, 32)) -> dict[str, Any]:
            share = wait_for_quiet(args.max_wait, root)
            res: dict[str, Any] = {"url": url, "foreign_cpu_before": share}
            res.update(closed_pair(url, bodies, seconds, root, counts))
            if search:
                res["rate_search"] = rate_search(url, bodies, res["c32"]["throughput_rps"], step_s, root)
                rs = res["rate_search"]
                say(f"      -> {('< %g' % RATE_STEPS[0]) if rs['below_lowest_step'] else rs['rps_at_p99_slo']} "
                    "req/s at p99 <= 50 ms")
            targets[name] = res
            return res

        # -------------------------------------------------------------- (a) raymlops on Ray Serve
        port = free_port()
        say("\n(a) raymlops on Ray Serve, 1 replica, as shipped (batching on, monitoring on) ...")
        t0 = time.perf_counter()
        ray_proc = Proc([PY, __file__, "--ray-server", str(cfg_path), str(port)], server_env(),
                        logs / "ray-default.log", stdin=True)
        servers.append(ray_proc)
        ROOT_LABELS[ray_proc.p.pid] = "driver"
        ray_proc.expect(120)
        ready = ray_proc.send({"cmd": "deploy", "overrides": {"min_replicas": 1, "max_replicas": 1}})
        say(f"   Ray up + deployed in {time.perf_counter() - t0:.0f} s (deploy {ready['deploy_s']} s)")
        url_a = ready["target"] + "/v1/predict"
        check_scores["raymlops"] = [post_json(url_a, {"record": r})["predictions"][0]["score"] for r in records[:8]]
        measure("raymlops", url_a, body_a, ray_proc.p.pid, True, closed_s)
        targets["raymlops"]["replica_log"] = ray_proc.send({"cmd": "logstats"})
        say(f"   replica log during (a): {targets['raymlops']['replica_log']}")

        variants: dict[str, dict[str, Any]] = {}
        same_ray = [("batching_off", {"min_replicas": 1, "max_replicas": 1,
                                      "batching": {"enabled": False, "max_batch_size": 16, "wait_timeout_s": 0.005}},
                     True, "(a) with batching.enabled: false"),
                    ("replicas_2", {"min_replicas": 2, "max_replicas": 2}, True, "2 replicas (min = max = 2)"),
                    ("monitoring_off", {"min_replicas": 1, "max_replicas": 1}, False, "monitoring.enabled: false"),
                    ("max_ongoing_64", {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 64}, True,
                     "serving.max_ongoing_requests: 64 (default 16 < 32 clients)"),
                    ("max_ongoing_64+replica_log_warning", {"min_replicas": 1, "max_replicas": 1,
                                                            "max_ongoing_requests": 64}, True,
                     "max_ongoing_requests 64 + PROPOSED deployment logging_config WARNING (patched in the bench)")]
        if args.knobs:  # batching_off always runs: it is part of the main comparison
            same_ray = [v for v in same_ray if v[0] == "batching_off" or v[0] in args.knobs.split(",")]
        elif args.no_knobs:
            same_ray = same_ray[:1]
        elif args.quick:
            same_ray = [v for v in same_ray if v[0] in ("batching_off", "max_ongoing_64")]
        else:  # monitoring_off only on request (--knobs): its cost shows in the CPU table (monitor actor)
            same_ray = [v for v in same_ray if v[0] != "monitoring_off"]
        for name, overrides, monitoring, title in same_ray:
            say(f"\n(a') {title} ...")
            ray_proc.send({"cmd": "undeploy"})
            ready = ray_proc.send({"cmd": "deploy", "overrides": overrides, "monitoring": monitoring,
                                   "replica_logging": REPLICA_LOGGING if name.endswith("replica_log_warning") else None})
            say(f"   deployed in {ready['deploy_s']} s")
            res = measure(f"raymlops:{name}", ready["target"] + "/v1/predict", body_a, ray_proc.p.pid, False,
                          closed_s if name == "batching_off" else knob_s)
            res["replica_log"] = ray_proc.send({"cmd": "logstats"})
            variants[name] = {"title": title, "env": {}, "overrides": overrides, "monitoring": monitoring,
                              "compare_to": "max_ongoing_64" if name == "max_ongoing_64+replica_log_warning"
                              else "raymlops", **res}
        t0 = time.perf_counter()
        ray_proc.stop()
        servers.remove(ray_proc)
        say(f"   Ray stopped in {time.perf_counter() - t0:.0f} s")

        # -------------------------------------------------------------- (b) plain FastAPI + uvicorn
        say("\n(b) plain FastAPI + uvicorn, 1 process ...")
        pport = free_port()
        plain = Proc([PY, "-m", "uvicorn", "--app-dir", str(BASELINES), "plain_app:app", "--host", "127.0.0.1",
                      "--port", str(pport), "--workers", "1", "--no-access-log", "--log-level", "warning"],
                     server_env({"BENCH_CONFIG": str(cfg_path), "BENCH_PACKAGE": str(package), "BENCH_VERSION": "1",
                                 "OMP_NUM_THREADS": "1"}), logs / "plain.log")
        servers.append(plain)
        ROOT_LABELS[plain.p.pid] = "app"
        wait_http(f"http://127.0.0.1:{pport}/readyz", 120)
        url_b = f"http://127.0.0.1:{pport}/v1/predict"
        check_scores["plain"] = [post_json(url_b, {"record": r})["predictions"][0]["score"] for r in records[:8]]
        measure("plain", url_b, body_a, plain.p.pid, True, closed_s)
        plain.stop()
        servers.remove(plain)

        # -------------------------------------------------------------- (c) mlflow models serve
        say("\n(c) mlflow models serve (pyfunc from code, --env-manager local, 1 worker) ...")
        t0 = time.perf_counter()
        model_uri = log_mlflow_model(cfg_path, package, schema)
        mport = free_port()
        from raymlops.config import load_config
        from raymlops.registry.store import Registry

        tracking = Registry.for_config(load_config(cfg_path)).tracking_uri
        mlf = Proc([str(Path(PY).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                    "-h", "127.0.0.1", "-p", str(mport), "-w", "1"],
                   server_env({"MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}), logs / "mlflow.log")
        servers.append(mlf)
        ROOT_LABELS[mlf.p.pid] = "mlflow-cli"
        wait_http(f"http://127.0.0.1:{mport}/ping", 180)
        say(f"   logged + serving in {time.perf_counter() - t0:.0f} s: {model_uri}")
        url_c = f"http://127.0.0.1:{mport}/invocations"
        check_scores["mlflow"] = [p["score"] for p in post_json(url_c, {"dataframe_records": records[:8]})["predictions"]]
        measure("mlflow", url_c, body_c, mlf.p.pid, True, closed_s)
        mlf.stop()
        servers.remove(mlf)

        diffs = {k: max(abs(x - y) for x, y in zip(v, check_scores["raymlops"], strict=True))
                 for k, v in check_scores.items()}
        result["score_check"] = {"scores": check_scores, "max_abs_diff_vs_raymlops": diffs,
                                 "agree": all(d < 1e-6 for d in diffs.values())}

        # -------------------------------------------------------------- Serve env knobs, one Ray each
        env_knobs = [
            # the two loop/thread switches act on the proxy -> replica path, whose 32-client figure swings run to
            # run while the router gets rejections (max_ongoing_requests 16 < 32 clients): measured with 64,
            # against the same-Ray max_ongoing_64 variant
            ("user_code_main_thread", {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}, {"max_ongoing_requests": 64},
             True),
            ("router_same_loop", {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}, {"max_ongoing_requests": 64}, True),
            ("direct_ingress", {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, {}, True),
            ("haproxy", {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_NBTHREAD": "1"}, {}, True),
            ("throughput_optimized", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {}, True),
            ("haproxy+throughput_optimized", {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_NBTHREAD": "1",
                                              "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {}, True),
            ("throughput_optimized+batching_off", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
             {"batching": {"enabled": False, "max_batch_size": 16, "wait_timeout_s": 0.005}}, True),
        ]
        if args.knobs:
            env_knobs = [k for k in env_knobs if k[0] in args.knobs.split(",")]
        elif args.no_knobs:
            env_knobs = []
        elif args.quick:
            env_knobs = [k for k in env_knobs if k[0] in ("direct_ingress", "haproxy+throughput_optimized")]
        haproxy_bin = shutil.which("haproxy")
        result["haproxy_binary"] = haproxy_bin
        for name, env, overrides, monitoring in env_knobs:
            title = " ".join(f"{k}={v}" for k, v in env.items()) + (f" + {overrides}" if overrides else "") \
                + ("" if monitoring else " + monitoring off")
            say(f"\n(a'') {name}: {title} ...")
            if "HAPROXY" in " ".join(env) and not haproxy_bin:
                say("   skipped: no haproxy binary (apt-get install haproxy)")
                variants[name] = {"title": title, "env": env, "skipped": "no haproxy binary"}
                continue
            t0 = time.perf_counter()
            # teardown only: a direct-ingress replica otherwise holds its port open 30 s when stopped
            proc = Proc([PY, __file__, "--ray-server", str(cfg_path), str(free_port())],
                        server_env({**env, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}),
                        logs / f"ray-{name}.log", stdin=True)
            servers.append(proc)
            ROOT_LABELS[proc.p.pid] = "driver"
            try:
                proc.expect(120)
                ready = proc.send({"cmd": "deploy", "monitoring": monitoring,
                                   "overrides": {"min_replicas": 1, "max_replicas": 1, **overrides},
                                   "replica_logging": None})
                say(f"   Ray up + deployed in {time.perf_counter() - t0:.0f} s; load goes to {ready['target']}")
                res = measure(f"raymlops:{name}", ready["target"] + "/v1/predict", body_a, proc.p.pid,
                              name in SLO_SEARCH_VARIANTS, knob_s)
                res["replica_log"] = proc.send({"cmd": "logstats"})
                variants[name] = {"title": title, "env": env, "overrides": overrides, "monitoring": monitoring,
                                  "compare_to": "max_ongoing_64" if "max_ongoing_requests" in overrides else "raymlops",
                                  **res}
            except Exception as exc:  # noqa: BLE001 - a knob that does not work is a finding, not a crash
                say(f"   FAILED: {exc}")
                variants[name] = {"title": title, "env": env, "failed": str(exc)[-2000:]}
            finally:
                t0 = time.perf_counter()
                proc.stop()
                servers.remove(proc)
                say(f"   stopped in {time.perf_counter() - t0:.0f} s")

        result["targets"] = targets
        result["variants"] = variants
        result["total_s"] = round(time.perf_counter() - t_all, 1)
        report(result)
        OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
        from raymlops.workspace import write_json_atomic

        write_json_atomic(OUT_JSON, result)
        say(f"\nwrote {OUT_JSON.relative_to(REPO)} ({result['total_s']:.0f} s in all)")
    finally:
        for s in servers:
            s.stop()
        if not args.keep and not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not args.workdir:
            say(f"kept {tmp} (reuse with --workdir {tmp})")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return round(a / b, 3)


def report(result: dict[str, Any]) -> None:
    t = result["targets"]
    figures = [("req/s at p99<=50ms (open loop)", lambda r: (r.get("rate_search") or {}).get("rps_at_p99_slo")),
               ("1 client: req/s", lambda r: r["c1"]["throughput_rps"]),
               ("1 client: p50 ms", lambda r: r["c1"]["p50_ms"]),
               ("1 client: p99 ms", lambda r: r["c1"]["p99_ms"]),
               ("32 clients: req/s", lambda r: r["c32"]["throughput_rps"]),
               ("32 clients: p50 ms", lambda r: r["c32"]["p50_ms"]),
               ("32 clients: p99 ms", lambda r: r["c32"]["p99_ms"]),
               ("32 clients: server CPU ms/req", lambda r: r["c32"]["cpu"]["server_cpu_ms_per_req_total"])]
    names = [n for n in ("raymlops", "plain", "mlflow") if n in t]
    say("\n" + "=" * 100)
    say(f"{'figure':34s}" + "".join(f"{n:>13s}" for n in names) + f"{'a/b':>9s}{'a/c':>9s}")
    ratios: dict[str, dict[str, Any]] = {}
    for label, get in figures:
        vals = {n: get(t[n]) for n in names}
        ab = _ratio(vals.get("raymlops"), vals.get("plain"))
        ac = _ratio(vals.get("raymlops"), vals.get("mlflow"))
        ratios[label] = {"a/b": ab, "a/c": ac}
        say(f"{label:34s}" + "".join(f"{(v if v is not None else float('nan')):13.2f}" for v in vals.values())
            + f"{(ab if ab is not None else float('nan')):9.3f}{(ac if ac is not None else float('nan')):9.3f}")
    say("(req/s: ratio > 1 means raymlops is better; latency and CPU: ratio < 1 means raymlops is better; "
        f"req/s at p99<=50ms = 0: not even the lowest step, {RATE_STEPS[0]} req/s, met it)")
    result["ratios"] = ratios
    errs = {n: {k: t[n][k]["errors"] for k in ("c1", "c32") if t[n][k]["errors"]} for n in names}
    if any(errs.values()):
        say(f"errors in closed-loop runs: {errs}")

    v = result.get("variants", {})
    if "batching_off" in v and "raymlops" in t:
        on, off = t["raymlops"], v["batching_off"]
        gain = {k: _ratio(on[k]["throughput_rps"], off[k]["throughput_rps"]) for k in ("c1", "c32")}
        result["batching_gain"] = {"throughput_on_over_off": gain,
                                   "p99_ms_on": on["c32"]["p99_ms"], "p99_ms_off": off["c32"]["p99_ms"]}
        say(f"\ndynamic batching (raymlops, 1 replica): 32 clients {on['c32']['throughput_rps']:.1f} req/s on vs "
            f"{off['c32']['throughput_rps']:.1f} off -> gain x{gain['c32']}; p99 {on['c32']['p99_ms']:.1f} vs "
            f"{off['c32']['p99_ms']:.1f} ms; 1 client: x{gain['c1']} (p50 {on['c1']['p50_ms']:.1f} vs {off['c1']['p50_ms']:.1f} ms)")
    if "throughput_optimized" in v and "c32" in v.get("throughput_optimized+batching_off", {}) \
            and "c32" in v["throughput_optimized"]:
        on, off = v["throughput_optimized"], v["throughput_optimized+batching_off"]
        g = _ratio(on["c32"]["throughput_rps"], off["c32"]["throughput_rps"])
        result["batching_gain_throughput_optimized"] = {"throughput_on_over_off_32c": g}
        say(f"dynamic batching with RAY_SERVE_THROUGHPUT_OPTIMIZED=1: 32 clients {on['c32']['throughput_rps']:.1f} "
            f"req/s on vs {off['c32']['throughput_rps']:.1f} off -> gain x{g}")

    say("\nwhere the server CPU goes, ms per answered request at 32 clients (closed loop):")
    rows = [(n, t[n]) for n in names] + [(f"a:{k}", x) for k, x in v.items() if "c32" in x]
    groups = sorted({g for _, r in rows for g in r["c32"]["cpu"]["server_cpu_ms_per_req"]})
    say(f"{'target':50s}" + "".join(f"{g[:10]:>11s}" for g in groups) + f"{'total':>9s}{'client':>9s}")
    for n, r in rows:
        c = r["c32"]["cpu"]
        say(f"{n[:50]:50s}" + "".join(f"{c['server_cpu_ms_per_req'].get(g, 0):11.2f}" for g in groups)
            + f"{c['server_cpu_ms_per_req_total']:9.2f}{c['client_cpu_ms_per_req']:9.2f}")
    s = result.get("inprocess_split")
    if s:
        say(f"in-process handler floor (validate + frame_from_rows + predict_frame + response): {s['handler_total_ms']:.2f} ms")

    if v:
        base = t.get("raymlops")
        say("\nServe / raymlops knobs (1 replica unless said); 'x 32c' = 32-client req/s over the variant's "
            "reference ('vs'): (a) as shipped, or max_ongoing_64 for variants run with max_ongoing_requests 64")
        say(f"{'variant':42s}{'1c p50':>8s}{'1c p99':>8s}{'32c req/s':>10s}{'32c p50':>8s}{'32c p99':>8s}"
            f"{'SLO r/s':>8s}{'x 32c':>7s}  vs")

        def slo(x: dict[str, Any]) -> str:
            rs = x.get("rate_search")
            return "-" if not rs else (f"<{RATE_STEPS[0]}" if rs["below_lowest_step"] else f"{rs['rps_at_p99_slo']:g}")

        if base:
            say(f"{'(a) as shipped':42s}{base['c1']['p50_ms']:8.1f}{base['c1']['p99_ms']:8.1f}"
                f"{base['c32']['throughput_rps']:10.1f}{base['c32']['p50_ms']:8.0f}{base['c32']['p99_ms']:8.0f}"
                f"{slo(base):>8s}{1:7.2f}")
        for k, x in v.items():
            if "c32" not in x:
                say(f"{k[:42]:42s}  {x.get('skipped') or 'failed: ' + x.get('failed', '')[:120]}")
                continue
            ref_name = x.get("compare_to", "raymlops")
            ref = base if ref_name == "raymlops" else v.get(ref_name)
            gain = _ratio(x["c32"]["throughput_rps"], ref["c32"]["throughput_rps"]) if ref and "c32" in ref else None
            x["gain_32c_vs_" + ref_name] = gain
            flag = " NOT quiet" if x["c32"]["cpu"]["disturbed"] or x["c1"]["cpu"]["disturbed"] else ""
            say(f"{k[:42]:42s}{x['c1']['p50_ms']:8.1f}{x['c1']['p99_ms']:8.1f}{x['c32']['throughput_rps']:10.1f}"
                f"{x['c32']['p50_ms']:8.0f}{x['c32']['p99_ms']:8.0f}{slo(x):>8s}"
                f"{(gain if gain is not None else float('nan')):7.2f}  {'(a)' if ref_name == 'raymlops' else ref_name}{flag}")
    sc = result.get("score_check")
    if sc:
        say(f"\nscore check on 8 records: max |diff| vs raymlops {sc['max_abs_diff_vs_raymlops']} -> "
            f"{'agree' if sc['agree'] else 'DISAGREE'}")
    disturbed = [f"{n}:{k}" for n, r in rows for k in ("c1", "c32") if r[k]["cpu"]["disturbed"]]
    if disturbed:
        say(f"NOT quiet (foreign processes used > {NOISY_SHARE:.0%} of the CPUs): {', '.join(disturbed)}")


if __name__ == "__main__":
    main()
