"""The data stage on Ray: ingest -> validate -> clean -> snapshot -> split -> fit features.

Each step is a Ray Data pass over batches calling the pure functions of ``validation``, ``versioning``,
``splits`` and ``features``; the driver only merges small per-batch summaries. A failed validation
writes its report and raises before anything downstream is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.data
from ray.data.expressions import col

from raymlops.config import PipelineConfig, config_error
from raymlops.data import features as feats
from raymlops.data import versioning
from raymlops.data.columns import data_column_problems
from raymlops.data.readers import PROVENANCE_COLUMNS
from raymlops.data.sources import build_dataset, source_columns
from raymlops.data.splits import SPLITS, assign_splits
from raymlops.data.validation import ValidationReport, check_batch, coerce_frame, merge_partials
from raymlops.errors import DataValidationError, RaymlopsError, SnapshotError
from raymlops.workspace import Workspace

SPLIT_COLUMN = "__split"
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class DataStageResult:
    """What the data stage hands to training: the snapshot, the report, splits and fitted features."""

    snapshot: versioning.Snapshot
    report: ValidationReport
    report_path: Path
    split_rows: dict[str, int]
    features: feats.FittedFeatures
    features_path: Path
    datasets: dict[str, ray.data.Dataset] = field(repr=False, compare=False)
    raw: dict[str, ray.data.Dataset] = field(default_factory=dict, repr=False, compare=False)
    reused_snapshot: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _one_row(payload: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"partial": [json.dumps(payload)]})


def _gather(ds: ray.data.Dataset) -> list[dict[str, Any]]:
    return [json.loads(r["partial"]) for r in ds.take_all()]


# --------------------------------------------------------------------------------- batch UDFs
def _validate_udf(batch: pd.DataFrame, *, cfg) -> pd.DataFrame:
    return _one_row(check_batch(batch, cfg))


def _clean_udf(batch: pd.DataFrame, *, cfg: PipelineConfig) -> pd.DataFrame:
    batch = coerce_frame(batch, cfg.validation)
    drop = [c for c in (*PROVENANCE_COLUMNS, *cfg.data.cleaning.drop_columns) if c in batch.columns]
    return batch.drop(columns=drop).reset_index(drop=True)


def _hash_udf(batch: pd.DataFrame, *, kinds: dict[str, str]) -> pd.DataFrame:
    pair = versioning.row_hash_pair(batch, kinds)
    part = versioning.fingerprint_partial(batch, pair)
    return pd.DataFrame({"partial": [json.dumps(part)], "hashes": [pair[0].tobytes()]})


def _keep_udf(batch: pd.DataFrame, *, dupes: np.ndarray, keep_dupes: bool, kinds: dict[str, str]) -> pd.DataFrame:
    is_dupe = np.isin(versioning.row_hashes(batch, kinds=kinds), dupes)
    return batch[is_dupe if keep_dupes else ~is_dupe]


def _split_udf(batch: pd.DataFrame, *, split) -> pd.DataFrame:
    batch = batch.copy()
    batch[SPLIT_COLUMN] = assign_splits(batch, split)
    return batch


def _fit_udf(batch: pd.DataFrame, *, cfg) -> pd.DataFrame:
    return _one_row(feats.fit_partial(batch, cfg))


def _transform_udf(batch: pd.DataFrame, *, fitted: feats.FittedFeatures) -> pd.DataFrame:
    return fitted.transform_frame(batch, keep=[fitted.target])


# ------------------------------------------------------------------------------------- steps
def run_validation(raw: ray.data.Dataset, cfg: PipelineConfig, ws: Workspace, run_tag: str) -> tuple[ValidationReport, Path]:
    partials = _gather(raw.map_batches(_validate_udf, batch_format="pandas", fn_kwargs={"cfg": cfg.validation}))
    report = merge_partials(partials, cfg.validation)
    path = report.write_json(ws.reports / f"validation-{run_tag}.json")
    return report, path


def _schema_of(ds: ray.data.Dataset) -> dict[str, str]:
    schema = ds.schema()
    return {n: str(t) for n, t in zip(schema.names, schema.types)} if schema else {}


def run_snapshot(clean: ray.data.Dataset, cfg: PipelineConfig, ws: Workspace, info: dict[str, Any],
                 report_path: Path) -> tuple[versioning.Snapshot, bool, ray.data.Dataset]:
    """Deduplicate, fingerprint, and publish atomically; an existing snapshot of the same content is reused.

    Returns the snapshot, whether it existed already, and the deduplicated data (the snapshot's content,
    still in the object store, so the next step need not read the files back).
    """
    kinds = versioning.arrow_kinds(clean.schema(fetch_if_missing=True))
    rows = clean.map_batches(_hash_udf, batch_format="pandas", fn_kwargs={"kinds": kinds}).take_all()
    partials = [json.loads(r["partial"]) for r in rows]
    if cfg.data.cleaning.drop_duplicates and rows:
        hashes = np.concatenate([np.frombuffer(r["hashes"], dtype=np.uint64) for r in rows])
        values, counts = np.unique(hashes, return_counts=True)
        dupes = values[counts > 1]
        if len(dupes):
            keep = {"dupes": dupes, "kinds": kinds}
            singles = clean.map_batches(_keep_udf, batch_format="pandas", fn_kwargs={**keep, "keep_dupes": False})
            repeated = clean.map_batches(_keep_udf, batch_format="pandas", fn_kwargs={**keep, "keep_dupes": True})
            distinct = repeated.to_pandas().drop_duplicates(ignore_index=True)
            clean = singles.union(ray.data.from_pandas(distinct)).materialize()
            partials = _gather(clean.map_batches(
                lambda b: _one_row(versioning.fingerprint_partial(b, kinds=kinds)), batch_format="pandas"))
    schema = _schema_of(clean)
    snapshot_id = versioning.combine_fingerprint(partials, kinds)
    root = ws.snapshots
    try:
        return versioning.load_snapshot(root, snapshot_id), True, clean
    except SnapshotError:
        pass  # not published yet (or incomplete): write it
    versioning.remove_stale_temp_dirs(root)
    tmp = versioning.new_temp_dir(root)
    try:
        clean.write_parquet(str(tmp))
        files = sorted(p.name for p in tmp.iterdir() if p.suffix == ".parquet")
        manifest = versioning.SnapshotManifest(
            snapshot_id=snapshot_id, rows=sum(p["rows"] for p in partials), schema=schema,
            sources=sorted({f for fs in info["sources"].values() for f in fs}), files=files, created_at=time.time(),
            config_hash=cfg.config_hash(), validation_report=str(report_path),
            extra={"join_duplicates_dropped": info["join_duplicates_dropped"]})
        return versioning.publish_snapshot(tmp, manifest), False, clean
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_features(snapshot: versioning.Snapshot, data: ray.data.Dataset, cfg: PipelineConfig, ws: Workspace) -> tuple[
        dict[str, ray.data.Dataset], dict[str, ray.data.Dataset], dict[str, int], feats.FittedFeatures, Path]:
    """Split the snapshot's rows, fit the feature pipeline on train only, and transform every split lazily."""
    tagged = data.map_batches(_split_udf, batch_format="pandas", fn_kwargs={"split": cfg.data.split}).materialize()
    splits = {name: tagged.filter(expr=col(SPLIT_COLUMN) == name) for name in SPLITS}
    counts = {name: ds.count() for name, ds in splits.items()}
    if counts["train"] == 0:
        raise DataValidationError(f"the training split of snapshot {snapshot.snapshot_id} is empty; check "
                                  "data.split (its boundaries or fractions)")
    partials = _gather(splits["train"].map_batches(_fit_udf, batch_format="pandas", fn_kwargs={"cfg": cfg.features}))
    fitted = feats.fit_features(partials, cfg.features)
    path = fitted.save(ws.features / f"{snapshot.snapshot_id}-{cfg.config_hash()}.json")
    raw = {name: ds.drop_columns([SPLIT_COLUMN]) for name, ds in splits.items()}
    transformed = {name: ds.map_batches(_transform_udf, batch_format="pandas", fn_kwargs={"fitted": fitted})
                   for name, ds in raw.items()}
    return raw, transformed, counts, fitted, path


