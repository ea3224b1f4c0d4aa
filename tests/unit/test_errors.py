from __future__ import annotations

import pickle

import pytest

import raymlops
from raymlops import errors


@pytest.mark.parametrize("cls", [getattr(errors, n) for n in errors.__all__])
def test_every_error_survives_pickling(cls):
    exc = cls("something failed at file.csv row 3", extra="detail")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.details["extra"] == "detail"
    assert isinstance(back, errors.RaymlopsError)


def test_validation_error_keeps_report_path():
    exc = errors.DataValidationError("bad", report_path="/tmp/r.json")
    assert pickle.loads(pickle.dumps(exc)).report_path == "/tmp/r.json"


def test_public_api_is_pinned():
    assert sorted(raymlops.__all__) == sorted([
        "ConfigError", "DataSourceError", "DataValidationError", "FeatureError", "GateFailed",
        "ModelPackageError", "PipelineConfig", "RaymlopsError", "RegistryError", "RuntimeConnectionError",
        "ServingError", "SnapshotError", "TrainingError", "__version__", "load_config"])


def test_serving_error_keeps_status_through_pickle():
    exc = pickle.loads(pickle.dumps(errors.ServingError("shed", status=503)))
    assert exc.status == 503 and str(exc) == "shed"
