"""The replay's cron lines (raymlops.loop.baselines): fitted in a process of their own, they must score
each step exactly as the same fit made in this process on the history known before that step, and a
step's rows must become history only for the steps after it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raymlops.config import load_config
from raymlops.loop.baselines import ScheduledBaselines
from raymlops.model.local_fit import fit_frame, window
from tests.helpers import REPO, SMOKE_FLIGHTS, SMOKE_WEATHER


def _rows() -> pd.DataFrame:
    flights = pd.read_csv(SMOKE_FLIGHTS).drop(columns=["arr_delay"])
    rows = flights.merge(pd.read_csv(SMOKE_WEATHER), on=["origin", "time_hour"], how="left")
    rows["time_hour"] = pd.to_datetime(rows["time_hour"], utc=True)
    return rows.sort_values("time_hour", kind="stable").reset_index(drop=True)


def test_each_step_is_scored_by_fits_on_the_history_before_it_as_in_process():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    rows = _rows()
    history = rows[rows["month"] <= 2]
    steps = [rows[rows["month"] == 3], rows[rows["month"] == 4]]
    with ScheduledBaselines(cfg, history, time_column="time_hour", window_days=30, validation_days=7,
                            every_days=45) as cron:
        pending = [cron.submit(step) for step in steps]
        first, second = (p.result(timeout=300) for p in pending)

    expected = fit_frame(cfg, history, time_column="time_hour", validation_days=7, threads=1)
    np.testing.assert_allclose(first.scores["scheduled_all"], expected.predict_frame(steps[0]), rtol=1e-6)
    recent = fit_frame(cfg, window(history, "time_hour", 30), time_column="time_hour", validation_days=7, threads=1)
    np.testing.assert_allclose(first.scores["scheduled_window"], recent.predict_frame(steps[0]), rtol=1e-6)

    # The second step learns from March too; the window line from fewer rows than the all-history one.
    assert second.train_rows["scheduled_all"] > first.train_rows["scheduled_all"] == expected.train_rows
    assert second.train_rows["scheduled_window"] < second.train_rows["scheduled_all"]
    later = fit_frame(cfg, pd.concat([history, steps[0]]), time_column="time_hour", validation_days=7, threads=1)
    np.testing.assert_allclose(second.scores["scheduled_all"], later.predict_frame(steps[1]), rtol=1e-6)
    # The slow line refits only every 45 days: the second step is still scored by the first step's fit.
    assert first.slow_refitted and not second.slow_refitted
    np.testing.assert_allclose(second.scores["scheduled_slow"], expected.predict_frame(steps[1]), rtol=1e-6)
    assert all(s > 0 for s in first.cpu_seconds.values()) and second.cpu_seconds["scheduled_slow"] == 0
