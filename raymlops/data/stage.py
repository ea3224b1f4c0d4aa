"""The data stage on Ray: ingest -> validate -> clean -> snapshot -> split -> fit features.

Each step is a Ray Data pass over batches calling the pure functions of ``validation``, ``versioning``,
``splits`` and ``features``; the driver only merges small per-batch summaries. A failed validation
writes its report and raises before anything downstream is written.
"""

from __future__ import annotations

import json
import logging
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
from raymlops.data import in_process, steps, versioning
from raymlops.data.columns import data_column_problems
from raymlops.data.sources import build_dataset, source_columns
from raymlops.data.splits import SPLITS
from raymlops.data.steps import SPLIT_COLUMN
from raymlops.data.validation import ValidationReport, merge_partials
from raymlops.errors import DataValidationError, RaymlopsError, SnapshotError
from raymlops.workspace import Workspace

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
    # The raw splits as frames in the driver, when the stage ran there: what evaluation scores in process.
    frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False, compare=False)
    reused_snapshot: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _gather(ds: ray.data.Dataset) -> list[dict[str, Any]]:
    return [json.loads(r["partial"]) for r in ds.take_all()]


# ------------------------------------------------------------------------------------- steps
def run_validation(raw: ray.data.Dataset, cfg: PipelineConfig, ws: Workspace, run_tag: str) -> tuple[ValidationReport, Path]:
    partials = _gather(raw.map_batches(steps.validate_batch, batch_format="pandas", fn_kwargs={"cfg": cfg.validation}))
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
    rows = clean.map_batches(steps.hash_batch, batch_format="pandas", fn_kwargs={"kinds": kinds}).take_all()
    partials = [json.loads(r["partial"]) for r in rows]
    if cfg.data.cleaning.drop_duplicates and rows:
        hashes = np.concatenate([np.frombuffer(r["hashes"], dtype=np.uint64) for r in rows])
        dupes = steps.duplicate_hashes(hashes)
        if len(dupes):
            keep = {"dupes": dupes, "kinds": kinds}
            singles = clean.map_batches(steps.keep_batch, batch_format="pandas", fn_kwargs={**keep, "keep_dupes": False})
            repeated = clean.map_batches(steps.keep_batch, batch_format="pandas", fn_kwargs={**keep, "keep_dupes": True})
            distinct = repeated.to_pandas().drop_duplicates(ignore_index=True)
            clean = singles.union(ray.data.from_pandas(distinct)).materialize()
            partials = _gather(clean.map_batches(
                lambda b: steps.one_row(versioning.fingerprint_partial(b, kinds=kinds)), batch_format="pandas"))
    snapshot_id = versioning.combine_fingerprint(partials, kinds)
    snapshot, reused = steps.publish_snapshot(
        cfg, ws, info, report_path, snapshot_id, rows=sum(p["rows"] for p in partials), schema=_schema_of(clean),
        write=lambda tmp: clean.write_parquet(str(tmp)))
    return snapshot, reused, clean


