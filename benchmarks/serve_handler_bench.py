"""The predict handler's own work, in this process (no HTTP, no Ray, 1 torch thread): raymlops' replica
path against the named baseline, the plain FastAPI app's handler (``baselines/plain_app.py``).

Both parse and validate the body with the same generated pydantic models and build the same response.
In between, raymlops turns validated records into feature arrays directly
(``FittedFeatures.transform_records``, the typed frame only for values that path leaves to it) and calls
``predict_features``; with dynamic batching, once for the 16 requests of a batch. The baseline builds a
typed frame per request (``frame_from_rows``) and calls ``predict_frame``. Median over the 256 request
records, each step timed apart (400 requests after 50 untimed; quick: 100 after 20).

How to run (from the repository root)::

    .venv/bin/python benchmarks/serve_handler_bench.py [--quick] [--workdir DIR]

The same model and records as serve_bench.py (``--workdir`` reuses a model trained there). Writes
``benchmarks/out/serve_handler_bench.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import time
from typing import Any

import harness
import servers
from harness import Comparison

BASELINE = "plain FastAPI handler (frame_from_rows + predict_frame)"
BATCH = 16


def handler_steps(model: servers.BenchModel, requests: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median seconds of each step of both handlers, over the same request bodies."""
    import torch

    from raymlops.config import load_config
    from raymlops.model.inputs import frame_from_rows, record_model
    from raymlops.model.packaging import load_package
    from raymlops.serving.schema import PredictResponse, predict_request_model, predictions_for

    torch.set_num_threads(1)
    loaded = load_package(model.package)
    request_model = predict_request_model(record_model(model.schema), load_config(model.cfg_path).serving.max_records_per_request)
    bodies = model.bodies()

    def features(rows: list[dict[str, Any]]) -> Any:
        found = loaded.features.transform_records(rows)
        return found if found is not None else loaded.features.transform_frame(frame_from_rows(rows, model.schema))

    def respond(scores) -> None:
        PredictResponse(request_id="0" * 32, model="m", version="1", alias="champion",
                        predictions=predictions_for(loaded.task, [float(s) for s in scores])).model_dump_json()

    steps: dict[str, list[float]] = {}
    for i in range(warmup + requests):
        marks = [time.perf_counter()]
        rows = request_model.model_validate(json.loads(bodies[i % len(bodies)])).rows()
        marks.append(time.perf_counter())
        feats = features(rows)
        marks.append(time.perf_counter())
        scores = loaded.predict_features(feats)
        marks.append(time.perf_counter())
        frame_features = loaded.features.transform_frame(frame_from_rows(rows, model.schema))
        marks.append(time.perf_counter())
        loaded.predict_features(frame_features)  # with the line above: predict_frame
        marks.append(time.perf_counter())
        respond(scores)
        marks.append(time.perf_counter())
        if i >= warmup:
            for name, (a, b) in zip(("parse+validate", "features (records)", "predict_features", "features (frame)",
                                     "predict_features (frame)", "response"), itertools.pairwise(marks), strict=True):
                steps.setdefault(name, []).append(b - a)
    rows16 = [r for b in bodies[:BATCH] for r in request_model.model_validate(json.loads(b)).rows()]
    steps["batch of 16: features + predict_features"] = harness.repeat(
        lambda: loaded.predict_features(features(rows16)), max(10, requests // 8), warmup=3)
    return {name: harness.summarize(values) for name, values in steps.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 timed requests instead of 400")
    ap.add_argument("--workdir", help="train the model there (kept), or reuse the one trained there")
    ap.add_argument("--max-wait", type=float, default=30.0, help="wait up to this long for a quiet machine")
    args = ap.parse_args()
    model = servers.prepare_model(args.workdir)
    try:
        quiet = harness.wait_for_quiet(args.max_wait)
        with harness.CpuWatch() as watch:
            steps = handler_steps(model, *((100, 20) if args.quick else (400, 50)))
    finally:
        if not args.workdir:
            shutil.rmtree(model.folder, ignore_errors=True)
    ms = {name: 1000 * s["median"] for name, s in steps.items()}
    print("median ms per step: " + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()))
    common = ms["parse+validate"] + ms["response"]
    ours_one = common + ms["features (records)"] + ms["predict_features"]
    ours_batched = common + ms["batch of 16: features + predict_features"] / BATCH
    plain = common + ms["features (frame)"] + ms["predict_features (frame)"]
    extra = {"disturbed": watch.result()["disturbed"], "statistic": "sum of step medians"}
    comparisons = [
        Comparison("serve_handler_bench", "feature work for one record", ms["features (records)"],
                   ms["features (frame)"], "typed frame (frame_from_rows + transform_frame)", "ms", extra=extra),
        Comparison("serve_handler_bench", "handler work per request, 1 request", ours_one, plain, BASELINE, "ms",
                   extra=extra),
        Comparison("serve_handler_bench", f"handler work per request, batch of {BATCH}", ours_batched, plain, BASELINE,
                   "ms", extra=extra)]
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, {"steps_s": steps, "machine": {**watch.result(), **quiet}}, args)


if __name__ == "__main__":
    main()
