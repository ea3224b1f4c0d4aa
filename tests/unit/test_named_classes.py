"""Classification targets whose classes are names (yes/no), booleans or integers other than 0/1, without
Ray: the class names are fitted with the features, the model learns their indices, the package keeps
them, batch scores name the predicted class, and labelled traffic turns back into names for a retrain."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raymlops.config import FeaturesConfig, parse_config
from raymlops.data.features import class_names, fit_features, fit_partial
from raymlops.errors import DataValidationError, FeatureError
from raymlops.model.batch import PREDICTED_CLASS, PREDICTION, with_predictions
from raymlops.loop.retraining import labelled_traffic
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER, smoke_dict


def test_class_names_are_ordered_as_label_encoders_order_them():
    assert class_names({"yes": 5, "no": 9}, "classification", "churn") == ["no", "yes"]  # "yes" is positive
    assert class_names({"True": 1, "False": 2}, "classification", "churn") == ["False", "True"]
    assert class_names({"10": 1, "2": 2}, "classification", "grade") == ["2", "10"]  # numerically
    assert class_names({"1": 4, "0": 3}, "classification", "delayed") == []  # 0/1 keep their numbers
    assert class_names({"0": 1, "1": 1, "2": 1}, "multiclass", "k") == ["0", "1", "2"]
    with pytest.raises(FeatureError, match=r"target 'churn' holds 3 classes in the training split \('a', 'b', 'c'\); "
                                           r"model.task classification predicts two: set model.task: multiclass"):
        class_names({"a": 1, "b": 1, "c": 1}, "classification", "churn")
    with pytest.raises(FeatureError, match=r"target 'churn' holds a single class in the training split \('no'\)"):
        class_names({"no": 10}, "classification", "churn")


def test_the_fit_learns_the_names_from_every_batch_and_the_config_can_fix_their_order():
    cfg = FeaturesConfig.model_validate({"target": "churn", "numeric": [{"column": "x"}]})
    batches = [pd.DataFrame({"x": [1.0, 2.0], "churn": ["no", "no"]}), pd.DataFrame({"x": [3.0], "churn": ["yes"]})]
    fitted = fit_features([fit_partial(b, cfg, "classification") for b in batches], cfg, "classification")
    assert fitted.target_classes == ["no", "yes"]
    assert fitted.transform_frame(batches[1], keep=["churn"])["churn"].tolist() == [1]
    assert fit_features([fit_partial(b, cfg) for b in batches], cfg).target_classes == []  # regression: no names
    fixed = cfg.model_copy(update={"target_classes": ["yes", "no"]})  # positive first, as the user chose
    assert fit_features([fit_partial(batches[0], fixed, "classification")], fixed, "classification"
                        ).encode_target(pd.Series(["yes", "no"])).tolist() == [0, 1]
    flags = pd.DataFrame({"x": [1.0, 2.0, 3.0], "churn": [True, False, True]})
    booleans = fit_features([fit_partial(flags, cfg, "classification")], cfg, "classification")
    assert booleans.target_classes == ["False", "True"]
    assert booleans.encode_target(flags["churn"]).tolist() == [1, 0, 1]


def test_a_binary_model_of_named_classes_fits_scores_and_packages_like_a_0_1_model(tmp_path):
    """The same flights, the label as "on time"/"late": the model's scores are the probability of "late"
    (the second name), as good as the 0/1 model's, and its package keeps the names."""
    from sklearn.metrics import roc_auc_score

    from raymlops.model import get_family
    from raymlops.model.local_fit import fit_frame
    from raymlops.model.packaging import load_package, write_package

    data = smoke_dict()
    data["model"] = {"task": "classification", "family": "lightgbm"}
    data["validation"]["columns"]["delayed"] = {"type": "string", "nullable": False, "allowed": ["late", "on time"]}
    cfg = parse_config(data, source="x.yaml")
    weather = pd.read_csv(SMOKE_WEATHER).drop_duplicates(["origin", "time_hour"])
    flights = pd.read_csv(SMOKE_FLIGHTS).merge(weather, on=["origin", "time_hour"], how="left")
    numbers = flights["delayed"].to_numpy()
    flights["delayed"] = np.where(numbers == 1, "late", "on time")
    times = pd.to_datetime(flights["time_hour"], utc=True)
    history, april = flights[times < "2013-04-01"], flights[times >= "2013-04-01"]
    model = fit_frame(cfg, history, time_column="time_hour", validation_days=7)
    assert model.features.target_classes == ["late", "on time"] and model.spec.classes == ["late", "on time"]
    assert model.spec.outputs == 1
    scores = model.predict_frame(april)
    assert scores.shape == (len(april),)
    # "on time" is the positive (second) name: its probability is high where flights were not delayed.
    assert roc_auc_score(1 - numbers[(times >= "2013-04-01").to_numpy()], scores) > 0.55

    name = get_family("lightgbm").model_file
    model.predictor.booster.save_model(str(tmp_path / name))
    path = write_package(tmp_path / "pkg" / "model", model_files={name: tmp_path / name},
                         fitted=model.features, spec=model.spec, model_config=cfg.model, schema={},
                         profile={"features": {}}, lineage={})
    loaded = load_package(path)
    assert loaded.spec.classes == ["late", "on time"] and loaded.features.target_classes == ["late", "on time"]
    scored = with_predictions(april.head(5).reset_index(drop=True), loaded.predict_frame(april.head(5)),
                              loaded.spec.classes)
    assert scored[PREDICTED_CLASS].tolist() == np.where(scored[PREDICTION] >= 0.5, "on time", "late").tolist()