def run_features(snapshot: versioning.Snapshot, data: ray.data.Dataset, cfg: PipelineConfig, ws: Workspace) -> tuple[
        dict[str, ray.data.Dataset], dict[str, ray.data.Dataset], dict[str, int], feats.FittedFeatures, Path]:
    """Split the snapshot's rows, fit the feature pipeline on train only, and transform every split lazily."""
    tagged = data.map_batches(steps.split_batch, batch_format="pandas", fn_kwargs={"split": cfg.data.split}).materialize()
    splits = {name: tagged.filter(expr=col(SPLIT_COLUMN) == name) for name in SPLITS}
    # One pass counts every split and fits the features on the training rows (not a pass per split).
    stats = _gather(tagged.map_batches(steps.split_stats_batch, batch_format="pandas",
                                       fn_kwargs={"cfg": cfg.features, "task": cfg.model.task}))
    counts = {name: sum(s["counts"].get(name, 0) for s in stats) for name in SPLITS}
    if counts["train"] == 0:
        raise DataValidationError(f"the training split of snapshot {snapshot.snapshot_id} is empty; check "
                                  "data.split (its boundaries or fractions)")
    fitted = feats.fit_features([s["train"] for s in stats if s["train"]["rows"]], cfg.features, cfg.model.task)
    path = fitted.save(ws.features / f"{snapshot.snapshot_id}-{cfg.config_hash()}.json")
    raw = {name: ds.drop_columns([SPLIT_COLUMN]) for name, ds in splits.items()}
    transformed = {name: ds.map_batches(steps.transform_batch, batch_format="pandas",
                                        fn_kwargs={"fitted": fitted, "weight": cfg.features.weight_column})
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


@dataclass(frozen=True)
class DataBeforeRay:
    """The data stage of small file sources, run in this process before Ray starts: its frames, made into
    the Datasets training reads (``in_ray``) once Ray is up. Bad input (a misspelled column, a malformed
    row, a failed expectation) then fails in a second or two, with no cluster started."""

    small: in_process.InProcessData
    seconds: dict[str, float]

    def in_ray(self) -> DataStageResult:
        """The stage's result, its Datasets put in the object store now (needs a connected Ray)."""
        return _from_frames(self.small, self.seconds)


def run_data_stage_before_ray(cfg: PipelineConfig, progress: Progress | None = None) -> DataBeforeRay | None:
    """The data stage without Ray where it runs in this process (small file sources: ``in_process.wanted``);
    None where it needs Ray Data (``run_data_stage`` then does all of it inside Ray)."""
    if not in_process.wanted(cfg):
        return None
    say = progress or (lambda step, msg: None)
    ws, run_tag, seconds, t0 = Workspace(cfg.workdir_path).ensure(), _run_tag(cfg), {}, time.perf_counter()
    _check_columns(cfg, say)
    seconds["ingest"] = time.perf_counter() - t0  # the column check; reading is added to it
    small = in_process.run(cfg, ws, run_tag, say, seconds)
    return None if small is None else DataBeforeRay(small=small, seconds=seconds)


def _run_tag(cfg: PipelineConfig) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{cfg.config_hash()[:6]}"


def _check_columns(cfg: PipelineConfig, say: Progress) -> None:
    say("ingest", "checking the config's columns against the sources")
    problems = data_column_problems(cfg, lambda src, whole: source_columns(src, cfg, whole))
    if problems:
        raise config_error(problems, "against its data")


def _run_data_stage(cfg: PipelineConfig, progress: Progress | None) -> DataStageResult:
    say = progress or (lambda step, msg: None)
    ws = Workspace(cfg.workdir_path).ensure()
    run_tag = _run_tag(cfg)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    _check_columns(cfg, say)
    if in_process.wanted(cfg):
        seconds["ingest"] = time.perf_counter() - t0  # the column check; reading is added to it
        small = in_process.run(cfg, ws, run_tag, say, seconds)
        if small is not None:
            return _from_frames(small, seconds)
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
    clean = raw.map_batches(steps.clean_batch, batch_format="pandas", fn_kwargs={"cfg": cfg}).materialize()
    snapshot, reused, clean = run_snapshot(clean, cfg, ws, info, report_path)
    seconds["snapshot"] = time.perf_counter() - t

    say("features", "splitting and fitting features")
    t = time.perf_counter()
    raw_splits, datasets, counts, fitted, features_path = run_features(snapshot, clean, cfg, ws)
    seconds["features"] = time.perf_counter() - t
    return DataStageResult(snapshot=snapshot, report=report, report_path=report_path, split_rows=counts,
                           features=fitted, features_path=features_path, datasets=datasets, raw=raw_splits,
                           reused_snapshot=reused, seconds=seconds)


def _from_frames(small: in_process.InProcessData, seconds: dict[str, float]) -> DataStageResult:
    """The in-process path's frames as the Datasets training and evaluation read (put in the object store
    once; no task runs)."""
    return DataStageResult(
        snapshot=small.snapshot, report=small.report, report_path=small.report_path, split_rows=small.counts,
        features=small.fitted, features_path=small.features_path,
        datasets={name: ray.data.from_pandas(frame) for name, frame in small.transformed.items()},
        raw={name: ray.data.from_pandas(frame) for name, frame in small.raw.items()}, frames=small.raw,
        reused_snapshot=small.reused, seconds=seconds)
