"""Serving knobs: raymlops on Ray Serve with one setting changed, against the named baseline "raymlops as
shipped" measured in the same invocation (1 replica, batching and monitoring on).

Knobs (``--knobs`` picks some by name):
    raymlops config options, redeployed on the same Ray as the baseline:
      replicas_2       ``serving.min_replicas = max_replicas = 2``
      monitoring_off   ``monitoring.enabled: false`` (the monitor actor's CPU, also in serve_bench's table)
      max_ongoing_16   ``serving.max_ongoing_requests: 16`` (shipped 64: fewer than the 32 clients, so
                       Serve's router gets rejections from the replica and backs off)
    Ray Serve's documented high-throughput options, each in its own fresh Ray (Serve's processes read them
    at start), load on the Serve port as a client would send it:
      haproxy                       ``RAY_SERVE_ENABLE_HA_PROXY=1`` (needs a ``haproxy`` binary on PATH,
                                    else reported as skipped)
      throughput_optimized          ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
      haproxy+throughput_optimized  both
Per knob: closed loop with 1 and 32 clients (``loadgen.measure``); the figures are 32-client requests/s
and 1-client p50 latency.

How to run (from the repository root)::

    .venv/bin/python benchmarks/serve_knobs_bench.py                          # every knob
    .venv/bin/python benchmarks/serve_knobs_bench.py --knobs monitoring_off   # monitoring on vs off
    .venv/bin/python benchmarks/serve_knobs_bench.py --quick                  # monitoring_off, 2 s phases

Options: ``--closed-s S`` (default 5, quick 2), ``--workdir DIR`` (see serve_bench.py), ``--max-wait S``.
Writes ``benchmarks/out/serve_knobs_bench.json``.
"""

from __future__ import annotations

import argparse
import shutil
from typing import Any

import harness
import loadgen
import servers
from harness import Comparison

ONE = {"min_replicas": 1, "max_replicas": 1}
CONFIG_KNOBS = {  # name -> (deploy overrides, monitoring on)
    "replicas_2": ({"min_replicas": 2, "max_replicas": 2}, True),
    "monitoring_off": (ONE, False),
    "max_ongoing_16": ({**ONE, "max_ongoing_requests": 16}, True),
}
SERVE_ENV_KNOBS = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput_optimized": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy+throughput_optimized": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
BASELINE = "raymlops as shipped (1 replica)"


def on_one_ray(model: servers.BenchModel, knobs: list[str], args) -> dict[str, dict[str, Any]]:
    """The baseline, then each config knob, redeployed on one Ray."""
    proc = servers.start_raymlops(model.cfg_path, servers.free_port(), model.folder / "ray-knobs.log")
    results = {}
    try:
        for name in ["as_shipped", *knobs]:
            overrides, monitoring = CONFIG_KNOBS.get(name, (ONE, True))
            if results:
                proc.send({"cmd": "undeploy"})
            url = proc.send({"cmd": "deploy", "overrides": overrides, "monitoring": monitoring})["url"]
            print(f"\n{name} ...", flush=True)
            results[name] = loadgen.measure(url + "/v1/predict", model.bodies(), args.closed_s, args.max_wait)
    finally:
        proc.stop()
    return results


def on_fresh_ray(model: servers.BenchModel, name: str, args) -> dict[str, Any]:
    """One Ray Serve environment option, in a Ray started for it."""
    env = SERVE_ENV_KNOBS[name]
    if "RAY_SERVE_ENABLE_HA_PROXY" in env and not shutil.which("haproxy"):
        print(f"\n{name}: skipped (no haproxy binary on PATH)", flush=True)
        return {"skipped": "no haproxy binary on PATH"}
    proc = servers.start_raymlops(model.cfg_path, servers.free_port(), model.folder / f"ray-{name}.log", env)
    try:
        url = proc.send({"cmd": "deploy", "overrides": ONE})["url"]
        print(f"\n{name}: {env} ...", flush=True)
        return {"env": env, **loadgen.measure(url + "/v1/predict", model.bodies(), args.closed_s, args.max_wait)}
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--knobs", default="", help=f"comma-separated, of {', '.join([*CONFIG_KNOBS, *SERVE_ENV_KNOBS])}")
    ap.add_argument("--quick", action="store_true", help="monitoring_off only (unless --knobs), 2 s phases")
    ap.add_argument("--closed-s", type=float, help="seconds per closed-loop phase (default 5; quick 2)")
    ap.add_argument("--workdir", help="train the model there (kept), or reuse the one trained there")
    ap.add_argument("--max-wait", type=float, default=20.0, help="wait up to this long for a quiet machine")
    args = ap.parse_args()
    args.closed_s = args.closed_s or (2.0 if args.quick else 5.0)
    chosen = args.knobs.split(",") if args.knobs else ["monitoring_off"] if args.quick else [*CONFIG_KNOBS, *SERVE_ENV_KNOBS]
    unknown = set(chosen) - {*CONFIG_KNOBS, *SERVE_ENV_KNOBS}
    if unknown:
        ap.error(f"unknown knobs: {', '.join(sorted(unknown))}")

    model = servers.prepare_model(args.workdir)
    try:
        results = on_one_ray(model, [k for k in chosen if k in CONFIG_KNOBS], args)
        results |= {k: on_fresh_ray(model, k, args) for k in chosen if k in SERVE_ENV_KNOBS}
    finally:
        if not args.workdir:
            shutil.rmtree(model.folder, ignore_errors=True)
    base = results["as_shipped"]
    comparisons = []
    for name in chosen:
        r = results[name]
        if "c32" not in r:
            continue
        disturbed = any(x[k]["cpu"]["disturbed"] for x in (r, base) for k in ("c1", "c32"))
        comparisons += [
            Comparison("serve_knobs_bench", f"{name}: 32 clients, requests/s", r["c32"]["throughput_rps"],
                       base["c32"]["throughput_rps"], BASELINE, "req/s", higher_is_better=True,
                       extra={"disturbed": disturbed}),
            Comparison("serve_knobs_bench", f"{name}: 1 client, p50 latency", r["c1"]["p50_ms"], base["c1"]["p50_ms"],
                       BASELINE, "ms", extra={"disturbed": disturbed})]
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, {"knobs": results}, args)


if __name__ == "__main__":
    main()
