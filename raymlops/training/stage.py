"""The training stage: train (or tune) -> package -> evaluate against the gates -> register.

Everything is tracked in one MLflow run (trials nest under it). The package is written and evaluated
locally first; only when every gate passes is it logged to MLflow and registered (as ``challenger``,
and as ``champion`` too when there is none yet and ``registry.promote_first`` is on). A failed gate
marks the run FAILED, leaves the registry as it was, and raises GateFailed naming the gates.

Only the driver talks to MLflow: trials through Ray's ``MLflowLoggerCallback``; a plain run's epochs in
one ``log_batch`` when training ends (they are also in every checkpoint). Ray's ``setup_mlflow`` is not
used: it would have each training worker open the tracking store, and the embedded store is a SQLite
file on the driver's machine that workers on other nodes cannot reach. The run also carries the
environment it ran in (``raymlops.system.*`` tags).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raymlops.config import DerivedFeature, PipelineConfig, TimeSplitConfig
from raymlops.data.features import add_derived
from raymlops.data.stage import DataStageResult
from raymlops.errors import GateFailed, RegistryError, TrainingError
from raymlops.model.batch import PREDICTION, predict_dataset, probability_columns
from raymlops.monitoring.drift import score_profile
from raymlops.monitoring.profiles import build_reference_profile
from raymlops.model.packaging import input_schema, load_package, manifest_sha256, write_package
from raymlops.registry.store import CHALLENGER, CHAMPION, MANIFEST_TAG, Registry, git_commit, is_unreachable
from raymlops.model.inputs import check_servable
from raymlops.model.metrics import compute_metrics, slice_metrics
from raymlops.training import evaluation
from raymlops.training.comparison import day_groups
from raymlops.training.trainer import (TrainingResult, refit_overrides, refit_rows, run_refit, run_training,
                                       workers_for)
from raymlops.training.tuning import TuningResult, run_tuning
from raymlops.workspace import Workspace, write_json_atomic

Progress = Callable[[str, str], None]
PROFILE_SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class TrainingStageResult:
    run_id: str
    run_name: str
    training: TrainingResult
    tuning: TuningResult | None
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    slices: dict[str, dict[str, dict[str, float]]]
    gates: list[evaluation.GateResult]
    package_dir: Path
    model_name: str
    version: str | None
    aliases: list[str] = field(default_factory=list)
    tracking_uri: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    refit: TrainingResult | None = None  # training.refit: the registered model, trained after the gates


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _score(cfg: PipelineConfig, data: DataStageResult,
           package_dir: Path) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """Predictions of a package on the raw test split, with labels, slice columns and (with a time split
    and ``evaluation.comparison.group_by_day``) each row's day, in the split's row order (two packages'
    scores are compared row by row)."""
    day = (cfg.data.split.column if isinstance(cfg.data.split, TimeSplitConfig)
           and cfg.evaluation.comparison.group_by_day else None)
    classes = data.features.target_classes  # as fitted: configured, or learned from the training split
    multiclass = cfg.model.task == "multiclass"
    outputs = probability_columns(classes) if multiclass else [PREDICTION]
    keep = list(dict.fromkeys([cfg.features.target, *outputs, *cfg.evaluation.slices, *([day] if day else [])]))
    pred = None
    if "test" in data.frames:  # the data stage ran in the driver: so does scoring (no actor to start)
        test = data.frames["test"]
        pred = np.asarray(load_package(package_dir, cfg.model.trusted_builders()).predict_frame(test), dtype=float)
        scored = pd.DataFrame({c: test[c] for c in keep if c not in outputs})  # no output column: a target may be "score"
    else:
        options = data.raw["test"].context.execution_options  # the context the scoring plan runs under
        preserve, options.preserve_order = options.preserve_order, True
        try:
            scored = predict_dataset(data.raw["test"], package_dir, trusted_builders=cfg.model.trusted_builders()
                                     ).select_columns(keep).to_pandas()
        finally:
            options.preserve_order = preserve
    days = day_groups(scored[day]) if day else None
    # Named classes are labelled by their indices; a multiclass model's scores are [rows, classes].
    labels = scored[cfg.features.target]
    y = np.asarray(data.features.encode_target(labels) if classes else labels, dtype=float)
    if pred is None:
        pred = scored[outputs].to_numpy(dtype=float) if multiclass else scored[PREDICTION].to_numpy(dtype=float)
    return (y, pred,
            {s: scored[s].astype(str).to_numpy() for s in cfg.evaluation.slices}, days)


def _reference_sample(data: DataStageResult) -> pd.DataFrame:
    """A seeded uniform sample of the whole training split (at most ``PROFILE_SAMPLE_ROWS``): drift is judged
    against everything the champion learned from. The first rows would be its oldest (January of a
    January-March split), and every later month would look drifted against them."""
    if "train" in data.frames:
        train = data.frames["train"]
        if len(train) <= PROFILE_SAMPLE_ROWS:
            return train.copy()
        return train.sample(n=PROFILE_SAMPLE_ROWS, random_state=0).sort_index()
    rows = int(data.split_rows.get("train", 0))
    ds = data.raw["train"]
    if rows > PROFILE_SAMPLE_ROWS:
        ds = ds.random_sample(min(1.0, 1.05 * PROFILE_SAMPLE_ROWS / rows), seed=0)
    return ds.limit(PROFILE_SAMPLE_ROWS).to_pandas()


def run_training_stage(cfg: PipelineConfig, data: DataStageResult, run_name: str,
                       progress: Progress | None = None, *, fitted: TrainingResult | None = None,
                       tags: dict[str, str] | None = None) -> TrainingStageResult:
    """``fitted``: a model already trained on ``data`` (the loop's chosen window, ``loop/windows.py``):
    evaluated, gated and registered like one trained here. ``tags`` go on the MLflow run."""
    say = progress or (lambda step, msg: None)
    if data.split_rows.get("test", 0) == 0:
        raise TrainingError("the test split is empty: nothing to evaluate on (check data.split)")
    if data.split_rows.get("validation", 0) == 0:
        raise TrainingError("the validation split is empty: early stopping needs it (check data.split)")
    # A version whose input schema cannot type requests would register, then fail at `raymlops serve`:
    # refuse it here, before anything is trained or registered (the error names the column).
    check_servable(input_schema(data.features, cfg.validation))
    ws = Workspace(cfg.workdir_path).ensure()
    reg = Registry.for_config(cfg)
    name = cfg.model_name
    seconds: dict[str, float] = {}
    lineage = {
        "raymlops.data_fingerprint": data.snapshot.snapshot_id,
        "raymlops.config_hash": cfg.config_hash(),
        "raymlops.code_version": git_commit(cfg.base_dir),
        "raymlops.snapshot_path": str(data.snapshot.path),
    }
    try:
        run_id = reg.start_run(cfg.name, run_name, tags={**lineage, "raymlops.run_name": run_name})
    except Exception as exc:
        if is_unreachable(exc):
            raise RegistryError(f"the MLflow tracking server at {reg.tracking_uri} cannot be reached, so no run "
                                f"was started: {_first_line(exc)}") from exc
        raise
    lineage["raymlops.run_id"] = run_id
    try:
        for stale in reg.end_interrupted_runs(cfg.name, run_name, resumed_by=run_id):
            say("resume", f"an earlier attempt of run {run_name!r} (MLflow run {stale[:12]}) died without "
                          "ending; marked KILLED, training resumes from its checkpoints")
        reg.set_tags(run_id, {**system_info(), **(tags or {})})
        reg.log_params(run_id, {**_flatten("model", cfg.model.model_dump(), {}),
                                **_flatten("training", cfg.training.model_dump(), {}),
                                "data.rows": data.snapshot.manifest.rows,
                                **{f"data.{k}_rows": v for k, v in data.split_rows.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"base_dir"}),
                                                                  sort_keys=False))
            for f in (Path(tmp) / "config.yaml", data.report_path, data.features_path):
                reg.log_artifact(run_id, f, "inputs")

        t0 = time.perf_counter()
        tuned: TuningResult | None = None
        if fitted is not None:
            trained = fitted
        elif cfg.tuning.enabled:
            say("tune", f"{cfg.tuning.planned_trials()} trials, ASHA, {cfg.tuning.search_alg} search")
            tuned = run_tuning(cfg, data, run_name, tracking_uri=reg.tracking_uri, experiment=cfg.name,
                               parent_run_id=run_id)
            trained = tuned.best
            reg.log_params(run_id, {f"tuned.{k}": v for k, v in tuned.best_overrides.items()})
            reg.set_tags(run_id, {"raymlops.tuning.total_epochs": str(tuned.total_epochs),
                                  "raymlops.tuning.trials": str(len(tuned.trials))})
        else:
            workers = workers_for(cfg, data)
            where = f"{workers} Ray Train worker(s)" if workers else "in this process (local mode)"
            say("train", f"{cfg.model.family}, {where}, up to " + (
                f"{cfg.training.epochs} epochs" if cfg.model.family == "mlp" else f"{cfg.model.num_boost_round} rounds"))
            trained = run_training(cfg, data, run_name)
        seconds["train"] = fitted.seconds if fitted is not None else time.perf_counter() - t0
        reg.log_metrics(run_id, trained.history)

        say("evaluate", "scoring the held-out test split")
        t0 = time.perf_counter()
        raw_sample = _reference_sample(data)
        sample = add_derived(raw_sample.copy(), [DerivedFeature(**d) for d in data.features.derived])
        profile = build_reference_profile(
            sample, [s.column for s in data.features.numeric], [s.column for s in data.features.categorical])
        package_dir = ws.root / "packages" / run_name / "model"
        package = dict(model_files=trained.model_files, fitted=data.features, spec=trained.spec,
                       model_config=cfg.model.model_copy(update={
                           k: v for k, v in (tuned.best_overrides if tuned else {}).items()
                           if k in type(cfg.model).model_fields}),
                       schema=input_schema(data.features, cfg.validation), lineage=lineage)
        _write_scored_package(cfg, package_dir, profile, package, raw_sample)
        y, pred, groups, days = _score(cfg, data, package_dir)
        metrics = compute_metrics(cfg.model.task, y, pred)
        slices = {s: slice_metrics(cfg.model.task, y, pred, g) for s, g in groups.items()}
        champion_version = reg.version_for_alias(name, CHAMPION)
        champion_metrics = None
        if champion_version is not None:
            say("evaluate", f"scoring champion v{champion_version} on the same test rows")
            champion_dir = reg.local_package(name, champion_version)
            cy, cpred, _, _ = _score(cfg, data, champion_dir)
            champion_metrics = compute_metrics(cfg.model.task, cy, cpred)
        comparisons = (evaluation.champion_comparisons(cfg.evaluation.gates, cfg.model.task, y, pred, cpred,
                                                       cfg.evaluation.comparison, groups=days)
                       if champion_metrics is not None and np.array_equal(y, cy) else {})
        gates = evaluation.evaluate_gates(cfg.evaluation.gates, metrics, champion_metrics, comparisons)
        seconds["evaluate"] = time.perf_counter() - t0
        reg.log_metrics(run_id, [{"epoch": 0, **{f"test_{k}": v for k, v in metrics.items()}}])
        report = {"metrics": metrics, "champion": {"version": champion_version, "metrics": champion_metrics},
                  "slices": slices, "gates": evaluation.as_plain(gates)}
        report_path = write_json_atomic(package_dir.parent / "evaluation.json", report)
        reg.log_artifact(run_id, report_path, "evaluation")

        failed = evaluation.failed(gates)
        if failed:
            reg.set_tags(run_id, {"raymlops.gates": "failed"})
            reg.end_run(run_id, "FAILED")
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            versus = (f"; champion v{champion_version} on the same rows: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in champion_metrics.items() if isinstance(v, float))
                      if champion_metrics else "")
            raise GateFailed("the candidate failed " + ", ".join(f"gate '{g.gate}' ({g.detail})" for g in failed)
                             + f"; nothing was registered. Its test metrics: {shown}{versus} (all in {report_path})",
                             run_id=run_id, failed=[g.gate for g in failed])

        refit = None
        if cfg.training.refit:
            t0 = time.perf_counter()
            rows, planned = refit_rows(data), refit_overrides(trained, tuned.best_overrides if tuned else None)
            say("refit", f"gates passed: training again on all {rows} rows (training, validation and test) for "
                + (f"{planned['num_boost_round']} rounds" if "num_boost_round" in planned else f"{planned['epochs']} epochs"))
            refit = run_refit(cfg, data, run_name, planned)
            gated_dir = package_dir.parent / "gated-model"  # kept: what the gates judged
            if gated_dir.exists():
                shutil.rmtree(gated_dir)
            package_dir.rename(gated_dir)
            package = {**package, "model_files": refit.model_files, "spec": refit.spec}
            _write_scored_package(cfg, package_dir, {k: v for k, v in profile.items() if k != "scores"},
                                  package, raw_sample)
            seconds["refit"] = time.perf_counter() - t0
            report["refit"] = {"rows": rows, **{k: planned[k] for k in ("num_boost_round", "epochs") if k in planned},
                               "seconds": round(seconds["refit"], 2), "gated_package": str(gated_dir),
                               "note": "metrics and gates are the gated run's, on test rows the refit has seen"}
            report_path = write_json_atomic(package_dir.parent / "evaluation.json", report)
            reg.log_artifact(run_id, report_path, "evaluation")
            reg.log_params(run_id, {f"refit.{k}": v for k, v in report["refit"].items() if k in ("rows", "num_boost_round", "epochs")})

        say("register", f"logging the package and registering a version of {name!r}")
        reg.log_artifacts(run_id, package_dir, "model")
        tags = {**lineage, "raymlops.gates": "passed", MANIFEST_TAG: manifest_sha256(package_dir),
                **{f"raymlops.metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
                **({"raymlops.refit": f"{report['refit']['rows']} rows"} if refit else {})}
        version = reg.register(name, run_id, "model", tags=tags,
                               description=f"{cfg.name}: data {data.snapshot.snapshot_id}, run {run_name}"
                               + (" (refitted on all its splits after the gates)" if refit else ""))
        aliases = [CHALLENGER]
        reg.move_alias(name, CHALLENGER, version, action="register", reason=f"passed gates in run {run_name}")
        if champion_version is None and cfg.registry.promote_first:
            reg.promote(name, version, reason="first version to pass the gates")
            aliases.append(CHAMPION)
        reg.set_tags(run_id, {"raymlops.gates": "passed", "raymlops.model_version": version})
        reg.end_run(run_id, "FINISHED")
    except GateFailed:
        raise
    except BaseException as exc:
        try:
            # The reason first, then the status: Ray may _exit this process in between (its raylet died),
            # and a run left RUNNING is one the supervising parent still tags and fails itself.
            reg.set_tags(run_id, {"raymlops.failure": (str(exc) or type(exc).__name__)[:5000]})
            reg.end_run(run_id, "FAILED")
        except Exception:  # the server may be the reason we are here; keep the first error
            pass
        if isinstance(exc, Exception) and is_unreachable(exc):
            where = ws.checkpoints / run_name
            raise RegistryError(
                f"the MLflow tracking server at {reg.tracking_uri} stopped answering during run {run_name!r} "
                f"({_first_line(exc)}). Nothing was registered; the training checkpoint is kept under {where}. "
                f"When the server is back, rerun with --run-name {run_name}: training resumes from the "
                "checkpoint and the gates and registration run again") from exc
        raise
    return TrainingStageResult(
        run_id=run_id, run_name=run_name, training=trained, tuning=tuned, metrics=metrics,
        champion_metrics=champion_metrics, slices=slices, gates=gates, package_dir=package_dir,
        model_name=name, version=version, aliases=aliases, tracking_uri=reg.tracking_uri, seconds=seconds,
        refit=refit)


def _write_scored_package(cfg: PipelineConfig, package_dir: Path, profile: dict[str, Any], package: dict[str, Any],
                          raw_sample: pd.DataFrame) -> None:
    """Write the package twice: the second time its profile holds the model's own scores on the reference
    sample (prediction drift is judged against them)."""
    for _ in range(2):
        if package_dir.exists():
            shutil.rmtree(package_dir)
        write_package(package_dir, profile=profile, **package)
        if "scores" not in profile:
            scores = load_package(package_dir, cfg.model.trusted_builders()).predict_frame(raw_sample)
            profile = {**profile, "scores": score_profile(scores)}


def system_info() -> dict[str, str]:
    """What the run ran on and with, as MLflow tags: enough to tell two runs' environments apart."""
    import os
    import platform
    import socket
    from importlib.metadata import PackageNotFoundError, version

    info = {"raymlops.system.python": platform.python_version(), "raymlops.system.platform": platform.platform(),
            "raymlops.system.host": socket.gethostname(), "raymlops.system.cpus": str(os.cpu_count())}
    for package in ("raymlops", "ray", "torch", "lightgbm", "xgboost", "mlflow", "pyarrow", "pandas"):
        try:
            info[f"raymlops.system.{package}"] = version(package)
        except PackageNotFoundError:
            info[f"raymlops.system.{package}"] = "not installed"
    try:
        import ray

        if ray.is_initialized():
            resources = ray.cluster_resources()
            info["raymlops.system.cluster_cpus"] = str(resources.get("CPU", 0))
            info["raymlops.system.cluster_gpus"] = str(resources.get("GPU", 0))
    except Exception:  # resources are a nicety; a run never fails for them
        pass
    return info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def slice_summary(by_value: dict[str, dict[str, float]], metric: str, most: int = 6) -> str:
    """One slice column's headline metric per value, worst first (the values a user checks first), e.g.
    ``auc: LGA 0.5412, JFK 0.5630, EWR 0.5801``; values with too few test rows were left out before."""
    if not by_value:
        return "no value has enough test rows"
    if not any(metric in m for m in by_value.values()):  # e.g. multiclass: its first metric instead
        metric = next(iter(next(iter(by_value.values()))), metric)
    lower_is_better = metric in ("rmse", "mae", "log_loss", "calibration_error")
    ranked = sorted(((v, m[metric]) for v, m in by_value.items() if metric in m),
                    key=lambda item: item[1], reverse=lower_is_better)
    shown = ", ".join(f"{v} {x:.4f}" for v, x in ranked[:most])
    return f"{metric}, worst first: {shown}" + (f" (+{len(ranked) - most} more)" if len(ranked) > most else "")


def summary_rows(result: TrainingStageResult) -> list[tuple[str, str]]:
    """What the CLI prints about the stage."""
    m = result.metrics
    keys = ["auc", "pr_auc", "log_loss", "accuracy", "f1", "calibration_error"] if "auc" in m else ["rmse", "mae", "r2"]
    final = result.training.final_metrics
    if "round" in final:  # boosted trees
        trained = ("rounds", f"{final['best_round']} kept of {final['round']} (best val_loss {final['best_val_loss']:.4f})")
    else:
        trained = ("epochs", f"{result.training.epochs_run} (final val_loss {final['val_loss']:.4f})")
    rows = [("run", f"{result.run_name} (MLflow run {result.run_id[:12]})"), trained,
            ("test metrics", ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m))]
    if result.tuning:
        rows.append(("tuning", f"{len(result.tuning.trials)} trials, {result.tuning.total_epochs} epochs in all "
                               f"(full search: {len(result.tuning.trials) * result.tuning.max_epochs}); best "
                               + json.dumps(result.tuning.best_overrides)))
    if result.champion_metrics:
        rows.append(("champion on same rows", ", ".join(f"{k} {result.champion_metrics[k]:.4f}" for k in keys
                                                        if k in result.champion_metrics)))
    for column, by_value in (result.slices or {}).items():
        rows.append((f"slice {column}", slice_summary(by_value, keys[0])))
    for g in result.gates:
        rows.append(("gate", f"{'PASS' if g.passed else 'FAIL'}  {g.gate}: {g.detail}"))
    if result.refit:
        done = result.refit.final_metrics
        rows.append(("refit", "registered: trained again on training, validation and test for "
                     + (f"{done['round']} rounds" if "round" in done else f"{result.refit.epochs_run} epochs")))
    rows.append(("registered", f"{result.model_name} v{result.version} ({', '.join(result.aliases)})"))
    rows.append(("MLflow", f"{result.tracking_uri}  (mlflow ui --backend-store-uri {result.tracking_uri})"))
    return rows
