from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from raymlops.config import FeaturesConfig, ModelConfig, ValidationConfig
from raymlops.data.features import fit_features, fit_partial
from raymlops.errors import ConfigError, ModelPackageError
from raymlops.model.packaging import WEIGHTS, input_schema, load_package, write_package
from raymlops.model.contract import ModelSpec
from raymlops.model.mlp import build_model, resolve_builder
from tests.helpers import SMOKE_FLIGHTS

FEATURES = FeaturesConfig.model_validate({
    "target": "delayed", "numeric": [{"column": "distance"}],
    "categorical": [{"column": "carrier"}, {"column": "origin", "encoding": "onehot"}]})


@pytest.fixture(scope="module")
def fitted_and_frame():
    df = pd.read_csv(SMOKE_FLIGHTS)
    return fit_features([fit_partial(df, FEATURES)], FEATURES), df


def tiny_builder(spec, cfg):
    return torch.nn.Bilinear(1, 1, 1)  # a Module, but not one with the documented forward


def test_spec_counts_onehot_as_numeric_and_ids_as_embeddings(fitted_and_frame):
    fitted, _ = fitted_and_frame
    spec = ModelSpec.from_features(fitted, "classification")
    assert spec.numeric[0] == "distance" and spec.numeric[1].startswith("origin=")
    assert spec.categorical == ["carrier"] and spec.cardinalities[0] == len(fitted.categorical[0].vocabulary) + 1
    model = build_model(spec, ModelConfig(hidden_sizes=[8]))
    out = model(torch.zeros(5, len(spec.numeric)), torch.zeros(5, 1, dtype=torch.long))
    assert out.shape == (5,)


def test_builder_by_import_path_and_helpful_errors():
    assert resolve_builder("tests.unit.test_models_and_packaging:tiny_builder").__name__ == "tiny_builder"
    with pytest.raises(ConfigError, match="did you mean 'mlp'"):
        resolve_builder("mpl")
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_builder("nope.module:build")


def _package(tmp_path, fitted, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec.from_features(fitted, "classification")
    model = build_model(spec, ModelConfig(hidden_sizes=[8]))
    path = write_package(tmp_path / "pkg" / "model", weights=model.state_dict(), fitted=fitted, spec=spec,
                         model_config=ModelConfig(hidden_sizes=[8]), schema={"distance": {"type": "float"}},
                         profile={"features": {}}, lineage={"raymlops.data_fingerprint": "abc"})
    return model, path


def test_package_round_trip_predicts_like_the_trained_module(tmp_path, fitted_and_frame):
    fitted, df = fitted_and_frame
    model, path = _package(tmp_path, fitted)
    loaded = load_package(path)
    feats = fitted.transform_frame(df.head(50))
    spec = loaded.spec
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(
            torch.from_numpy(np.stack([feats[c].to_numpy(np.float32) for c in spec.numeric], 1)),
            torch.from_numpy(np.stack([feats[c].to_numpy(np.int64) for c in spec.categorical], 1)))).numpy()
    # The package is scored with numpy (a replica needs no torch, tests/unit/test_mlp_numpy.py): the same
    # float32 weights and layers, so the scores agree with the module's to float32 rounding.
    np.testing.assert_allclose(loaded.predict_frame(df.head(50)), expected, rtol=1e-6, atol=0)
    assert json.loads((path / "manifest.json").read_text())["lineage"]["raymlops.data_fingerprint"] == "abc"
    assert not list(path.parent.glob(".model.*")), "no temp folder is left behind"


def test_tampered_or_truncated_files_are_refused(tmp_path, fitted_and_frame):
    fitted, _ = fitted_and_frame
    _, path = _package(tmp_path, fitted)
    weights = path / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelPackageError, match="checksum"):
        load_package(path)
    weights.write_bytes(data)
    load_package(path)
    features = json.loads((path / "features.json").read_text())
    features["numeric"][0]["mean"] += 1
    (path / "features.json").write_text(json.dumps(features))
    with pytest.raises(ModelPackageError, match="features.json does not match"):
        load_package(path)
    with pytest.raises(ModelPackageError, match="not a model package"):
        load_package(tmp_path)


def test_input_schema_lists_raw_columns_with_their_expectations(fitted_and_frame):
    fitted, _ = fitted_and_frame
    schema = input_schema(fitted, ValidationConfig.model_validate(
        {"columns": {"carrier": {"type": "string", "allowed": ["AA"], "request_bounds": True},
                     "distance": {"type": "float", "min": 0, "max": 5000, "nullable": False}}}))
    assert schema["carrier"] == {"type": "string", "nullable": True, "allowed": ["AA"]}
    assert schema["distance"] == {"type": "float", "nullable": False}  # the range bounds training data only
    assert set(schema) == {"distance", "carrier", "origin"}


def test_validation_ranges_bound_requests_only_where_the_config_asks():
    """Issue 18, item 12: with configs/flights.yaml every request dated after 2014-01-02 got a 422, and a
    temperature beyond the training range was refused instead of served and measured as drift. Types and
    nullability are the request contract; ranges only on columns with request_bounds (hour 0..23)."""
    from raymlops.config import load_config
    from types import SimpleNamespace

    from raymlops.model.inputs import record_model
    from tests.helpers import REPO

    cfg = load_config(REPO / "configs" / "flights.yaml")
    fitted = SimpleNamespace(input_columns=["hour", "time_hour", "temp", "origin", "year"])  # all input_schema reads
    record = record_model(input_schema(fitted, cfg.validation))
    served = {"hour": 7, "time_hour": "2015-06-01T07:00:00Z", "temp": 131.0, "origin": "EWR", "year": 2015}
    assert record.model_validate(served).time_hour.year == 2015
    for change, says in (({"hour": 24}, "less than or equal to 23"), ({"origin": "BOS"}, "'EWR', 'JFK' or 'LGA'"),
                         ({"temp": "hot"}, "valid number"), ({"time_hour": None}, "datetime")):
        with pytest.raises(Exception) as refused:
            record.model_validate({**served, **change})
        assert says in str(refused.value), (change, str(refused.value))
