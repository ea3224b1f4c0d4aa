"""Guarantee 4, HTTP: the serving API fuzzed from its own OpenAPI document with schemathesis.

Every operation the service documents gets valid and invalid requests generated from the schema
(schemathesis' positive and negative modes), sent over real HTTP to a real Serve application with
the API key. Checked for each: no 5xx, the status is one the document declares, the body matches the
declared schema, invalid input is refused, and every refusal says why (a non-empty ``detail``).
"""

from __future__ import annotations

import json
import zlib

import pandas as pd
import requests

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from raymlops.config import load_config
from raymlops.data.stage import run_data_stage
from raymlops.training.stage import run_training_stage
from tests.helpers import free_port, serve_port, smoke_dict, write_config

pytestmark = pytest.mark.reliability
# Generated cases per operation and mode. Feedback bodies hold up to 10,000 items, each joined by the
# monitor actor: 100 of them take about as long as 600 predictions.
EXAMPLES = {"POST /v1/predict": 600, "POST /v1/feedback": 100}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
seen: dict[str, int] = {}
WITH_INPUT = ["POST /v1/predict", "POST /v1/feedback"]
WITHOUT_INPUT = ["POST /v1/admin/refresh", "GET /v1/monitor", "GET /v1/model", "GET /healthz", "GET /readyz"]
# Valid and invalid requests where there is input; the others can only be called (with extra headers).
FUZZED = [(op, mode) for op in WITH_INPUT for mode in ("positive", "negative")] + \
    [(op, "positive") for op in WITHOUT_INPUT]


@pytest.fixture(scope="module")
def fuzz_service(ray_session, tmp_path_factory):
    from ray import serve

    from raymlops.serving.deploy import deploy

    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "api.key").write_text("fuzz-key-0123456789")
    data = smoke_dict()
    data["training"]["epochs"] = 1
    data["evaluation"]["gates"] = []
    data["serving"] = {"port": serve_port(), "api_key_file": str(tmp / "api.key"), "min_replicas": 1,
                       "max_replicas": 1, "cpus_per_replica": 0.25, "max_records_per_request": 50}
    data["monitoring"] = {"metrics_port": free_port()}
    cfg = load_config(write_config(tmp, data))
    run_training_stage(cfg, run_data_stage(cfg), run_name="fuzz-v1")
    url = deploy(cfg, app_name="fuzz", route_prefix="/fuzz")
    yield url, "fuzz-key-0123456789"
    total = sum(seen.values())
    print(f"\nschemathesis: {total} requests over {len(seen)} operations: " +
          ", ".join(f"{op} {n}" for op, n in sorted(seen.items())))
    serve.delete("fuzz")
    from raymlops.monitoring.monitor import stop_monitor

    stop_monitor(cfg.model_name, cfg.workdir_path)  # detached: it would poll for the rest of the session


@pytest.fixture(scope="module")
def api_schema(fuzz_service):
    url, _ = fuzz_service
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def _operation(schema, label: str):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise AssertionError(f"{label} is not in the OpenAPI document")


def _timestamps_in_declared_range(url: str):
    """JSON Schema cannot bound a date-time, so valid cases get their timestamps moved into the input
    schema's declared range (deterministically, from the generated value); everything else is as generated."""
    schema_in = requests.get(f"{url}/v1/model", timeout=10).json()["input_schema"]
    bounds = {col: (spec["type"], pd.Timestamp(spec["min"]), pd.Timestamp(spec["max"]))
              for col, spec in schema_in.items()
              if spec.get("type") in ("timestamp", "date") and spec.get("min") and spec.get("max")}

    def fix(case):
        body = case.body if isinstance(case.body, dict) else {}
        records = [body["record"]] if isinstance(body.get("record"), dict) else body.get("records") or []
        for record in (r for r in records if isinstance(r, dict)):
            for col, (kind, lo, hi) in bounds.items():
                if record.get(col) is not None:
                    when = lo + (hi - lo) * (zlib.crc32(str(record[col]).encode()) % 10_000 / 10_000)
                    record[col] = when.date().isoformat() if kind == "date" else when.isoformat()
        return case

    return fix


def test_every_route_of_the_document_is_fuzzed(api_schema):
    assert {r.ok().label for r in api_schema.get_all_operations()} == {label for label, _ in FUZZED}


@pytest.mark.parametrize(("label", "mode"), FUZZED, ids=[f"{label} {mode}" for label, mode in FUZZED])
def test_the_http_api_survives_fuzzing_from_its_own_openapi_document(api_schema, fuzz_service, label, mode):
    url, key = fuzz_service
    operation = _operation(api_schema, label)
    examples = EXAMPLES.get(label, 25)
    statuses: dict[int, int] = {}

    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
    if mode == "positive" and label == "POST /v1/predict":
        strategy = strategy.map(_timestamps_in_declared_range(url))

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call(base_url=url, headers={"X-API-Key": key}, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            body = json.loads(response.content)
            assert body.get("detail"), f"{label} {response.status_code} without a reason: {body}"

    fuzz()
    seen[f"{label} ({mode})"] = sum(statuses.values())
    print(f"\n{label} {mode}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert 500 not in statuses
