"""The model contract without Ray: family configs, parameters, and packages of every family (a model
fitted here with the library itself, saved in its native format, verified, loaded and scored)."""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from raymlops.config import FeaturesConfig, LightGBMModelConfig, ModelConfig, XGBoostModelConfig, parse_config
from raymlops.data.features import fit_features, fit_partial
from raymlops.errors import ConfigError, ModelPackageError
from raymlops.model import get_family
from raymlops.model.boosting import RoundState
from raymlops.model.contract import ModelSpec, feature_matrix
from raymlops.model.lgbm import lightgbm_params, root_row_count
from raymlops.model.xgb import dmatrix, xgboost_params
from raymlops.model.packaging import MANIFEST, load_package, write_package
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER, smoke_dict

FEATURES = FeaturesConfig.model_validate({
    "target": "delayed", "numeric": [{"column": "distance"}, {"column": "sched_dep_time"}],
    "categorical": [{"column": "carrier"}, {"column": "origin"}]})


@pytest.fixture(scope="module")
def fitted_frame():
    df = pd.read_csv(SMOKE_FLIGHTS)
    df["delayed"] = df["delayed"].astype(int)
    fitted = fit_features([fit_partial(df, FEATURES)], FEATURES)
    return fitted, df, fitted.transform_frame(df)


def _config(model: dict) -> dict:
    data = smoke_dict()
    data["model"] = model
    return data


def test_existing_configs_mean_the_mlp_and_families_have_their_own_keys():
    assert parse_config(smoke_dict(), source="x.yaml").model.family == "mlp"
    lgbm = parse_config(_config({"family": "lightgbm", "num_leaves": 15}), source="x.yaml").model
    assert isinstance(lgbm, LightGBMModelConfig) and lgbm.num_leaves == 15 and lgbm.trusted_builders() == ()
    xg = parse_config(_config({"family": "xgboost", "max_depth": 4}), source="x.yaml").model
    assert isinstance(xg, XGBoostModelConfig) and xg.max_depth == 4


def test_family_errors_name_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"model.family: unknown model family 'catboost'; choose one of mlp, lightgbm, xgboost"):
        parse_config(_config({"family": "catboost"}), source="x.yaml")
    with pytest.raises(ConfigError) as err:  # an MLP key given to LightGBM
        parse_config(_config({"family": "lightgbm", "hidden_sizes": [8]}), source="x.yaml")
    assert "model.hidden_sizes: not a key of model.family lightgbm; it is a key of mlp (lightgbm keys: " in str(err.value)
    with pytest.raises(ConfigError, match=r"model\.num_leafs: not a key of model\.family lightgbm; did you mean "
                                          r"'num_leaves'\? \(lightgbm keys: bagging_fraction, "):
        parse_config(_config({"family": "lightgbm", "num_leafs": 15}), source="x.yaml")
    data = _config({"family": "xgboost"})
    data["tuning"] = {"enabled": True, "search_space": {"num_leaves": {"type": "int", "low": 8, "high": 64}}}
    with pytest.raises(ConfigError, match=r"tuning\.search_space\.num_leaves: not a tunable parameter of model\.family "
                                          r"xgboost \(it is a lightgbm parameter\)"):
        parse_config(data, source="x.yaml")


def test_a_family_whose_library_is_missing_is_refused_at_load(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a))
    with pytest.raises(ConfigError, match="model.family: family xgboost needs the 'xgboost' package.*pip install xgboost"):
        parse_config(_config({"family": "xgboost"}), source="x.yaml")


def test_empty_search_space_means_the_familys_default():
    data = _config({"family": "lightgbm"})
    data["tuning"] = {"enabled": True}
    cfg = parse_config(data, source="x.yaml")
    assert set(cfg.search_space()) == {"learning_rate", "num_leaves", "min_child_samples", "feature_fraction"}
    assert set(cfg.search_space()) <= set(get_family("lightgbm").tunable)


