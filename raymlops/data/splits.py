"""Which split each row belongs to, decided from the row alone (pure).

A random split hashes each row's content with the seed, so the assignment is the same however the data
is partitioned and whichever worker sees the row. A time split compares a timestamp column with two
boundaries, so later periods are held out.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from raymlops.config import RandomSplitConfig, SplitConfig, TimeSplitConfig
from raymlops.data.versioning import row_hashes
from raymlops.errors import ConfigError

SPLITS = ("train", "validation", "test")


def _hash_key(seed: int) -> int:
    return int(hashlib.sha256(f"split-{seed}".encode()).hexdigest()[:16], 16)


def assign_splits(frame: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """An array of 'train' / 'validation' / 'test', one per row of ``frame``."""
    if isinstance(cfg, RandomSplitConfig):
        u = row_hashes(frame, _hash_key(cfg.seed)).astype(np.float64) / 2.0**64
        return np.where(u < cfg.train, "train", np.where(u < cfg.train + cfg.validation, "validation", "test"))
    assert isinstance(cfg, TimeSplitConfig)
    when = pd.to_datetime(frame[cfg.column], utc=True)
    val_start = _utc(cfg.validation_start)
    test_start = _utc(cfg.test_start)
    return np.where(when < val_start, "train", np.where(when < test_start, "validation", "test"))


def _utc(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def rows_of_split(frame: pd.DataFrame, cfg: SplitConfig, name: str) -> pd.DataFrame:
    """The rows of a snapshot that ``name`` holds under ``cfg``: the assignment the data stage made,
    recomputed from the rows alone (``raymlops data show ID --split test -o rows.parquet``)."""
    if name not in SPLITS:
        raise ConfigError(f"no split {name!r}: one of {', '.join(SPLITS)}")
    return frame[assign_splits(frame, cfg) == name].reset_index(drop=True)
