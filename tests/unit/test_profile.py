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