def test_parameters_follow_the_task_and_workers():
    spec = ModelSpec("classification", ["a"], ["b"], [4])
    model = LightGBMModelConfig(family="lightgbm").model_dump()
    one = lightgbm_params(spec, model, {"cpus_per_worker": 1}, world_size=1)
    two = lightgbm_params(spec, model, {"cpus_per_worker": 1}, world_size=2)
    assert one["objective"] == "binary" and "tree_learner" not in one
    assert two["tree_learner"] == "data_parallel" and two["pre_partition"] is True
    reg = xgboost_params(ModelSpec("regression", ["a"], [], []), XGBoostModelConfig(family="xgboost").model_dump(),
                         {"use_gpu": True})
    assert reg["objective"] == "reg:squarederror" and reg["device"] == "cuda" and reg["tree_method"] == "hist"


def test_early_stopping_state_survives_a_checkpoint():
    state = RoundState()
    losses = [0.5, 0.4, 0.41, 0.39, 0.395, 0.396, 0.397]
    stops = [state.observe(i, loss, patience=3) for i, loss in enumerate(losses)]
    assert stops == [False] * 6 + [True] and state.best_iteration == 3
    resumed = RoundState.from_json(RoundState(**{**json.loads(RoundState().to_json()), "rounds": 4,
                                                 "best_iteration": 3, "best_val_loss": 0.39}).to_json())
    assert [resumed.observe(i, loss, 3) for i, loss in enumerate(losses[4:], start=4)] == [False, False, True]


def _is_pickle(data: bytes) -> bool:
    try:
        list(pickletools.genops(data))
        return data[:1] == b"\x80"
    except Exception:
        return False


def _fit_and_package(family: str, fitted, df, features, tmp_path):
    spec = ModelSpec.from_features(fitted, "classification")
    x, y = feature_matrix(features, spec), df["delayed"].to_numpy(np.float32)
    if family == "lightgbm":
        cfg = LightGBMModelConfig(family="lightgbm", num_boost_round=20)
        booster = lgb.train(lightgbm_params(spec, cfg.model_dump(), {}, 1),
                            lgb.Dataset(x, y, categorical_feature=list(range(len(spec.numeric), len(spec.columns)))),
                            num_boost_round=20)
        assert root_row_count(booster) == len(x)
        model_file = tmp_path / "best.txt"
        booster.save_model(str(model_file))
        expected = booster.predict(x)
    else:
        cfg = XGBoostModelConfig(family="xgboost", num_boost_round=20)
        booster = xgb.train(xgboost_params(spec, cfg.model_dump(), {}), dmatrix(x, spec, y), num_boost_round=20)
        model_file = tmp_path / "best.ubj"
        booster.save_model(str(model_file))
        expected = booster.predict(dmatrix(x, spec))
    name = get_family(family).model_file
    path = write_package(tmp_path / "pkg" / "model", model_files={name: model_file}, fitted=fitted, spec=spec,
                         model_config=cfg, schema={}, profile={"features": {}}, lineage={})
    return path, name, expected


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_tree_package_round_trip_no_pickle_and_tampering_refused(family, fitted_frame, tmp_path):
    fitted, df, features = fitted_frame
    path, name, expected = _fit_and_package(family, fitted, df, features, tmp_path)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["family"] == family and name in manifest["files"]
    assert not any(_is_pickle(f.read_bytes()) for f in path.iterdir()), "a package file is a pickle"
    loaded = load_package(path)
    assert loaded.family == family
    np.testing.assert_allclose(loaded.predict_frame(df), expected, rtol=0, atol=1e-6)
    single = loaded.predict_frame(df.iloc[[11]])
    assert abs(single[0] - expected[11]) < 1e-6, "one row alone scores as in a batch"
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / name).write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=f"{name} does not match the checksum"):
        load_package(path)


