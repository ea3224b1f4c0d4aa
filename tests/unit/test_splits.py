from __future__ import annotations

import numpy as np
import pandas as pd

from raymlops.config import RandomSplitConfig, TimeSplitConfig
from raymlops.data.splits import assign_splits


def frame(n=5000):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n), "k": rng.integers(0, 50, n),
                         "t": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC")})


def test_random_split_is_stable_under_partitioning_and_close_to_fractions():
    df = frame()
    cfg = RandomSplitConfig(seed=7, train=0.7, validation=0.1, test=0.2)
    whole = assign_splits(df, cfg)
    parts = np.concatenate([assign_splits(df.iloc[i:i + 333], cfg) for i in range(0, len(df), 333)])
    assert (whole == parts).all()
    shares = pd.Series(whole).value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["test"] - 0.2) < 0.03
    other_seed = assign_splits(df, RandomSplitConfig(seed=8, train=0.7, validation=0.1, test=0.2))
    assert (other_seed != whole).any()


def test_time_split_holds_out_later_periods():
    df = frame()
    cfg = TimeSplitConfig(column="t", validation_start="2013-05-01", test_start="2013-06-01")
    s = assign_splits(df, cfg)
    assert df["t"][s == "train"].max() < pd.Timestamp("2013-05-01", tz="UTC")
    assert df["t"][s == "test"].min() >= pd.Timestamp("2013-06-01", tz="UTC")
    assert set(s) == {"train", "validation", "test"}
