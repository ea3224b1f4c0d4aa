"""The serving benchmarks' load generator: closed loop, open loop and the search for the highest rate
that meets a p99 target, with the CPU each process of the server used per answered request.

Requests go out from this process (aiohttp on uvloop) to a server whose processes are its children, so
``harness.CpuWatch`` splits the CPU into this client, the server's processes by role and everything else
("foreign": another workload on the machine). A closed-loop phase (or a failing open-loop step) during
which foreign processes used more than 5% of the CPUs is repeated once after waiting for quiet, keeping
the quieter of the two.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import harness
import psutil

SLO_S = 0.050
MAX_ERROR_SHARE = 0.01
RATE_STEPS = [5, 10, 20, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960]
HDR = {"content-type": "application/json"}
ROLES = (("ray::ProxyActor", "proxy"), ("ray::ServeReplica", "replica"), ("ray::ServeController", "controller"),
         ("ray::Monitor", "monitor"), ("ray::", "ray-other"))


def role(p: psutil.Process) -> str:
    """A process's part in serving: this client, a Ray Serve actor, a Ray daemon, or a baseline's app."""
    if p.pid == os.getpid():
        return "client"
    cmd, name = " ".join(p.cmdline()[:3]), p.name()
    for prefix, group in ROLES:
        if cmd.startswith(prefix) or name.startswith(prefix):
            return group
    for key, group in (("haproxy", "haproxy"), ("raylet", "raylet"), ("gcs_server", "gcs"), ("uvicorn", "app"),
                       ("mlflow", "app"), ("servers.py", "driver")):
        if key in name or key in cmd:
            return group
    return "server-other"


def cpu_per_request(watch: dict[str, Any], answered: int) -> dict[str, Any]:
    groups = {g: s for g, s in watch["by_group_cpu_s"].items() if g != "client" and s > 0}
    n = max(1, answered)
    return {"server_ms_per_req": {g: 1000 * s / n for g, s in sorted(groups.items())},
            "server_ms_per_req_total": 1000 * sum(groups.values()) / n,
            "client_ms_per_req": 1000 * watch["by_group_cpu_s"].get("client", 0.0) / n,
            "foreign_share": watch["foreign_share"], "disturbed": watch["disturbed"]}


def _summary(lat: list[float], errors: Counter, ok: int, seconds: float) -> dict[str, Any]:
    total = ok + sum(errors.values())
    return {"requests": total, "ok": ok, "errors": dict(errors), "error_share": sum(errors.values()) / max(1, total),
            "throughput_rps": ok / seconds, **{f"p{q}_ms": 1000 * harness.percentile(lat, q) for q in (50, 90, 99)}}


async def _post(session, url: str, body: bytes) -> int | str:
    try:
        async with session.post(url, data=body, headers=HDR) as r:
            await r.read()
            return r.status
    except asyncio.TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - every client-side failure is an error of the run
        return type(exc).__name__


async def closed_loop(url: str, bodies: list[bytes], clients: int, seconds: float, warmup_s: float = 1.0) -> dict:
    """``clients`` clients, each sending its next request as soon as its last one was answered."""
    import aiohttp

    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: Counter = Counter()
    ok = 0
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + seconds
    watch = harness.CpuWatch(group=role)

    async def client(i: int, session) -> None:
        nonlocal ok
        k = i
        while (t0 := time.perf_counter()) < t_end:
            status = await _post(session, url, bodies[k % len(bodies)])
            k += clients
            if t0 < t_measure:
                continue
            if status == 200:
                ok += 1
                lat.append(time.perf_counter() - t0)
            else:
                errors[str(status)] += 1

    async def watcher() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        await loop.run_in_executor(None, watch.__enter__)
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        await loop.run_in_executor(None, watch.__exit__)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(watcher(), *(client(i, session) for i in range(clients)))
    w = watch.result()
    return {"clients": clients, **_summary(lat, errors, ok, w["wall_s"]), "cpu": cpu_per_request(w, ok)}


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float, max_inflight: int = 512) -> dict:
    """A request every 1/rate s whatever the answers do; latency from the scheduled send time, so queueing
    in the client and the server counts (no coordinated omission)."""
    import aiohttp

    lat: list[float] = []
    errors: Counter = Counter()
    ok = inflight = 0

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

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_inflight),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        with harness.CpuWatch(group=role) as watch:
            start = time.perf_counter()
            for i in range(max(1, int(rate * seconds))):
                when = start + i / rate
                await asyncio.sleep(max(0.0, when - time.perf_counter()))
                if inflight >= max_inflight:
                    errors["client_overload"] += 1
                    continue
                tasks.append(asyncio.create_task(fire(session, when, bodies[i % len(bodies)])))
            await asyncio.gather(*tasks)
    res = {"offered_rps": rate, **_summary(lat, errors, ok, seconds), "cpu": cpu_per_request(watch.result(), ok)}
    res["passed"] = bool(lat) and res["p99_ms"] <= 1000 * SLO_S and res["error_share"] <= MAX_ERROR_SHARE
    return res


def run(coro):
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def quietly(phase, max_wait_s: float, failed=lambda r: True) -> dict[str, Any]:
    """Run a phase; if foreign processes disturbed it (and it ``failed``), wait for quiet and run it once
    more, keeping the quieter of the two."""
    first = run(phase())
    if not (first["cpu"]["disturbed"] and failed(first)):
        return first
    harness.wait_for_quiet(max_wait_s, threshold=0.15)
    second = {**run(phase()), "repeated_after_disturbance": True}
    return min(first, second, key=lambda r: r["cpu"]["foreign_share"])


def rate_search(url: str, bodies: list[bytes], hint_rps: float, step_s: float, min_requests: int,
                max_wait_s: float) -> dict[str, Any]:
    """The highest open-loop rate whose p99 <= 50 ms and errors <= 1%: steps from 30% of ``hint_rps`` up (or
    down) to the first failure, then one bisection between the last pass and the first failure."""
    steps: list[dict[str, Any]] = []

    def passes(rate: float) -> bool:
        seconds = max(step_s, min_requests / rate)  # a p99 needs enough samples at low rates
        r = quietly(lambda: open_loop(url, bodies, rate, seconds), max_wait_s, failed=lambda r: not r["passed"])
        steps.append(r)
        print(f"      open loop {rate:5.0f} req/s: p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors "
              f"{r['error_share']:.1%}  {'pass' if r['passed'] else 'FAIL'}", flush=True)
        return r["passed"]

    i = max([0] + [k for k, s in enumerate(RATE_STEPS) if s <= 0.3 * hint_rps])
    best = first_fail = None
    if passes(RATE_STEPS[i]):
        best = RATE_STEPS[i]
        for rate in RATE_STEPS[i + 1:]:
            if not passes(rate):
                first_fail = rate
                break
            best = rate
    else:
        first_fail = RATE_STEPS[i]
        for rate in reversed(RATE_STEPS[:i]):
            if passes(rate):
                best = rate
                break
            first_fail = rate
    if best is not None and first_fail is not None and first_fail - best >= 10 and passes(round((best + first_fail) / 2)):
        best = round((best + first_fail) / 2)
    return {"rps_at_p99_slo": best or 0, "first_failing_rps": first_fail, "steps": steps}


def measure(url: str, bodies: list[bytes], seconds: float, max_wait_s: float, search: dict[str, Any] | None = None,
            counts: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
    """A target's closed-loop phases (``c1``, ``c32``) and, with ``search`` (step_s, min_requests), its rate search."""
    res: dict[str, Any] = {"url": url, "quiet": harness.wait_for_quiet(max_wait_s, threshold=0.15)}
    for n in counts:
        r = res[f"c{n}"] = quietly(lambda n=n: closed_loop(url, bodies, n, seconds), max_wait_s)
        print(f"      {n:2d} clients: {r['throughput_rps']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 "
              f"{r['p99_ms']:7.2f} ms  server CPU {r['cpu']['server_ms_per_req_total']:.2f} ms/req"
              + (f"  errors {r['errors']}" if r["errors"] else "") + ("  (NOT quiet)" if r["cpu"]["disturbed"] else ""),
              flush=True)
    if search:
        res["rate_search"] = rate_search(url, bodies, res[f"c{counts[-1]}"]["throughput_rps"], max_wait_s=max_wait_s,
                                         **search)
        print(f"      -> {res['rate_search']['rps_at_p99_slo']} req/s at p99 <= 50 ms", flush=True)
    return res