def test_mlp_regression_predictions_are_mapped_back_to_target_units():
    import torch

    from raymlops.model.mlp import MLPPredictor, build_model

    spec = ModelSpec("regression", ["a"], [], [], target_mean=1000.0, target_std=300.0)
    module = build_model(spec, ModelConfig(hidden_sizes=[4])).eval()
    raw = module(torch.tensor([[0.5]]), torch.zeros((1, 0), dtype=torch.long)).item()
    got = MLPPredictor(module, spec).predict(pd.DataFrame({"a": [0.5]}))[0]
    assert got == pytest.approx(raw * 300.0 + 1000.0, rel=1e-6)


@pytest.mark.parametrize("family", ["mlp", "lightgbm", "xgboost"])
def test_fit_frame_fits_the_pipelines_family_in_process_and_scores_new_rows(family):
    """What the replay's scheduled baselines use: no Ray, the config's features and family."""
    from sklearn.metrics import roc_auc_score

    from raymlops.model.local_fit import fit_frame, window

    data = smoke_dict()
    if family != "mlp":
        data["model"] = {"task": "classification", "family": family}
    cfg = parse_config(data, source="x.yaml")
    weather = pd.read_csv(SMOKE_WEATHER).drop_duplicates(["origin", "time_hour"])
    flights = pd.read_csv(SMOKE_FLIGHTS).merge(weather, on=["origin", "time_hour"], how="left")  # as the join does
    times = pd.to_datetime(flights["time_hour"], utc=True)
    history, april = flights[times < "2013-04-01"], flights[times >= "2013-04-01"]
    model = fit_frame(cfg, history, time_column="time_hour", validation_days=7)
    assert model.spec.columns and 0 < model.train_rows < len(history)  # the newest 7 days held out
    scores = model.predict_frame(april)
    assert scores.shape == (len(april),) and np.all((scores >= 0) & (scores <= 1))
    assert roc_auc_score(april["delayed"], scores) > 0.55
    assert len(window(history, "time_hour", 30)) < len(history) == len(window(history, "time_hour", None))


MULTICLASS = ["on_time", "late", "very_late", "cancelled"]


def _multiclass_config(family: str):
    import yaml

    from tests.helpers import REPO

    path = REPO / "configs" / "smoke-multiclass.yaml"
    data = yaml.safe_load(path.read_text())
    data["model"] = {"task": "multiclass", "family": family}
    return parse_config(data, source=str(path))


@pytest.mark.parametrize("family", ["mlp", "lightgbm", "xgboost"])
def test_every_family_fits_a_multiclass_target_and_packages_one_probability_per_class(family, tmp_path):
    """Softmax MLP, LightGBM multiclass, XGBoost multi:softprob: rows of class probabilities, in
    features.target_classes order, better than the class frequencies alone, and a package of the model
    that scores exactly as the model did."""
    from raymlops.model.local_fit import fit_frame
    from raymlops.model.metrics import multiclass_metrics
    from tests.helpers import REPO

    cfg = _multiclass_config(family)
    weather = pd.read_csv(SMOKE_WEATHER).drop_duplicates(["origin", "time_hour"])
    flights = pd.read_csv(REPO / "examples" / "smoke" / "flights_classes.csv").merge(
        weather, on=["origin", "time_hour"], how="left")
    times = pd.to_datetime(flights["time_hour"], utc=True)
    history, april = flights[times < "2013-04-01"], flights[times >= "2013-04-01"]
    model = fit_frame(cfg, history, time_column="time_hour", validation_days=7)
    assert model.spec.classes == MULTICLASS and model.spec.outputs == 4
    proba = model.predict_frame(april)
    assert proba.shape == (len(april), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    y = model.features.encode_target(april["delay_class"])
    got = multiclass_metrics(y, proba)
    prior = np.bincount(model.features.encode_target(history["delay_class"]), minlength=4) / len(history)
    assert got["auc"] > 0.55, got
    assert got["log_loss"] < multiclass_metrics(y, np.tile(prior, (len(y), 1)))["log_loss"] + 0.1, got

    name = get_family(family).model_file
    if family == "lightgbm":
        model.predictor.booster.save_model(str(tmp_path / name))
    elif family == "xgboost":
        model.predictor.booster.save_model(str(tmp_path / name))
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.predictor.module.state_dict().items()}, str(tmp_path / name))
    path = write_package(tmp_path / "pkg" / "model", model_files={name: tmp_path / name}, fitted=model.features,
                         spec=model.spec, model_config=cfg.model, schema={}, profile={"features": {}}, lineage={})
    np.testing.assert_allclose(load_package(path).predict_frame(april), proba, rtol=0, atol=1e-5)