def test_labelled_traffic_of_named_classes_carries_the_names_again():
    def line(rid: str, label: float) -> str:
        return json.dumps({"request_id": rid, "index": 0, "label": label, "record": {"x": 1.0}, "predicted_at": 0})

    frame = labelled_traffic([line("a", 1.0), line("b", 0.0), line("c", 7.0)], {"x": {"type": "float"}}, "churn",
                             "classification", classes=["no", "yes"])
    assert frame["churn"].tolist() == ["yes", "no"] and frame["x"].tolist() == [1.0, 1.0]  # 7 is no class: dropped


def test_batch_scores_take_the_names_http_gives_them_and_never_overwrite_an_input_column():
    """Issue 15, item 7: batch output called the score `prediction` where /v1/predict says `score`."""
    frame = pd.DataFrame({"x": [1, 2, 3]})
    binary = with_predictions(frame, np.array([0.2, 0.6, 0.5]), ["no", "yes"])
    assert list(binary.columns) == ["x", "score", "class_name"] and binary["class_name"].tolist() == ["no", "yes", "yes"]
    assert list(with_predictions(frame, np.array([0.2, 0.6, 0.5]), []).columns) == ["x", "score"]
    multi = with_predictions(frame, np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]]), ["a", "b"])
    assert multi["score"].tolist() == [0.9, 0.7, 0.5] and multi["class_name"].tolist() == ["b", "a", "a"]
    assert list(multi.columns) == ["x", "score", "class_name", "probability_a", "probability_b"]
    with pytest.raises(DataValidationError, match="already has a column 'score'"):
        with_predictions(frame.assign(score=1.0), np.array([0.2, 0.6, 0.5]), [])


def test_slice_summary_puts_the_worst_value_first_for_either_direction_of_metric():
    from raymlops.training.stage import slice_summary

    auc = {"EWR": {"auc": 0.61}, "JFK": {"auc": 0.55}, "LGA": {"auc": 0.58}}
    assert slice_summary(auc, "auc") == "auc, worst first: JFK 0.5500, LGA 0.5800, EWR 0.6100"
    rmse = {"a": {"rmse": 1.0}, "b": {"rmse": 3.0}}
    assert slice_summary(rmse, "rmse") == "rmse, worst first: b 3.0000, a 1.0000"
    assert slice_summary({}, "auc") == "no value has enough test rows"
