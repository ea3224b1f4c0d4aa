"""Online serving: raymlops on Ray Serve against two named baselines serving the same model to the same
requests from the same load generator: "plain FastAPI" (``baselines/plain_app.py``: one uvicorn process,
the same request validation and per-request work, no Ray, no batching, no monitoring) and "mlflow serve"
(``mlflow models serve`` of the same package logged as a pyfunc from code, ``baselines/mlflow_model.py``).

What is measured (one invocation)
    A smoke model (``configs/smoke.yaml``, 2 epochs) is trained in a temp workdir first; requests are 256
    real records, one per request, cycled in the same order for every target, and the first 8 are scored
    by every target first (the scores must agree to 1e-6).
    * raymlops: ``raymlops.serving.deploy.deploy`` on a local Ray (``ray_runtime(num_cpus=2)``), 1 replica
      (min = max = 1), everything else as shipped (dynamic batching on, monitoring on). The same Ray then
      serves it again with ``serving.batching.enabled: false``: the batching gain.
    * the baselines run with OMP_NUM_THREADS=1 (what Ray gives a 0.5-CPU replica).
    Per target (``loadgen.measure``): closed loop with 1 and 32 clients (``--closed-s`` s each after a 1 s
    warm-up): requests/s, p50/p99, and the CPU per answered request of every server process by role;
    then the open-loop search for the highest rate whose p99 stays <= 50 ms with <= 1% errors.

How to run (from the repository root)::

    .venv/bin/python benchmarks/serve_bench.py
    .venv/bin/python benchmarks/serve_bench.py --quick    # short phases

Options: ``--closed-s S`` (default 8, quick 2), ``--step-s S`` (open-loop step, default 5, quick 1.5),
``--workdir DIR`` (train there, or reuse a model trained there), ``--max-wait S`` (default 20).
Knobs of raymlops and of Ray Serve: ``serve_knobs_bench.py``; the handler's steps in-process:
``serve_handler_bench.py``. Writes ``benchmarks/out/serve_bench.json``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import harness
import loadgen
import servers
from harness import Comparison

NAMES = {"plain": "plain FastAPI + uvicorn, 1 process", "mlflow": "mlflow models serve, 1 worker"}


def serve_raymlops(model: servers.BenchModel, args, search: dict) -> tuple[dict, dict, list[float]]:
    """raymlops as shipped, then with batching off on the same Ray: (as shipped, batching off, check scores)."""
    proc = servers.start_raymlops(model.cfg_path, servers.free_port(), model.folder / "raymlops.log")
    try:
        one = {"min_replicas": 1, "max_replicas": 1}
        url = proc.send({"cmd": "deploy", "overrides": one})["url"] + "/v1/predict"
        scores = [servers.post_json(url, {"record": r})["predictions"][0]["score"] for r in model.records[:8]]
        print("\n(a) raymlops on Ray Serve, 1 replica, as shipped ...", flush=True)
        shipped = loadgen.measure(url, model.bodies(), args.closed_s, args.max_wait, search)
        proc.send({"cmd": "undeploy"})
        off = {**one, "batching": {"enabled": False, "max_batch_size": 16, "wait_timeout_s": 0.005}}
        url = proc.send({"cmd": "deploy", "overrides": off})["url"] + "/v1/predict"
        print("\n(a') raymlops, serving.batching.enabled: false ...", flush=True)
        batching_off = loadgen.measure(url, model.bodies(), args.closed_s, args.max_wait)
    finally:
        proc.stop()
    return shipped, batching_off, scores


def serve_plain(model: servers.BenchModel, args, search: dict) -> tuple[dict, list[float]]:
    port = servers.free_port()
    proc = servers.Proc([servers.PY, "-m", "uvicorn", "--app-dir", str(servers.BASELINES), "plain_app:app",
                         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
                         "--log-level", "warning"],
                        servers.server_env({"BENCH_CONFIG": str(model.cfg_path), "BENCH_PACKAGE": str(model.package),
                                            "BENCH_VERSION": "1", "OMP_NUM_THREADS": "1"}), model.folder / "plain.log")
    try:
        servers.wait_http(f"http://127.0.0.1:{port}/readyz", 120)
        url = f"http://127.0.0.1:{port}/v1/predict"
        scores = [servers.post_json(url, {"record": r})["predictions"][0]["score"] for r in model.records[:8]]
        print(f"\n(b) {NAMES['plain']} ...", flush=True)
        return loadgen.measure(url, model.bodies(), args.closed_s, args.max_wait, search), scores
    finally:
        proc.stop()


def serve_mlflow(model: servers.BenchModel, args, search: dict) -> tuple[dict, list[float]]:
    model_uri, tracking = servers.log_mlflow_model(model.cfg_path, model.package, model.schema)
    port = servers.free_port()
    proc = servers.Proc([str(Path(servers.PY).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                         "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                        servers.server_env({"MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}),
                        model.folder / "mlflow.log")
    try:
        servers.wait_http(f"http://127.0.0.1:{port}/ping", 180)
        url = f"http://127.0.0.1:{port}/invocations"
        scores = [p["score"] for p in servers.post_json(url, {"dataframe_records": model.records[:8]})["predictions"]]
        print(f"\n(c) {NAMES['mlflow']} ...", flush=True)
        return loadgen.measure(url, model.bodies("dataframe_records"), args.closed_s, args.max_wait, search), scores
    finally:
        proc.stop()


FIGURES = (  # (case, unit, higher is better, how to read it from a target's results)
    ("32 clients: requests/s", "req/s", True, lambda r: r["c32"]["throughput_rps"]),
    ("1 client: p50 latency", "ms", False, lambda r: r["c1"]["p50_ms"]),
    ("open loop: req/s at p99 <= 50 ms", "req/s", True, lambda r: r["rate_search"]["rps_at_p99_slo"]),
    ("32 clients: server CPU per request", "ms", False, lambda r: r["c32"]["cpu"]["server_ms_per_req_total"]),
)


def compare(targets: dict[str, dict], batching_off: dict) -> list[Comparison]:
    found = []
    for name in ("plain", "mlflow"):
        for case, unit, higher, get in FIGURES:
            disturbed = any(t[k]["cpu"]["disturbed"] for t in (targets["raymlops"], targets[name]) for k in ("c1", "c32"))
            found.append(Comparison("serve_bench", case, get(targets["raymlops"]), get(targets[name]), NAMES[name], unit,
                                    higher_is_better=higher, extra={"disturbed": disturbed}))
    found.append(Comparison("serve_bench", "32 clients: requests/s, dynamic batching on",
                            targets["raymlops"]["c32"]["throughput_rps"], batching_off["c32"]["throughput_rps"],
                            "raymlops with serving.batching.enabled: false", "req/s", higher_is_better=True,
                            extra={"disturbed": batching_off["c32"]["cpu"]["disturbed"]}))
    return found


def print_cpu(targets: dict[str, dict]) -> None:
    print("\nserver CPU per answered request at 32 clients, ms, by process:")
    for name, t in targets.items():
        c = t["c32"]["cpu"]
        print(f"   {name:22s} " + ", ".join(f"{g} {v:.2f}" for g, v in c["server_ms_per_req"].items())
              + f"; total {c['server_ms_per_req_total']:.2f} (client {c['client_ms_per_req']:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s closed-loop phases, 1.5 s open-loop steps")
    ap.add_argument("--closed-s", type=float, help="seconds per closed-loop phase (default 8; quick 2)")
    ap.add_argument("--step-s", type=float, help="seconds per open-loop step (default 5; quick 1.5)")
    ap.add_argument("--workdir", help="train the model there (kept), or reuse the one trained there")
    ap.add_argument("--max-wait", type=float, default=20.0, help="wait up to this long for a quiet machine")
    args = ap.parse_args()
    args.closed_s = args.closed_s or (2.0 if args.quick else 8.0)
    search = {"step_s": args.step_s or (1.5 if args.quick else 5.0), "min_requests": 30 if args.quick else 80}

    model = servers.prepare_model(args.workdir)
    try:
        targets: dict[str, dict] = {}
        scores: dict[str, list[float]] = {}
        targets["raymlops"], batching_off, scores["raymlops"] = serve_raymlops(model, args, search)
        targets["plain"], scores["plain"] = serve_plain(model, args, search)
        targets["mlflow"], scores["mlflow"] = serve_mlflow(model, args, search)
    finally:
        if not args.workdir:
            shutil.rmtree(model.folder, ignore_errors=True)
    diffs = {k: max(abs(x - y) for x, y in zip(v, scores["raymlops"], strict=True)) for k, v in scores.items()}
    print(f"\nscores of 8 records, max |difference| from raymlops: {diffs} "
          f"({'agree' if max(diffs.values()) < 1e-6 else 'DISAGREE'})")
    print_cpu({**targets, "raymlops, batching off": batching_off})
    comparisons = compare(targets, batching_off)
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, {"targets": targets, "batching_off": batching_off,
                                                  "score_check": {"scores": scores, "max_abs_diff": diffs},
                                                  "slo_p99_ms": 1000 * loadgen.SLO_S}, args)


if __name__ == "__main__":
    main()
