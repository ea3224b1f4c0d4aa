"""The data stage's batch functions, shared by its two engines (pure: pandas and numpy).

Ray Data maps them over blocks (``stage``); small inputs run them once over the whole table in the
driver (``in_process``). Each returns a frame, and the per-batch summaries (validation partials,
fingerprint sums, feature statistics) merge the same way whatever the partitioning, which is why both
engines publish the same snapshot.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import FeaturesConfig, PipelineConfig, SplitConfig, ValidationConfig
from raymlops.data import features as feats
from raymlops.data import versioning
from raymlops.data.readers import PROVENANCE_COLUMNS
from raymlops.data.splits import assign_splits
from raymlops.data.validation import check_batch, coerce_frame
from raymlops.errors import FeatureError, SnapshotError
from raymlops.workspace import Workspace

SPLIT_COLUMN = "__split"


def one_row(payload: dict[str, Any]) -> pd.DataFrame:
    """A summary as a one-row frame (what a Ray Data batch function may return)."""
    return pd.DataFrame({"partial": [json.dumps(payload)]})


def validate_batch(batch: pd.DataFrame, *, cfg: ValidationConfig) -> pd.DataFrame:
    return one_row(check_batch(batch, cfg))


def clean_batch(batch: pd.DataFrame, *, cfg: PipelineConfig) -> pd.DataFrame:
    batch = coerce_frame(batch, cfg.validation)
    drop = [c for c in (*PROVENANCE_COLUMNS, *cfg.data.cleaning.drop_columns) if c in batch.columns]
    return batch.drop(columns=drop).reset_index(drop=True)


def hash_batch(batch: pd.DataFrame, *, kinds: dict[str, str]) -> pd.DataFrame:
    pair = versioning.row_hash_pair(batch, kinds)
    part = versioning.fingerprint_partial(batch, pair)
    return pd.DataFrame({"partial": [json.dumps(part)], "hashes": [pair[0].tobytes()]})


def keep_batch(batch: pd.DataFrame, *, dupes: np.ndarray, keep_dupes: bool, kinds: dict[str, str]) -> pd.DataFrame:
    """The rows whose hash is (``keep_dupes``) or is not among ``dupes``."""
    is_dupe = np.isin(versioning.row_hashes(batch, kinds=kinds), dupes)
    return batch[is_dupe if keep_dupes else ~is_dupe]


def duplicate_hashes(hashes: np.ndarray) -> np.ndarray:
    """Row hashes seen more than once."""
    values, counts = np.unique(hashes, return_counts=True)
    return values[counts > 1]


def split_batch(batch: pd.DataFrame, *, split: SplitConfig) -> pd.DataFrame:
    batch = batch.copy()
    batch[SPLIT_COLUMN] = assign_splits(batch, split)
    return batch


def split_stats_batch(batch: pd.DataFrame, *, cfg: FeaturesConfig, task: str | None = None) -> pd.DataFrame:
    """One pass over a split-tagged batch: its rows per split, and the feature statistics of its training
    rows (``fit_partial``), so counting the splits and fitting the features read the data once."""
    labels = batch[SPLIT_COLUMN]
    train = batch[(labels == "train").to_numpy()]
    return one_row({"counts": {str(k): int(v) for k, v in labels.value_counts().items()},
                    "train": feats.fit_partial(train, cfg, task)})


def transform_batch(batch: pd.DataFrame, *, fitted: feats.FittedFeatures, weight: str | None = None) -> pd.DataFrame:
    """Features, the target and (``features.weight_column``) the row weights, checked here: a weight that is
    missing, negative or not a number would train silently wrong."""
    out = fitted.transform_frame(batch, keep=[fitted.target] + ([weight] if weight else []))
    if weight:
        out[weight] = row_weights(batch, weight)
    return out


def row_weights(batch: pd.DataFrame, weight: str) -> np.ndarray:
    """``batch[weight]`` as float32 training weights; a clear error naming the first bad row."""
    if weight not in batch.columns:
        raise FeatureError(f"features.weight_column {weight!r} is not a column of the data "
                           f"(columns: {', '.join(map(str, batch.columns))})")
    values = pd.to_numeric(batch[weight], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FeatureError(f"features.weight_column {weight!r}: row {row} of this batch holds "
                           f"{_shown(batch[weight].iloc[row])} ({int(bad.sum())} such rows); weights are numbers >= 0")
    return values.astype(np.float32)


def _shown(value: Any) -> str:
    """A cell as a user wrote it: ``-1.0``, ``'abc'`` or ``nan``, not ``np.float64(-1.0)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def publish_snapshot(cfg: PipelineConfig, ws: Workspace, info: dict[str, Any], report_path: Path, snapshot_id: str, *,
                     rows: int, schema: dict[str, str], write: Callable[[Path], None]) -> tuple[versioning.Snapshot, bool]:
    """The snapshot ``snapshot_id``: the published one if it exists (True), else ``write`` fills a temp
    folder with Parquet files that is renamed into place with its manifest (False); a failure removes it."""
    root = ws.snapshots
    try:
        return versioning.load_snapshot(root, snapshot_id), True
    except SnapshotError:
        pass  # not published yet (or incomplete): write it
    versioning.remove_stale_temp_dirs(root)
    tmp = versioning.new_temp_dir(root)
    try:
        write(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.suffix == ".parquet")
        manifest = versioning.SnapshotManifest(
            snapshot_id=snapshot_id, rows=rows, schema=schema,
            sources=sorted({f for fs in info["sources"].values() for f in fs}), files=files, created_at=time.time(),
            config_hash=cfg.config_hash(), validation_report=str(report_path),
            extra={"join_duplicates_dropped": info["join_duplicates_dropped"]})
        return versioning.publish_snapshot(tmp, manifest), False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
