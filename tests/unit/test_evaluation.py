from __future__ import annotations

import math

import numpy as np
import pytest

from raymlops.errors import ConfigError
from raymlops.model import metrics
from raymlops.training import evaluation as ev


def test_classification_metrics_on_known_cases():
    y = np.array([0, 0, 1, 1])
    perfect = metrics.classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0 and perfect["f1"] == 1.0
    inverted = metrics.classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["auc"] == 0.0 and inverted["accuracy"] == 0.0
    constant = metrics.classification_metrics(y, np.full(4, 0.5))
    assert constant["auc"] == 0.5 and constant["log_loss"] == pytest.approx(math.log(2))
    assert math.isnan(metrics.classification_metrics(np.ones(3), np.full(3, 0.7))["auc"])


def test_calibration_error_is_zero_when_rates_match():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert metrics.calibration_error(y, p) < 0.01
    assert metrics.calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.1


def test_regression_metrics():
    m = metrics.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["mae"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(math.sqrt(4 / 3))


def test_slices_skip_small_groups():
    y = np.array([0, 1] * 50)
    p = np.where(y == 1, 0.9, 0.1)
    groups = np.array(["AA"] * 80 + ["ZZ"] * 20)
    out = metrics.slice_metrics("classification", y, p, groups, min_rows=30)
    assert list(out) == ["AA"] and out["AA"]["auc"] == 1.0


def test_absolute_and_champion_relative_gates():
    metrics = {"auc": 0.71, "log_loss": 0.5}
    results = ev.evaluate_gates(["auc >= 0.70", "auc >= champion - 0.005", "log_loss <= champion + 0.01"],
                                metrics, {"auc": 0.72, "log_loss": 0.495})
    assert [r.passed for r in results] == [True, False, True]
    assert "champion 0.7200 - 0.005 = 0.7150" in results[1].detail
    assert ev.failed(results)[0].gate == "auc >= champion - 0.005"
    first = ev.evaluate_gates(["auc >= champion - 0.005"], metrics, None)
    assert first[0].passed and "no champion" in first[0].detail


def test_nan_metric_fails_its_gate_and_bad_gates_are_config_errors():
    assert not ev.evaluate_gates(["auc >= 0.5"], {"auc": float("nan")})[0].passed
    with pytest.raises(ConfigError, match="cannot read gate"):
        ev.evaluate_gates(["auc is great"], {"auc": 0.9})
    with pytest.raises(ConfigError, match="names metric 'aucc'"):
        ev.evaluate_gates(["aucc >= 0.5"], {"auc": 0.9})


def test_multiclass_metrics_of_class_probabilities():
    from raymlops.config import check_gate
    from raymlops.model.metrics import compute_metrics

    y = np.array([0, 1, 2, 2, 1, 0])
    perfect = np.eye(3)[y] * 0.97 + 0.01
    m = compute_metrics("multiclass", y, perfect)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["auc"] == 1.0 and m["rows"] == 6
    assert m["log_loss"] == pytest.approx(-np.log(0.98), rel=1e-6)
    uniform = compute_metrics("multiclass", y, np.full((6, 3), 1 / 3))
    assert uniform["log_loss"] == pytest.approx(np.log(3)) and uniform["auc"] == 0.5
    one_class = compute_metrics("multiclass", np.zeros(4, int), np.full((4, 3), 1 / 3))
    assert np.isnan(one_class["auc"]) and one_class["accuracy"] == 1.0
    check_gate("macro_f1 >= 0.3", "multiclass")
    with pytest.raises(ValueError, match="class probabilities"):
        compute_metrics("multiclass", y, perfect[:, 0])


def test_binary_auc_equals_sklearn_with_ties_and_says_nan_for_one_class():
    import math

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from raymlops.model.metrics import binary_auc

    rng = np.random.default_rng(2)
    for n in (2, 17, 403, 5000):
        y = (rng.random(n) < 0.3).astype(np.float32)
        y[:2] = [0, 1]
        for score in (rng.random(n), np.round(rng.random(n), 1), np.zeros(n)):  # continuous, tied, all tied
            assert binary_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert math.isnan(binary_auc(np.ones(5), rng.random(5)))
