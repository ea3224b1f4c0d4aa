"""Serving's record path: validated records become feature arrays without a frame, with the very numbers
the typed-frame path gives (``transform_frame(frame_from_rows(...))``), or it declines and the frame path
answers."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from raymlops.config import FeaturesConfig
from raymlops.data.features import fit_features, fit_partial
from raymlops.model.inputs import frame_from_rows, record_model
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER

CFG = FeaturesConfig.model_validate({
    "target": "delayed",
    "derived": [{"name": "dow", "source": "time_hour", "kind": "day_of_week"},
                {"name": "hod", "source": "time_hour", "kind": "hour"},
                {"name": "doy", "source": "flight_date", "kind": "day_of_year"}],
    "numeric": [{"column": "distance"}, {"column": "temp"}, {"column": "wind_speed", "impute": "zero", "scale": "none"},
                {"column": "hour"}, {"column": "month"}],
    "categorical": [{"column": "carrier"}, {"column": "origin", "encoding": "onehot"},
                    {"column": "dest", "max_categories": 10}, {"column": "hour"}, {"column": "dow"},
                    {"column": "hod", "encoding": "onehot"}, {"column": "doy"}, {"column": "gate"}],
})
SCHEMA = {
    "time_hour": {"type": "timestamp", "nullable": True},
    "flight_date": {"type": "date", "nullable": True},
    "distance": {"type": "float", "nullable": False, "min": 0.0, "max": 5000.0},
    "temp": {"type": "float", "nullable": True},
    "wind_speed": {"type": "float", "nullable": True},
    "hour": {"type": "int", "nullable": True, "min": 0, "max": 23},
    "month": {"type": "int", "nullable": True},
    "carrier": {"type": "string", "nullable": True, "allowed": ["9E", "AA", "UA", "B6", "ZZ"]},
    "origin": {"type": "string", "nullable": True},
    "dest": {"type": "string", "nullable": True},
    "gate": {"type": "float", "nullable": True},  # a number used as a category
}


@pytest.fixture(scope="module")
def fitted():
    f = pd.read_csv(SMOKE_FLIGHTS).merge(pd.read_csv(SMOKE_WEATHER), on=["origin", "time_hour"], how="left")
    f["flight_date"] = pd.to_datetime(f["time_hour"], utc=True).dt.date.astype(str)
    f["gate"] = (f["flight"] % 7).astype(float)
    return fit_features([fit_partial(f, CFG)], CFG)


def _record(rng: random.Random, gate_values: list) -> dict:
    """A request record as a client might send it: times in several zones, naive or aware, nulls, unknowns."""
    when = datetime(2013, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(0, 60 * 24 * 400))
    zone = timezone(timedelta(hours=rng.choice([-5, 0, 3, 5.5])))
    stamp = rng.choice([when.isoformat(), when.astimezone(zone).isoformat(), when.replace(tzinfo=None).isoformat(),
                        None])
    return {
        "time_hour": stamp,
        "flight_date": rng.choice([str(when.date()), None]),
        "distance": rng.choice([rng.uniform(0, 5000), float(rng.randrange(0, 5000)), rng.randrange(0, 5000)]),
        "temp": rng.choice([rng.uniform(-20, 100), None]),
        "wind_speed": rng.choice([rng.uniform(0, 40), None, 0]),
        "hour": rng.choice([rng.randrange(0, 24), None]),
        "month": rng.choice([rng.randrange(1, 13), None]),
        "carrier": rng.choice(["9E", "AA", "UA", "B6", "ZZ", None]),
        "origin": rng.choice(["EWR", "JFK", "LGA", "XXX", None]),
        "dest": rng.choice(["ORD", "ATL", "LAX", "nowhere", None]),
        "gate": rng.choice(gate_values),
    }


def _both(fitted, raw: list[dict]):
    Record = record_model(SCHEMA)
    rows = [Record.model_validate(r).model_dump() for r in raw]  # what the route hands the scorer
    return fitted.transform_records(rows), fitted.transform_frame(frame_from_rows(rows, SCHEMA))


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_records_give_the_frame_paths_numbers_bit_for_bit(fitted, size):
    rng = random.Random(size)
    for _ in range(40):
        arrays, frame = _both(fitted, [_record(rng, [None, 1.0, 2, 6.0]) for _ in range(size)])
        assert arrays is not None
        assert list(arrays) == list(frame.columns)
        for column, values in arrays.items():
            expected = frame[column].to_numpy()
            assert values.dtype == expected.dtype, column
            assert values.tobytes() == expected.tobytes(), (column, values, expected)


def test_a_fractional_float_category_is_left_to_the_frame_path(fitted):
    rng = random.Random(0)
    arrays, frame = _both(fitted, [_record(rng, [2.5]), _record(rng, [1.0])])
    assert arrays is None and len(frame) == 2  # "2.5" and "1.0" as the frame writes them: no second guess


def test_every_family_scores_arrays_as_it_scores_the_frame(fitted):
    from raymlops.config import MODEL_CONFIGS, TrainingConfig
    from raymlops.model.contract import ModelSpec, get_family

    rng = random.Random(1)
    raw = [_record(rng, [None, 1.0, 3.0]) for _ in range(80)]
    arrays, frame = _both(fitted, raw)
    train = frame.assign(delayed=[rng.randrange(2) for _ in range(len(frame))])
    spec = ModelSpec.from_features(fitted, "classification")
    training = TrainingConfig(epochs=2).model_dump() | {"cpus_per_worker": 1}
    for family, model_config in MODEL_CONFIGS.items():
        predictor = get_family(family).fit_local(spec, model_config(family=family).model_dump(), training,
                                                 train, train, "delayed")
        np.testing.assert_array_equal(predictor.predict(arrays), predictor.predict(frame), err_msg=family)


def test_dates_and_naive_times_are_read_as_utc(fitted):
    arrays, _ = _both(fitted, [{"time_hour": "2013-03-10T23:30:00-05:00", "flight_date": date(2013, 3, 10).isoformat(),
                                "distance": 100.0, "gate": None}])
    state = {s.column: s for s in fitted.categorical}
    codes = fitted._codes_for(state["dow"])
    assert arrays["dow"][0] == codes.get("0", 0)  # 23:30 in New York is Monday 04:30 UTC
