"""Baseline (b) of benchmarks/serve_bench.py: the raymlops predict route as a plain FastAPI app, one process.

No Ray: the same request validation and the same per-request work as the Serve replica's ``/v1/predict``
(``raymlops/serving/app.py``), minus what only exists there (canary choice between aliases, the monitoring
sample queue, dynamic batching, registry watching):

* the same ASGI body-size limit (``BodyLimit``) and 422 handler as the Serve app;
* the request body validated by the same generated pydantic models (``record_model`` +
  ``predict_request_model`` from the package's input schema, ``max_records_per_request`` from the config);
* the replica's own fast path: validated records straight to feature arrays
  (``FittedFeatures.transform_records``; the typed frame ``frame_from_rows`` only where that path leaves
  values to it), then ``LoadedModel.predict_features`` of the same package, so the ratio measures what
  Ray Serve costs, not a slower handler;
* the same response model (``PredictResponse`` via ``predictions_for``) and headers (X-Model-Version,
  X-Request-Id).

Run (the benchmark does this)::

    BENCH_CONFIG=/tmp/x/pipeline.yaml BENCH_PACKAGE=/tmp/x/work/packages/bench/model BENCH_VERSION=1 \\
      .venv/bin/python -m uvicorn --app-dir benchmarks/baselines plain_app:app \\
      --host 127.0.0.1 --port 18100 --workers 1 --no-access-log
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at runtime.

import os
import uuid

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError

from raymlops.config import load_config
from raymlops.model.packaging import load_package
from raymlops.serving.app import BodyLimit, _validation_error  # the same middleware/handler as the Serve app
from raymlops.serving.schema import PredictResponse, predict_request_model, predictions_for
from raymlops.model.inputs import frame_from_rows, probe_record, record_model

cfg = load_config(os.environ["BENCH_CONFIG"])
serving = cfg.serving.model_dump()
model = load_package(os.environ["BENCH_PACKAGE"])
version = os.environ.get("BENCH_VERSION", "1")
model_name = cfg.model_name
schema = model.manifest["input_schema"]
task = model.task

Record = record_model(schema, name="Record")
PredictRequest = predict_request_model(Record, serving["max_records_per_request"])

app = FastAPI(title=f"plain baseline: {model_name}")
app.add_middleware(BodyLimit, limit=serving["max_body_bytes"])
app.add_exception_handler(RequestValidationError, _validation_error)
_probe = frame_from_rows([Record.model_validate(probe_record(schema)).model_dump()], schema)


@app.post("/v1/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, response: Response) -> PredictResponse:  # type: ignore[valid-type]
    rows = body.rows()
    features = model.features.transform_records(rows)
    if features is None:
        features = model.features.transform_frame(frame_from_rows(rows, schema))
    scores = model.predict_features(features)
    request_id = uuid.uuid4().hex
    values = [float(s) for s in scores]
    response.headers["X-Model-Version"] = version
    response.headers["X-Request-Id"] = request_id
    return PredictResponse(request_id=request_id, model=model_name, version=version, alias="champion",
                           predictions=predictions_for(task, values))


@app.get("/readyz")
async def readyz() -> dict:
    model.predict_frame(_probe)
    return {"status": "ready", "version": version}
