from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raymlops.config import FeaturesConfig
from raymlops.data.features import FittedFeatures, fit_features, fit_partial
from raymlops.errors import FeatureError
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER

CFG = FeaturesConfig.model_validate({
    "target": "delayed",
    "derived": [{"name": "dow", "source": "time_hour", "kind": "day_of_week"}],
    "numeric": [{"column": "distance"}, {"column": "temp"}, {"column": "wind_speed", "impute": "zero", "scale": "none"}],
    "categorical": [{"column": "carrier"}, {"column": "origin", "encoding": "onehot"},
                    {"column": "dest", "max_categories": 10}, {"column": "hour"}, {"column": "dow"}],
})


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    f = pd.read_csv(SMOKE_FLIGHTS)
    w = pd.read_csv(SMOKE_WEATHER)
    return f.merge(w, on=["origin", "time_hour"], how="left")


def test_row_alone_and_in_batch_are_bit_identical(flights):
    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    batch = fitted.transform_frame(flights)
    for i in range(0, len(flights), 7):
        record = {k: (None if pd.isna(v) else v) for k, v in flights.iloc[i].to_dict().items()}
        alone = fitted.transform_record(record)
        for col, value in alone.items():
            expected = batch[col].iloc[i]
            assert np.asarray(value, dtype=batch[col].dtype).tobytes() == np.asarray(expected).tobytes(), (i, col)


def test_fit_on_parts_equals_fit_on_whole(flights):
    whole = fit_features([fit_partial(flights, CFG)], CFG)
    parts = [fit_partial(flights.iloc[i:i + 411], CFG) for i in range(0, len(flights), 411)]
    assert fit_features(list(reversed(parts)), CFG) == whole


def test_json_round_trip_transforms_identically(flights, tmp_path):
    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    path = fitted.save(tmp_path / "features.json")
    loaded = FittedFeatures.load(path)
    assert loaded == fitted
    pd.testing.assert_frame_equal(loaded.transform_frame(flights), fitted.transform_frame(flights))
    assert b"pickle" not in path.read_bytes()


def test_unknown_and_missing_values_are_handled(flights):
    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    record = flights.iloc[0].to_dict()
    record.update(carrier="NEWAIR", temp=None, wind_speed=None)
    out = fitted.transform_record(record)
    assert out["carrier"] == 0
    temp_state = next(s for s in fitted.numeric if s.column == "temp")
    assert out["temp"] == pytest.approx((temp_state.impute - temp_state.mean) / temp_state.std, abs=1e-6)
    assert out["wind_speed"] == 0.0
    assert sum(v for k, v in out.items() if k.startswith("origin=")) == 1.0


def test_vocabulary_is_capped_and_sorted_by_frequency(flights):
    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    dest = next(s for s in fitted.categorical if s.column == "dest")
    assert len(dest.vocabulary) == 10
    counts = flights["dest"].value_counts()
    assert dest.vocabulary[0] == counts.index[0]
    assert fitted.output_columns[:3] == ["distance", "temp", "wind_speed"]
    assert "time_hour" in fitted.input_columns and "dow" not in fitted.input_columns


def test_errors_are_specific(flights):
    with pytest.raises(FeatureError, match="empty training split"):
        fit_features([], CFG)
    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    with pytest.raises(FeatureError, match="missing feature columns"):
        fitted.transform_frame(flights.drop(columns=["distance"]))
    with pytest.raises(FeatureError, match="format"):
        FittedFeatures.from_dict({**fitted.to_dict(), "format_version": 99})


def test_the_weight_column_rides_with_the_target_and_a_bad_weight_names_its_row(flights):
    from raymlops.data.steps import transform_batch

    fitted = fit_features([fit_partial(flights, CFG)], CFG)
    frame = flights.head(50).assign(w=np.linspace(0, 1, 50))
    out = transform_batch(frame, fitted=fitted, weight="w")
    assert out["w"].dtype == np.float32 and out["w"].tolist() == pytest.approx(np.linspace(0, 1, 50).tolist())
    assert "w" not in transform_batch(frame, fitted=fitted).columns  # without weight_column: not carried
    with pytest.raises(FeatureError, match=r"'w': row 3 of this batch holds -1.0 \(2 such rows\)"):
        transform_batch(frame.assign(w=[1, 1, 1, -1, np.nan] + [1] * 45), fitted=fitted, weight="w")
    with pytest.raises(FeatureError, match="is not a column of the data"):
        transform_batch(flights.head(5), fitted=fitted, weight="w")


def test_one_pass_counts_the_splits_and_fits_on_the_training_rows_only(flights):
    import json

    from raymlops.data.steps import SPLIT_COLUMN, split_stats_batch

    labels = np.array(["train", "validation", "test", "train"])[np.arange(len(flights)) % 4]
    out = json.loads(split_stats_batch(flights.assign(**{SPLIT_COLUMN: labels}), cfg=CFG)["partial"].iloc[0])
    assert out["counts"] == {s: int((labels == s).sum()) for s in ("train", "validation", "test")}
    assert out["train"] == fit_partial(flights[labels == "train"], CFG)