class _HideOurErrorsFromConsole(logging.Filter):
    """Ray Data logs a failed task's traceback to the console before it re-raises the error. When the error
    is one of ours (a malformed row, an unreadable file) the one-line message the CLI prints says it all, so
    the record is marked hidden: Ray Data's console handler drops it, its log file still gets it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if isinstance(exc, RaymlopsError):
            record.hide = True
        return True


_RAY_DATA_ERROR_LOGGERS = ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")


def _quiet_ray_data_about_our_errors() -> None:
    for name in _RAY_DATA_ERROR_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideOurErrorsFromConsole) for f in logger.filters):
            logger.addFilter(_HideOurErrorsFromConsole())


def run_data_stage(cfg: PipelineConfig, progress: Progress | None = None) -> DataStageResult:
    """Ingest, validate, snapshot, split and fit features; raises DataValidationError on a failed report.

    An error of ours raised inside a Ray task (a malformed CSV row, say) is raised as itself, not as
    Ray's wrapper whose message is the remote traceback (that stays in the chain, for --debug).
    """
    _quiet_ray_data_about_our_errors()
    try:
        return _run_data_stage(cfg, progress)
    except RaymlopsError as exc:
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        if cause is exc or not isinstance(cause, RaymlopsError):
            raise
        raise cause from exc


def _run_data_stage(cfg: PipelineConfig, progress: Progress | None) -> DataStageResult:
    say = progress or (lambda step, msg: None)
    ws = Workspace(cfg.workdir_path).ensure()
    run_tag = time.strftime("%Y%m%d-%H%M%S") + f"-{cfg.config_hash()[:6]}"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    say("ingest", "checking the config's columns against the sources")
    problems = data_column_problems(cfg, lambda src, whole: source_columns(src, cfg, whole))
    if problems:
        raise config_error(problems, "against its data")
    say("ingest", "reading sources")
    raw, info = build_dataset(cfg, text_columns=cfg.validation.columns.keys())
    raw = raw.materialize()
    seconds["ingest"] = time.perf_counter() - t0

    say("validate", "checking expectations")
    t = time.perf_counter()
    report, report_path = run_validation(raw, cfg, ws, run_tag)
    seconds["validate"] = time.perf_counter() - t
    if not report.passed:
        raise DataValidationError(f"{report.summary()}\nfull report: {report_path}", report_path=str(report_path))

    say("snapshot", "cleaning and writing snapshot")
    t = time.perf_counter()
    clean = raw.map_batches(_clean_udf, batch_format="pandas", fn_kwargs={"cfg": cfg}).materialize()
    snapshot, reused, clean = run_snapshot(clean, cfg, ws, info, report_path)
    seconds["snapshot"] = time.perf_counter() - t

    say("features", "splitting and fitting features")
    t = time.perf_counter()
    raw_splits, datasets, counts, fitted, features_path = run_features(snapshot, clean, cfg, ws)
    seconds["features"] = time.perf_counter() - t
    return DataStageResult(snapshot=snapshot, report=report, report_path=report_path, split_rows=counts,
                           features=fitted, features_path=features_path, datasets=datasets, raw=raw_splits,
                           reused_snapshot=reused, seconds=seconds)
