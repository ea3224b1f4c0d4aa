"""The monitor's windows without Ray: drift over champion traffic, live quality per version, the gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raymlops.config import MonitoringConfig
from raymlops.monitoring.profiles import build_reference_profile
from raymlops.monitoring.windows import MonitorState

CFG = MonitoringConfig(window_rows=400, min_window_rows=200, quality_window=300)


def _profile():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"distance": rng.gamma(2, 500, 20_000), "origin": rng.choice(["EWR", "JFK", "LGA"], 20_000)})
    return build_reference_profile(frame, ["distance"], ["origin"])


def _samples(rng, n, version="1", alias="champion", shift=0.0, start=0):
    out = []
    for i in range(n):
        record = {"distance": float(rng.gamma(2, 500)) + shift, "origin": str(rng.choice(["EWR", "JFK", "LGA"]))}
        out.append({"request_id": f"{start + i:032x}", "scores": [float(rng.random())], "version": version,
                    "alias": alias, "time": 0.0, "latency_s": 0.01, "records": [record]})
    return out


def test_drift_waits_for_a_full_enough_window_then_finds_the_shift():
    state = MonitorState(CFG, "classification")
    state.set_reference("1", _profile())
    rng = np.random.default_rng(1)
    state.add(_samples(rng, 150), replica="r1")
    assert state.drift() is None  # 150 < min_window_rows
    state.add(_samples(rng, 250, start=150), replica="r1")
    assert state.drift().drifted == []
    state.add(_samples(rng, 400, shift=800, start=400), replica="r1")
    assert state.drift().drifted == ["distance"]


def test_challenger_traffic_does_not_count_toward_drift_but_counts_as_requests():
    state = MonitorState(CFG, "classification")
    state.set_reference("1", _profile())
    state.add(_samples(np.random.default_rng(2), 300, version="2", alias="challenger"))
    assert len(state.rows) == 0 and state.summary()["requests"] == {"2/challenger": 300}


def test_live_quality_per_version_from_joined_labels():
    state = MonitorState(CFG, "classification")
    rng = np.random.default_rng(3)
    samples = _samples(rng, 200)
    state.add(samples)
    # Labels drawn with P(1) = score: a calibrated model's outcomes, so the AUC is neither 0.5 nor 1 by construction
    truth = [float(rng.random() < s["scores"][0]) for s in samples]
    labels = [{"request_id": s["request_id"], "index": 0, "label": t} for s, t in zip(samples, truth)]
    labelled, unknown = state.join(labels)
    metrics, n = state.live_quality("1")
    assert len(labelled) == 200 and unknown == [] and n == 200
    from scipy.stats import rankdata

    y_true, p = np.asarray(truth), np.asarray([s["scores"][0] for s in samples])
    ranks, pos = rankdata(p), int(y_true.sum())
    expected_auc = (ranks[y_true == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y_true) - pos))
    expected_log_loss = -np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
    assert 0.55 < expected_auc < 0.95 and metrics["auc"] == pytest.approx(expected_auc, abs=1e-9)
    assert metrics["log_loss"] == pytest.approx(expected_log_loss, rel=1e-6)
    assert state.live_quality("9") == (None, 0)
    y, scores, at = state.answers("1")  # the loop's comparisons resample these
    order = np.argsort(p)
    assert len(y) == len(scores) == len(at) == 200
    assert np.array_equal(y[np.argsort(scores)], y_true[order]) and np.allclose(np.sort(scores), p[order])
    assert [len(a) for a in state.answers("9")] == [0, 0, 0]


def test_the_gap_is_what_replicas_report_lost_and_survives_reordering():
    state = MonitorState(CFG, "classification")
    rng = np.random.default_rng(4)
    state.add(_samples(rng, 10), replica="a", lost=0)
    state.add(_samples(rng, 10, start=10), replica="a", lost=25)
    state.add(_samples(rng, 10, start=20), replica="b", lost=5)
    state.add(_samples(rng, 10, start=30), replica="a", lost=20)  # an older count arriving late
    assert state.gap == 30 and state.received == {"a": 30, "b": 10}


def test_labels_the_task_cannot_use_are_skipped_and_counted_not_fatal():
    """A label 7 on a binary model (stored before the route checked labels) must not break live quality."""
    state = MonitorState(CFG, "classification")
    rng = np.random.default_rng(4)
    samples = _samples(rng, 120)
    state.add(samples)
    labels = [{"request_id": s["request_id"], "index": 0, "label": float(rng.random() < s["scores"][0])}
              for s in samples]
    labels[5]["label"], labels[9]["label"] = 7.0, float("nan")
    state.join(labels)
    metrics, n = state.live_quality("1")
    assert n == 118 and 0.0 <= metrics["auc"] <= 1.0 and metrics["rows"] == 118
    assert state.summary()["unusable_labels"] == {"1": 2}
    y, scores, _ = state.answers("1")
    assert len(y) == 118 and set(np.unique(y)) <= {0.0, 1.0}


def test_feedback_labels_are_checked_against_the_task_at_the_route():
    from raymlops.serving.schema import FeedbackItem, feedback_labels

    items = [FeedbackItem(request_id="a" * 32, index=0, label=1.0), FeedbackItem(request_id="b" * 32, index=3, label=7.0)]
    assert feedback_labels("classification", items)[1] == (1, (
        f"items[1].label: 7 is not a class of this classification model; a label is 0 or 1 "
        f"(request_id {'b' * 32}, index 3)"))
    assert feedback_labels("classification", items[:1]) == ([1.0], None)
    assert feedback_labels("regression", items) == ([1.0, 7.0], None)
    text = [FeedbackItem(request_id="c" * 32, label="yes")]
    assert "'yes' is not a class of this classification model; a label is 0 or 1" in feedback_labels(
        "classification", text)[1][1]  # a model labelled 0/1 knows no names
    assert "a label is a number" in feedback_labels("regression", text)[1][1]


def test_a_model_with_named_classes_answers_and_takes_feedback_by_name():
    """A binary target of names (yes/no): the response names the predicted class and gives each name's
    probability; feedback takes a name (or its index) and the monitor keeps the index."""
    from raymlops.serving.schema import FeedbackItem, feedback_labels, predictions_for

    answer = predictions_for("classification", [0.8, 0.3], ["no", "yes"])
    assert [(a.label, a.class_name) for a in answer] == [(1, "yes"), (0, "no")]
    assert answer[0].probabilities == pytest.approx({"no": 0.2, "yes": 0.8})
    assert predictions_for("classification", [0.8])[0].class_name is None  # labels 0/1: no names
    items = [FeedbackItem(request_id="a" * 32, label="yes"), FeedbackItem(request_id="b" * 32, label="no"),
             FeedbackItem(request_id="c" * 32, label=1.0)]
    assert feedback_labels("classification", items, ["no", "yes"]) == ([1.0, 0.0, 1.0], None)
    bad = [*items, FeedbackItem(request_id="d" * 32, index=2, label="maybe")]
    assert feedback_labels("classification", bad, ["no", "yes"])[1] == (3, (
        f"items[3].label: 'maybe' is not a class of this classification model; a label is a class name, one of "
        f"['no', 'yes'], or its index, 0 to 1 (request_id {'d' * 32}, index 2)"))
    assert feedback_labels("multiclass", [FeedbackItem(request_id="a" * 32, label="late")],
                           ["on_time", "late", "cancelled"]) == ([1.0], None)


def test_multiclass_live_quality_and_prediction_drift_from_class_probabilities():
    """A multiclass model's answers are rows of class probabilities: live quality is computed from them
    and class-index labels, prediction drift watches which class is predicted, and a label that is no
    class index is skipped and counted."""
    from raymlops.monitoring.drift import prediction_values, score_profile
    from raymlops.serving.schema import FeedbackItem, feedback_labels, predictions_for

    rng = np.random.default_rng(7)
    state = MonitorState(CFG, "multiclass")
    proba = rng.dirichlet([1, 1, 1], size=300)
    samples = [{"request_id": f"{i:032x}", "scores": [proba[i].tolist()], "version": "1", "alias": "champion",
                "time": 0.0, "latency_s": 0.01, "records": []} for i in range(300)]
    state.add(samples)
    assert list(state.scores)[:5] == proba.argmax(axis=1)[:5].astype(float).tolist()
    truth = proba.argmax(axis=1)
    labels = [{"request_id": s["request_id"], "index": 0, "label": float(truth[i] if i % 10 else 7)}
              for i, s in enumerate(samples)]
    state.join(labels)
    metrics, n = state.live_quality("1")
    assert n == 270 and state.unusable_labels["1"] == 30  # label 7 is no class of 3
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and 0.95 < metrics["auc"] < 1.0
    reference = score_profile(proba)
    assert prediction_values(proba).tolist() == truth.astype(float).tolist()
    state.set_reference("1", _profile(), reference)
    assert state.prediction_drift() is not None and not state.prediction_drift().drifted

    answer = predictions_for("multiclass", [[0.2, 0.7, 0.1]], ["on_time", "late", "cancelled"])[0]
    assert (answer.label, answer.class_name, answer.score) == (1, "late", 0.7)
    assert answer.probabilities == {"on_time": 0.2, "late": 0.7, "cancelled": 0.1}
    items = [FeedbackItem(request_id="a" * 32, label=2.0), FeedbackItem(request_id="b" * 32, label=3.0)]
    index, why = feedback_labels("multiclass", items, ["on_time", "late", "cancelled"])[1]
    assert index == 1 and "or its index, 0 to 2" in why
    assert feedback_labels("multiclass", items[:1], ["on_time", "late", "cancelled"]) == ([2.0], None)