def test_multiclass_config_names_its_classes_and_labels_outside_them_are_refused():
    from raymlops.data.features import FittedFeatures
    from raymlops.errors import FeatureError

    data = _multiclass_config("lightgbm").model_dump(mode="json", exclude={"base_dir"})
    data["features"]["target_classes"] = []
    assert parse_config(data, source="x.yaml").features.target_classes == []  # fitted from the data instead
    data["features"]["target_classes"] = ["a", "b"]
    with pytest.raises(ConfigError, match=r"features.target_classes: a multiclass target needs at least 3"):
        parse_config(data, source="x.yaml")
    data["features"]["target_classes"] = ["a", "b", "a"]
    with pytest.raises(ConfigError, match=r"class names repeat"):
        parse_config(data, source="x.yaml")
    data["features"]["target_classes"] = MULTICLASS
    data["model"]["task"] = "classification"
    with pytest.raises(ConfigError, match=r"a classification model has two classes \(negative, then positive\)"):
        parse_config(data, source="x.yaml")
    data["model"]["task"] = "regression"
    with pytest.raises(ConfigError, match=r"a regression model has no target classes"):
        parse_config(data, source="x.yaml")
    data["model"]["task"] = "multiclass"
    data["evaluation"]["gates"] = ["pr_auc >= 0.3"]
    with pytest.raises(ConfigError, match=r"a multiclass model does not report; .*macro_f1"):
        parse_config(data, source="x.yaml")

    fitted = FittedFeatures(target="c", derived=[], numeric=[], categorical=[], target_classes=MULTICLASS)
    assert fitted.encode_target(pd.Series(["late", "on_time", "cancelled"])).tolist() == [1, 0, 3]
    with pytest.raises(FeatureError, match=r"value 'early' \(row 1 of this batch, 1 such rows\) is none of"):
        fitted.encode_target(pd.Series(["late", "early"]))
    assert FittedFeatures.from_dict(fitted.to_dict()).target_classes == MULTICLASS


def test_a_refit_keeps_its_last_round_and_never_stops_early():
    """training.refit trains on its validation rows too, so the best validation round means nothing there:
    with fixed rounds every round is the best and patience never ends it."""
    from raymlops.model.boosting import RoundState

    gated, refit = RoundState(), RoundState()
    losses = [0.5, 0.4, 0.45, 0.46, 0.47]
    stops = [gated.observe(i, v, patience=2) for i, v in enumerate(losses)]
    assert stops == [False, False, False, True, True] and gated.best_iteration == 1
    assert not any(refit.observe(i, v, patience=2, fixed=True) for i, v in enumerate(losses))
    assert refit.best_iteration == 4 and refit.rounds == 5


def test_a_refit_trains_for_what_early_stopping_kept():
    from raymlops.training.trainer import TrainingResult, refit_overrides

    def result(final, history):
        return TrainingResult(run_name="r", checkpoint_dir=Path("."), model_files={}, spec=None,
                              final_metrics=final, history=history)

    trees = result({"round": 87, "best_round": 37, "val_loss": 0.5}, [])
    assert refit_overrides(trees) == {"num_boost_round": 37}
    assert refit_overrides(trees, {"learning_rate": 0.1}) == {"learning_rate": 0.1, "num_boost_round": 37}
    epochs = [{"epoch": 0, "val_loss": 0.6}, {"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.55}]
    assert refit_overrides(result(epochs[-1], epochs)) == {"epochs": 2}
