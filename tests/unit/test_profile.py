from __future__ import annotations

import pandas as pd

from raymlops.config import ValidationConfig
from raymlops.data.profile import profile_frame
from raymlops.data.validation import check_batch, merge_partials
from tests.helpers import SMOKE_FLIGHTS


def test_profile_proposes_a_section_the_data_passes():
    df = pd.read_csv(SMOKE_FLIGHTS, dtype=str)
    proposal = profile_frame(df)
    cfg = ValidationConfig.model_validate(proposal)
    cols = cfg.columns
    assert cols["month"].type == "int" and cols["month"].min == 1
    assert cols["origin"].allowed == ["EWR", "JFK", "LGA"]
    assert cols["distance"].nullable is False
    assert cols["time_hour"].type == "timestamp"
    assert cols["arr_delay"].max_null_fraction is not None
    report = merge_partials([check_batch(df, cfg)], cfg)
    assert report.passed, report.summary()


def test_dates_and_times_are_typed_as_such_with_a_lower_bound_only():
    """Issue 15, item 11: date columns were proposed as strings, and the exact observed max of a time
    became a bound every later request (and retrain) failed."""
    frame = pd.DataFrame({"day": ["2013-01-01", "2013-02-28", None], "at": ["2013-01-01 05:00", "2013-03-01 23:00", None],
                          "code": ["2013-1-1", "x", "y"]})
    cols = ValidationConfig.model_validate(profile_frame(frame)).columns
    assert (cols["day"].type, cols["day"].min, cols["day"].max) == ("date", "2013-01-01", None)
    assert cols["at"].type == "timestamp" and cols["at"].min.startswith("2013-01-01T05:00") and cols["at"].max is None
    assert cols["code"].type == "string"
    assert not any(c.request_bounds for c in cols.values())  # ranges describe training data, not requests
    report = merge_partials([check_batch(frame, ValidationConfig.model_validate(profile_frame(frame)))],
                            ValidationConfig.model_validate(profile_frame(frame)))
    assert report.passed, report.summary()
