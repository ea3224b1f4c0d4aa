"""Pure serving logic: request models from the input schema, casting, feedback joins, model references."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from raymlops.config import ValidationConfig
from raymlops.data.validation import coerce_frame
from raymlops.errors import ModelPackageError, RegistryError
from raymlops.monitoring.feedback import PredictionLog
from raymlops.registry.store import parse_model_ref
from raymlops.serving.schema import FeedbackRequest, predict_request_model, predictions_for
from raymlops.model.inputs import check_servable, frame_from_rows, probe_record, record_model

SCHEMA = {
    "time_hour": {"type": "timestamp", "nullable": False, "min": "2013-01-01", "max": "2014-01-02"},
    "distance": {"type": "float", "nullable": False, "min": 0.0, "max": 5000.0},
    "temp": {"type": "float", "nullable": True, "min": -20.0, "max": 120.0},
    "hour": {"type": "int", "nullable": False, "min": 0.0, "max": 23.0},
    "carrier": {"type": "string", "nullable": False, "allowed": ["AA", "UA"]},
    "dest": {"type": "string", "nullable": False},
}
GOOD = {"time_hour": "2013-05-01T10:00:00Z", "distance": 1400.5, "temp": None, "hour": 10, "carrier": "UA",
        "dest": "ORD"}


@pytest.fixture(scope="module")
def request_model():
    return predict_request_model(record_model(SCHEMA), max_records=3)


def _errors(model, body) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(("change", "loc", "says"), [
    ({"distance": "far"}, ("record", "distance"), "valid number"),
    ({"distance": -1}, ("record", "distance"), "greater than or equal to 0"),
    ({"distance": math.nan}, ("record", "distance"), "finite"),
    ({"temp": math.inf}, ("record", "temp"), "finite"),
    ({"hour": 24}, ("record", "hour"), "less than or equal to 23"),
    ({"hour": 1.5}, ("record", "hour"), "integer"),
    ({"carrier": "ZZ"}, ("record", "carrier"), "'AA' or 'UA'"),
    ({"time_hour": "2019-01-01T00:00:00Z"}, ("record", "time_hour"), "at or before 2014-01-02"),
    ({"time_hour": "yesterday"}, ("record", "time_hour"), "datetime"),
    ({"time_hour": 27397659}, ("record", "time_hour"), "ISO 8601 date or time as text"),  # not seconds since 1970
    ({"temp": True}, ("record", "temp"), "not true/false or text"),  # pydantic alone reads true as 1.0
    ({"time_hour": "0001-01-01T00:00:00+03:25"}, ("record", "time_hour"), "between 1677-09-22 and 2262-04-11"),
    ({"hour": "12"}, ("record", "hour"), "not true/false or text"),
    ({"dest": "x" * 300}, ("record", "dest"), "at most 256"),
    ({"tail": "N1"}, ("record", "tail"), "Extra inputs"),
])
def test_each_bad_field_is_named_with_the_reason(request_model, change, loc, says):
    problems = _errors(request_model, {"record": {**GOOD, **change}})
    assert any(p_loc == loc and says in msg for p_loc, msg in problems), problems


def test_required_and_optional_fields(request_model):
    missing = _errors(request_model, {"record": {k: v for k, v in GOOD.items() if k != "carrier"}})
    assert missing == [(("record", "carrier"), "Field required")]
    without_nullable = {k: v for k, v in GOOD.items() if k != "temp"}
    assert request_model.model_validate({"record": without_nullable}).rows()[0]["temp"] is None


def test_one_record_or_a_bounded_list_but_not_both(request_model):
    assert len(request_model.model_validate({"records": [GOOD, GOOD]}).rows()) == 2
    assert "at least 1" in _errors(request_model, {"records": []})[0][1]
    assert "at most 3" in _errors(request_model, {"records": [GOOD] * 4})[0][1]
    assert "exactly one" in _errors(request_model, {"record": GOOD, "records": [GOOD]})[0][1]
    assert "exactly one" in _errors(request_model, {})[0][1]


def test_request_rows_cast_exactly_like_ingested_rows(request_model):
    """The serving path and the ingestion path give the same typed frame, so the features agree."""
    rows = request_model.model_validate({"records": [GOOD, {**GOOD, "temp": 55.5, "hour": 0}]}).rows()
    served = frame_from_rows(rows, SCHEMA)
    ingested = coerce_frame(pd.DataFrame([{**GOOD}, {**GOOD, "temp": 55.5, "hour": 0}]).astype(str).replace("None", None),
                            ValidationConfig(columns=SCHEMA))
    pd.testing.assert_frame_equal(served, ingested[list(SCHEMA)], check_dtype=True)


def test_probe_record_is_valid_for_its_schema(request_model):
    assert request_model.model_validate({"record": probe_record(SCHEMA)})


@pytest.mark.parametrize(("spec", "good", "bad", "says", "described"), [
    ({"type": "float", "nullable": False, "min": 0.0}, 1e6, -1, "greater than or equal to 0", "float, >= 0.0"),
    ({"type": "int", "nullable": False, "max": 23.0}, -5, 24, "less than or equal to 23", "int, <= 23.0"),
    ({"type": "timestamp", "nullable": False, "min": "2013-01-01"}, "2030-01-01T00:00:00Z",
     "2012-12-31T00:00:00Z", "at or after", "timestamp, >= 2013-01-01"),
])
def test_a_bound_on_one_side_only_types_requests(spec, good, bad, says, described):
    """Issue 15: `min:` without `max:` made deploy fail with a bare KeyError 'max'."""
    model = predict_request_model(check_servable({"x": spec}), max_records=1)
    assert model.model_validate({"record": probe_record({"x": spec})})
    assert model.model_validate({"record": {"x": good}})
    problems = _errors(model, {"record": {"x": bad}})
    assert any(loc == ("record", "x") and says in msg for loc, msg in problems), problems
    assert record_model({"x": spec}).model_json_schema()["properties"]["x"]["description"] == described


@pytest.mark.parametrize(("spec", "says"), [
    ({"type": "float", "min": "far"}, "input column 'x': min 'far' is not a number"),
    ({"type": "timestamp", "max": "someday"}, "input column 'x': max 'someday' is not a date or time"),
    ({"type": "int", "nullable": False, "min": 0.2, "max": 0.8}, "input column 'x': no value passes its own checks"),
])
def test_a_schema_that_cannot_be_served_is_refused_naming_the_column(spec, says):
    with pytest.raises(ModelPackageError) as info:
        check_servable({**SCHEMA, "x": spec})
    assert says in str(info.value)


def test_training_refuses_a_version_it_could_not_serve_before_it_starts(tmp_path):
    """The check runs before any run, training or registration: nothing is written."""
    from types import SimpleNamespace

    from raymlops.config import parse_config
    from raymlops.training.stage import run_training_stage
    from tests.helpers import smoke_dict

    data = smoke_dict()
    data["workdir"] = str(tmp_path / "work")
    data["validation"]["columns"]["distance"] = {"type": "float", "min": "zero", "request_bounds": True}
    cfg = parse_config(data)
    stage_data = SimpleNamespace(split_rows={"train": 10, "validation": 5, "test": 5},
                                 features=SimpleNamespace(input_columns=["distance", "carrier"]))
    with pytest.raises(ModelPackageError, match="input column 'distance': min 'zero' is not a number"):
        run_training_stage(cfg, stage_data, "refused")
    assert not (tmp_path / "work").exists()


def test_predictions_carry_class_probabilities_for_classification():
    (p,) = predictions_for("classification", [0.8])
    assert p.label == 1 and p.probabilities == {"0": pytest.approx(0.2), "1": 0.8}
    (r,) = predictions_for("regression", [12.5])
    assert r.score == 12.5 and r.label is None and r.probabilities is None


def test_feedback_request_rejects_duplicates_and_bad_ids():
    item = {"request_id": "a" * 32, "index": 0, "label": 1}
    with pytest.raises(ValidationError, match="twice"):
        FeedbackRequest.model_validate({"items": [item, item]})
    with pytest.raises(ValidationError, match="pattern"):
        FeedbackRequest.model_validate({"items": [{**item, "request_id": "../../etc/passwd"}]})


def test_prediction_log_joins_by_id_and_index_and_forgets_the_oldest():
    log = PredictionLog(capacity=2)
    for i in range(3):
        log.add([{"request_id": f"r{i}", "scores": [0.1 * i, 0.5], "version": "1", "alias": "champion", "time": i}])
    labelled, unknown = log.join([{"request_id": "r0", "index": 0, "label": 1},
                                  {"request_id": "r2", "index": 1, "label": 0},
                                  {"request_id": "r1", "index": 2, "label": 0}])
    assert unknown == ["r0", "r1[2]"]
    assert labelled == [{"request_id": "r2", "index": 1, "label": 0.0, "score": 0.5, "version": "1",
                         "alias": "champion", "predicted_at": 2}]


@pytest.mark.parametrize(("ref", "parsed"), [
    ("flights", ("flights", "champion", None)),
    ("flights@challenger", ("flights", "challenger", None)),
    ("flights/12", ("flights", None, "12")),
])
def test_model_references(ref, parsed):
    assert parse_model_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["", "@champion", "flights@", "flights/latest", "/3"])
def test_bad_model_references_are_refused(ref):
    with pytest.raises(RegistryError):
        parse_model_ref(ref)


def test_serve_config_file_is_valid_for_ray_serve_and_carries_the_serving_section(tmp_path):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from raymlops.config import load_config
    from raymlops.serving.serve_config import IMPORT_PATH, serve_config_yaml
    from tests.helpers import smoke_config

    cfg = load_config(smoke_config(tmp_path, serving={"port": 8123, "max_queued_requests": 7, "shed_status": 429,
                                                      "canary_share": 0.1, "max_replicas": 3}))
    doc = yaml.safe_load(serve_config_yaml(cfg, "/app/pipeline.yaml"))
    parsed = ServeDeploySchema.model_validate(doc)
    app = parsed.applications[0]
    assert app.import_path == IMPORT_PATH and app.args == {"config": "/app/pipeline.yaml"}
    dep = doc["applications"][0]["deployments"][0]
    assert dep["max_queued_requests"] == 7 and dep["backpressure_config"] == {"status_code": 429, "retry_after_s": 1.0}
    assert dep["autoscaling_config"]["max_replicas"] == 3 and dep["user_config"]["canary_share"] == 0.1
    assert doc["http_options"] == {"host": "127.0.0.1", "port": 8123, "request_timeout_s": 10.0}
