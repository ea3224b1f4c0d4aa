"""The data stage in the driver, for inputs small enough that Ray Data's start-up and per-block round
trips cost more than the work (3,000 rows: 12 s through Ray Data, well under one in-process).

The same batch functions (``steps``) run once over the whole table; their summaries merge exactly as
over Ray's blocks, so the snapshot, its fingerprint, the validation report, the splits and the fitted
features are the ones the Ray Data path produces (tests/integration/test_data_stage.py runs both).
``data.in_process_max_mb`` sets the size below which this path is taken; SQL sources always go
through Ray Data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raymlops.config import PipelineConfig
from raymlops.data import features as feats
from raymlops.data import steps, versioning
from raymlops.data.sources import broadcast_join, file_bytes, join_table, read_frame
from raymlops.data.splits import SPLITS
from raymlops.data.validation import ValidationReport, check_batch, merge_partials
from raymlops.errors import DataValidationError
from raymlops.workspace import Workspace


def wanted(cfg: PipelineConfig) -> bool:
    """Whether ``cfg``'s sources are small enough (and all files) for the in-process path."""
    limit = cfg.data.in_process_max_mb
    if limit <= 0:
        return False
    size = file_bytes(cfg)
    return size is not None and size <= limit * 2**20


@dataclass(frozen=True)
class InProcessData:
    """What the in-process path produced: frames where the Ray path has Datasets."""

    report: ValidationReport
    report_path: Path
    snapshot: versioning.Snapshot
    reused: bool
    counts: dict[str, int]
    fitted: feats.FittedFeatures
    features_path: Path
    raw: dict[str, pd.DataFrame]
    transformed: dict[str, pd.DataFrame]


def read_table(cfg: PipelineConfig) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The base table (union of base sources) with every join applied, and what was read."""
    by_name = {s.name: s for s in cfg.data.sources}
    text_columns = set(cfg.validation.columns)
    read: dict[str, list[str]] = {}
    parts = []
    for name in cfg.data.base or [cfg.data.sources[0].name]:
        frame, read[name] = read_frame(by_name[name], cfg, text_columns)
        if frame is not None:
            parts.append(frame)
    info: dict[str, Any] = {"sources": read, "join_duplicates_dropped": {}}
    if not parts:
        return None, info
    base = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    for join in cfg.data.joins:
        right, read[join.right] = read_frame(by_name[join.right], cfg, text_columns)
        if right is None:
            return None, info
        right, info["join_duplicates_dropped"][join.right] = join_table(right, join)
        base = broadcast_join(base, right=right, join=join)
    return base, info


def _schema(frame: pd.DataFrame) -> pa.Schema:
    return pa.Schema.from_pandas(frame, preserve_index=False)


def snapshot(clean: pd.DataFrame, cfg: PipelineConfig, ws: Workspace, info: dict[str, Any],
             report_path: Path) -> tuple[versioning.Snapshot, bool, pd.DataFrame]:
    """Deduplicate, fingerprint and publish, as ``stage.run_snapshot`` does over blocks."""
    kinds = versioning.arrow_kinds(_schema(clean))
    pair = versioning.row_hash_pair(clean, kinds)
    if cfg.data.cleaning.drop_duplicates and len(clean):
        dupes = steps.duplicate_hashes(pair[0])
        if len(dupes):
            is_dupe = np.isin(pair[0], dupes)
            distinct = clean[is_dupe].drop_duplicates(ignore_index=True)
            clean = pd.concat([clean[~is_dupe], distinct], ignore_index=True)
            pair = versioning.row_hash_pair(clean, kinds)
    partial = versioning.fingerprint_partial(clean, pair)
    snapshot_id = versioning.combine_fingerprint([partial], kinds)
    schema = _schema(clean)

    def write(tmp: Path) -> None:
        pq.write_table(pa.Table.from_pandas(clean, schema=schema, preserve_index=False), tmp / "part-00000.parquet")

    snap, reused = steps.publish_snapshot(cfg, ws, info, report_path, snapshot_id, rows=partial["rows"],
                                          schema={n: str(t) for n, t in zip(schema.names, schema.types)}, write=write)
    return snap, reused, clean


def run(cfg: PipelineConfig, ws: Workspace, run_tag: str, say, seconds: dict[str, float]) -> InProcessData | None:
    """The data stage on one table in this process; None when the sources hold no rows (Ray Data's path
    then reports it as it always has)."""
    t = time.perf_counter()
    say("ingest", "reading sources (in process)")
    table, info = read_table(cfg)
    if table is None:
        return None
    seconds["ingest"] = seconds.get("ingest", 0.0) + time.perf_counter() - t

    say("validate", "checking expectations")
    t = time.perf_counter()
    report = merge_partials([check_batch(table, cfg.validation)], cfg.validation)
    report_path = report.write_json(ws.reports / f"validation-{run_tag}.json")
    seconds["validate"] = time.perf_counter() - t
    if not report.passed:
        raise DataValidationError(f"{report.summary()}\nfull report: {report_path}", report_path=str(report_path))

    say("snapshot", "cleaning and writing snapshot")
    t = time.perf_counter()
    snap, reused, clean = snapshot(steps.clean_batch(table, cfg=cfg), cfg, ws, info, report_path)
    seconds["snapshot"] = time.perf_counter() - t

    say("features", "splitting and fitting features")
    t = time.perf_counter()
    labels = steps.split_batch(clean, split=cfg.data.split)[steps.SPLIT_COLUMN].to_numpy()
    raw = {name: clean[labels == name].reset_index(drop=True) for name in SPLITS}
    counts = {name: len(frame) for name, frame in raw.items()}
    if counts["train"] == 0:
        raise DataValidationError(f"the training split of snapshot {snap.snapshot_id} is empty; check "
                                  "data.split (its boundaries or fractions)")
    task = cfg.model.task
    fitted = feats.fit_features([feats.fit_partial(raw["train"], cfg.features, task)], cfg.features, task)
    features_path = fitted.save(ws.features / f"{snap.snapshot_id}-{cfg.config_hash()}.json")
    transformed = {name: steps.transform_batch(frame, fitted=fitted, weight=cfg.features.weight_column)
                   for name, frame in raw.items()}
    seconds["features"] = time.perf_counter() - t
    return InProcessData(report=report, report_path=report_path, snapshot=snap, reused=reused, counts=counts,
                         fitted=fitted, features_path=features_path, raw=raw, transformed=transformed)
