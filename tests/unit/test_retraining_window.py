"""What a retrain learns from: labelled traffic, the champion's rows in the window, and the derived config."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raymlops.config import TimeSplitConfig, load_config
from raymlops.loop.retraining import labelled_traffic, retraining_config, retraining_window
from tests.helpers import smoke_config

SCHEMA = {"distance": {"type": "float"}, "carrier": {"type": "string"}, "time_hour": {"type": "timestamp"}}


def _line(rid: str, index: int, label: float, record: dict | None, at: float = 1.37e9) -> str:
    item = {"request_id": rid, "index": index, "label": label, "score": 0.4, "version": "1", "alias": "champion",
            "predicted_at": at}
    if record is not None:
        item["record"] = record
    return json.dumps(item)


def test_labelled_traffic_is_typed_keeps_the_latest_label_and_skips_rows_without_inputs():
    rec = {"distance": 500.0, "carrier": "UA", "time_hour": "2013-05-01T10:00:00+00:00"}
    lines = [_line("a", 0, 0, rec), _line("a", 0, 1, rec), _line("b", 0, 1, None), "",
             _line("c", 1, 0, {**rec, "distance": 900})]
    frame = labelled_traffic(lines, SCHEMA, "delayed", "classification")
    assert list(frame.columns) == ["distance", "carrier", "time_hour", "delayed"]
    assert frame["delayed"].tolist() == [1, 0] and frame["delayed"].dtype == "int64"
    assert str(frame["time_hour"].dtype).endswith(", UTC]") and frame["distance"].tolist() == [500.0, 900.0]


def test_time_column_that_is_not_an_input_comes_from_the_prediction_time():
    lines = [_line("a", 0, 1.5, {"distance": 1.0, "carrier": "UA"}, at=1_367_366_400)]
    frame = labelled_traffic(lines, {"distance": {"type": "float"}, "carrier": {"type": "string"}}, "y",
                             "regression", time_column="ts")
    assert frame["ts"].iloc[0] == pd.Timestamp("2013-05-01", tz="UTC") and frame["y"].iloc[0] == 1.5


def test_window_keeps_the_latest_days_of_history_and_traffic_together():
    t = pd.to_datetime(["2013-01-05", "2013-03-10", "2013-04-20"], utc=True)
    history = pd.DataFrame({"distance": [1.0, 2.0, 3.0], "time_hour": t, "delayed": [0, 1, 0], "extra": [9, 9, 9]})
    traffic = pd.DataFrame({"distance": [4.0], "time_hour": pd.to_datetime(["2013-05-31"], utc=True),
                            "delayed": [1]})
    table, end = retraining_window(history, traffic, "time_hour", days=90)
    assert end == pd.Timestamp("2013-05-31", tz="UTC")
    assert table["distance"].tolist() == [2.0, 3.0, 4.0] and "extra" not in table.columns
    everything, end_all = retraining_window(history, traffic, "time_hour", days=None)
    assert len(everything) == 4 and end_all == end
    untimed, no_end = retraining_window(history, traffic, None, days=90)
    assert len(untimed) == 4 and no_end is None
    # On a replay's clock the snapshot may hold rows the stream has not reached: they are not known yet.
    known, end_known = retraining_window(history, traffic, "time_hour", days=None,
                                         until=pd.Timestamp("2013-04-01", tz="UTC"))
    assert known["distance"].tolist() == [1.0, 2.0] and end_known == pd.Timestamp("2013-03-10", tz="UTC")
    nothing, no_end = retraining_window(history, traffic, "time_hour", days=None,
                                        until=pd.Timestamp("2012-12-31", tz="UTC"))
    assert len(nothing) == 0 and no_end is None


def test_derived_config_reads_the_window_splits_relative_to_its_end_and_uses_retrain_resources(tmp_path):
    cfg = load_config(smoke_config(tmp_path, retraining={"enabled": True, "test_days": 10, "validation_days": 5,
                                                         "min_rows": 200, "num_workers": 1, "epochs": 2}))
    end = pd.Timestamp("2013-07-31T23:00:00", tz="UTC")
    derived = retraining_config(cfg, tmp_path / "w.parquet", end)
    (source,) = derived.data.sources
    assert source.type == "parquet" and source.path == str((tmp_path / "w.parquet").resolve())
    assert derived.data.joins == [] and derived.data.cleaning.drop_columns == []
    split = derived.data.split
    assert isinstance(split, TimeSplitConfig) and split.column == "time_hour"
    assert pd.Timestamp(split.test_start) == end - pd.Timedelta(days=10)
    assert pd.Timestamp(split.validation_start) == end - pd.Timedelta(days=15)
    assert derived.validation.row_count.min == 200 and not derived.validation.require_declared_columns
    assert derived.validation.columns == cfg.validation.columns  # the same expectations as always
    assert derived.training.epochs == 2 and derived.training.num_workers == 1
    assert derived.evaluation == cfg.evaluation and derived.model_name == cfg.model_name
    assert not derived.training.refit  # off unless retraining.refit says so
    refitting = cfg.model_copy(update={"retraining": cfg.retraining.model_copy(update={"refit": True})})
    assert retraining_config(refitting, tmp_path / "w.parquet", end).training.refit


def test_time_split_without_rows_is_a_clear_error(tmp_path):
    from raymlops.errors import ConfigError

    cfg = load_config(smoke_config(tmp_path))
    with pytest.raises(ConfigError, match="time_hour"):
        retraining_config(cfg, tmp_path / "w.parquet", None)


def test_a_window_whose_newest_days_are_empty_holds_the_retrain_and_says_why(tmp_path):
    """Labels lost while the monitor restarted can leave the newest days nearly empty: the retrain would fail
    on an empty validation split 4 s in (seen in the flights replay); the loop holds it instead."""
    from raymlops.loop.controller import MIN_SPLIT_ROWS, _thin_splits

    cfg = load_config(smoke_config(tmp_path))
    cfg = cfg.model_copy(update={"retraining": cfg.retraining.model_copy(update={"test_days": 7, "validation_days": 7})})
    times = pd.date_range("2013-05-01", "2013-06-30", freq="15min", tz="UTC")
    full = pd.DataFrame({"time_hour": times})
    assert _thin_splits(full, cfg, times.max()) is None
    gap = full[(full.time_hour < "2013-06-10") | (full.time_hour > "2013-06-29 22:00")]  # a few rows at the end
    reason = _thin_splits(gap, cfg, times.max())
    assert reason and "0 rows in the 7 validation days" in reason and f"at least {MIN_SPLIT_ROWS}" in reason


def test_candidate_windows_are_window_days_first_each_once_and_cut_from_the_same_end():
    from raymlops.config import RetrainingConfig
    from raymlops.loop.retraining import cut_window, window_days_to_fit, window_label

    r = RetrainingConfig(window_days=30, candidate_windows=[None, 30, 90])
    assert window_days_to_fit(r) == [30, None, 90]
    assert [window_label(d) for d in window_days_to_fit(r)] == ["30d", "all", "90d"]
    assert window_days_to_fit(RetrainingConfig(window_days=None)) == [None]
    times = pd.date_range("2013-01-01", "2013-12-31", freq="D", tz="UTC")
    table = pd.DataFrame({"time_hour": times, "x": range(len(times))})
    end = times.max()
    assert len(cut_window(table, "time_hour", end, 30)) == 30 and len(cut_window(table, "time_hour", end, None)) == 365
    assert cut_window(table, "time_hour", end, 90)["time_hour"].min() == end - pd.Timedelta(days=89)
    assert len(cut_window(table, None, None, 30)) == 365  # no time column: nothing to cut by


def test_the_lowest_validation_loss_chooses_the_window_and_a_fit_without_one_never_wins():
    from raymlops.loop.retraining import WindowFit, best_window

    short, everything = WindowFit(30, 800, 0.61, 1.0), WindowFit(None, 5000, 0.58, 3.0)
    assert best_window([short, everything]) is everything
    assert best_window([WindowFit(30, 800, 0.58, 1.0), everything]).days == 30  # a tie keeps window_days
    assert best_window([WindowFit(30, 800, float("nan"), 1.0), short]) is short
    with pytest.raises(ValueError):
        best_window([])


def test_a_fit_is_judged_by_the_validation_loss_of_the_model_it_kept():
    from raymlops.loop.windows import best_val_loss

    history = [{"val_loss": 0.7}, {"val_loss": 0.62}, {"val_loss": 0.65}]
    assert best_val_loss({"val_loss": 0.65, "best_val_loss": 0.62}, history) == 0.62
    assert best_val_loss({"val_loss": 0.65}, history) == 0.62  # an older checkpoint without the field
    assert best_val_loss({}, []) != best_val_loss({}, [])  # NaN: nothing validated


def test_recency_weights_halve_every_half_life_and_a_recency_retrain_weighs_by_them(tmp_path):
    from raymlops.loop.retraining import RECENCY_WEIGHT, recency_weights, with_recency_weights

    end = pd.Timestamp("2013-07-31", tz="UTC")
    times = pd.Series(pd.to_datetime(["2013-07-31", "2013-07-01", "2013-06-01", "2013-08-02"], utc=True))
    assert recency_weights(times, end, 30).tolist() == pytest.approx([1.0, 0.5, 0.25, 1.0])  # a later row: 1
    table = with_recency_weights(pd.DataFrame({"t": times, "x": [1, 2, 3, 4]}), "t", end, 60)
    assert table[RECENCY_WEIGHT].tolist() == pytest.approx([1.0, 2 ** -0.5, 0.5, 1.0])
    data = smoke_config_dict_with(tmp_path, weight=True)
    plain = retraining_config(data, tmp_path / "w.parquet", end)
    assert plain.features.weight_column is None  # the user's weight column is not on live traffic
    recent = data.model_copy(update={"retraining": data.retraining.model_copy(update={"half_life_days": 30})})
    assert retraining_config(recent, tmp_path / "w.parquet", end).features.weight_column == RECENCY_WEIGHT


def smoke_config_dict_with(tmp_path, weight: bool):
    from tests.helpers import smoke_dict, write_config

    data = smoke_dict()
    if weight:
        data["features"]["weight_column"] = "w"
    return load_config(write_config(tmp_path, data))
