"""Ray Tune over Ray Train: a search space from the config, ASHA early stopping, Optuna (or random) search.

Each trial is a full Ray Train run (same loop, same checkpoints) whose per-epoch reports reach Tune
through Ray's ``TuneReportCallback``; ASHA stops trials whose validation loss lags at a rung. Every
trial is also an MLflow run (Ray's ``MLflowLoggerCallback``), nested under the pipeline's run.

Example::

    tuned = run_tuning(cfg, data, run_name="flights-...", registry=reg, parent_run_id=run_id)
    tuned.best_overrides, tuned.total_epochs
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from raymlops.config import ChoiceDim, IntDim, PipelineConfig, UniformDim
from raymlops.data.stage import DataStageResult
from raymlops.errors import TrainingError
from raymlops.model.contract import ModelSpec
from raymlops.training.trainer import TrainingResult, build_trainer, model_spec, training_result, workers_for
from raymlops.workspace import Workspace

_PRIMITIVE = (str, int, float, bool, type(None))
_TRIAL_CPU = 0.01
_FREE_CPU_WAIT_S = 30.0


@dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    epochs: int
    best_val_loss: float
    status: str


@dataclass(frozen=True)
class TuningResult:
    best: TrainingResult
    best_overrides: dict[str, Any]
    trials: list[TrialSummary]
    max_epochs: int

    @property
    def total_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)


def search_space(cfg: PipelineConfig) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Tune distributions, plus lookup tables for choices Optuna cannot hold (lists: sampled by index)."""
    space: dict[str, Any] = {}
    lookups: dict[str, list[Any]] = {}
    grid = cfg.tuning.search_alg == "grid"  # config validation has refused continuous dimensions
    for name, dim in cfg.search_space().items():
        if isinstance(dim, UniformDim):
            space[name] = (tune.loguniform if dim.type == "loguniform" else tune.uniform)(dim.low, dim.high)
        elif isinstance(dim, IntDim):
            space[name] = (tune.grid_search(list(range(dim.low, dim.high + 1))) if grid
                           else tune.randint(dim.low, dim.high + 1))
        elif isinstance(dim, ChoiceDim):
            values = dim.values
            if not all(isinstance(v, _PRIMITIVE) for v in dim.values):
                lookups[name] = dim.values
                values = list(range(len(dim.values)))
            space[name] = tune.grid_search(values) if grid else tune.choice(values)
    return space, lookups


def _resolve(params: dict[str, Any], lookups: dict[str, list[Any]]) -> dict[str, Any]:
    return {k: (lookups[k][v] if k in lookups else v) for k, v in params.items()}


class _ReleaseStoppedTrialResources(tune.Callback):
    """Remove the Ray Train placement group of a trial that Tune stopped or lost.

    Ray 2.60 leaks it when a scheduler such as ASHA terminates a trial running Train V2 (ray#54305),
    and the next trial then waits forever for CPUs. Each worker reports its group's id with its metrics.
    """

    def _release(self, trial) -> None:
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        pg_hex = (trial.last_result or {}).get("placement_group_id")
        if not pg_hex:
            return
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex))))
        except Exception:  # already removed by Train itself when the run ended normally
            pass

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._release(trial)


class _StallStopper(tune.Stopper):
    """Ends the search when no trial has reported for ``stall_s`` seconds, so that a trial waiting forever
    for CPUs (held by something outside the search) becomes an error that says so instead of a hang."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s, self.last = stall_s, time.monotonic()
        self.stalled_for: float | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.last = time.monotonic()
        return False

    def stop_all(self) -> bool:
        idle = time.monotonic() - self.last
        if idle > self.stall_s and self.stalled_for is None:
            self.stalled_for = idle
        return self.stalled_for is not None


def _held_resources() -> str:
    """What holds this cluster's CPUs now: free CPUs and the live placement groups' bundles."""
    from ray.util.placement_group import placement_group_table

    groups = [f"{pg_id[:8]} {pg['state']} {pg['bundles']}" for pg_id, pg in placement_group_table().items()
              if pg.get("state") not in ("REMOVED",)]
    free = ray.available_resources().get("CPU", 0.0)
    return (f"{free:g} of {ray.cluster_resources().get('CPU', 0.0):g} CPUs free; placement groups: "
            f"{'; '.join(groups) or 'none'}")


def concurrent_trials(wanted: int, need: float, total_cpus: float, free_cpus: float) -> int:
    """Trials to run at once: as many as fit in the CPUs free now (each holds ``need``), at most ``wanted``.
    Free, not total: a trial started beside CPUs that others hold would reserve its sliver and wait; 0
    when not even one fits."""
    fits = int(min(total_cpus, free_cpus) // need + 1e-9)
    return min(wanted, fits)


def _trial(params: dict[str, Any], *, cfg: PipelineConfig, data: DataStageResult, run_name: str,
           storage: str, lookups: dict[str, list[Any]], spec: ModelSpec) -> None:
    trial_id = tune.get_context().get_trial_id()
    # No retries inside a trial: when Tune stops a trial, _ReleaseStoppedTrialResources removes its
    # placement group, and a controller allowed to retry would start a new group that outlives the trial
    # (seen with fast controller polls: the next test waited forever for CPUs). A trial whose worker
    # fails ends as an errored trial; the search goes on with the others.
    trainer = build_trainer(cfg, data, f"{run_name}-{trial_id}", Path(storage), overrides=_resolve(params, lookups),
                            callbacks=[TuneReportCallback()], spec=spec,
                            workers=workers_for(cfg, data, tuning=True), max_failures=0)
    trainer.fit()
    _let_tune_take_the_last_report()


def _let_tune_take_the_last_report(timeout_s: float = 60.0) -> None:
    """Return from a trial only once its main thread has taken every report Ray Train relayed to it.

    Ray 2.60's Train-in-Tune hand-off can deadlock at a trial's end. ``TuneReportCallback`` relays each
    report through a one-slot queue actor; the trial's main thread takes it from there and then puts it on
    the session's one-slot result queue, which only that same thread empties. When the trial function
    returns while the last relayed report still waits (the main thread busy with the one before, logging
    it to MLflow), the function's own end-of-trial result fills the result queue first, and the main
    thread then blocks forever putting the relayed report behind it: no trial reports again, every CPU
    is free, and the search ends on ``tuning.stall_timeout_s`` (found with py-spy on a stalled ASHA test).
    Waiting here until both queues are empty, and staying empty for a moment, lets the main thread take
    the last report and pass it on first. It reads the session's private queues: no public API says when
    the hand-off is done.
    """
    from ray.train._internal.session import get_session

    session = get_session()
    relay = getattr(session, "_inter_actor_queue", None)
    if relay is None:
        return
    deadline = time.monotonic() + timeout_s
    settled = 0
    while time.monotonic() < deadline and settled < 2:  # empty twice, 0.2 s apart: past the put as well
        settled = settled + 1 if relay.empty() and session.result_queue.empty() else 0
        time.sleep(0.2)


@contextmanager
def _tracking_env_kept() -> Iterator[None]:
    """Undo what Ray's MLflowLoggerCallback does to this process: it calls ``mlflow.set_tracking_uri``,
    which exports MLFLOW_TRACKING_URI, so every later pipeline in the process (and every subprocess)
    would track into this run's store instead of its own workdir's."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    before = os.environ.get("MLFLOW_TRACKING_URI")
    # It sets the registry URI too (a module global and MLFLOW_REGISTRY_URI): a later MlflowClient without
    # registry_uri would then read and write another store's registry.
    registry_before, registry_env_before = registry_utils._registry_uri, os.environ.get("MLFLOW_REGISTRY_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None: back to "not set", and the variable is removed
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        registry_utils._registry_uri = registry_before
        if registry_env_before is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        else:
            os.environ["MLFLOW_REGISTRY_URI"] = registry_env_before


def run_tuning(cfg: PipelineConfig, data: DataStageResult, run_name: str, *, tracking_uri: str,
               experiment: str, parent_run_id: str | None) -> TuningResult:
    ws = Workspace(cfg.workdir_path).ensure()
    t = cfg.tuning
    started = time.perf_counter()
    data = dataclasses.replace(data, datasets={k: data.datasets[k].materialize() for k in ("train", "validation")})
    space, lookups = search_space(cfg)
    search_alg = None  # random and grid: Tune's default generator (a seeded one would ignore max_concurrent_trials)
    if t.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.training.seed)
    # ASHA counts reports: an epoch for the MLP, a checkpoint (every checkpoint_every rounds) for trees.
    max_t = report_budget(cfg)
    scheduler = ASHAScheduler(max_t=max_t, grace_period=t.grace_period, reduction_factor=t.reduction_factor)
    spec = model_spec(cfg, data)
    # Each trial holds a sliver of CPU plus its workers' CPUs; more concurrent trials than fit would
    # reserve their slivers and then wait forever for worker CPUs.
    need = workers_for(cfg, data, tuning=True) * cfg.training.cpus_per_worker + _TRIAL_CPU
    deadline = time.monotonic() + _FREE_CPU_WAIT_S  # tasks of the data stage may still be letting go of theirs
    while True:
        concurrency = concurrent_trials(t.max_concurrent_trials, need, ray.cluster_resources().get("CPU", 0.0),
                                        ray.available_resources().get("CPU", 0.0))
        if concurrency or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if concurrency == 0:
        raise TrainingError(f"tuning needs {need:g} CPUs for one trial (training.cpus_per_worker x workers); "
                            f"{_held_resources()}. Free them, or lower training.cpus_per_worker")
    stopper = _StallStopper(t.stall_timeout_s)
    trainable = tune.with_resources(  # the trial process itself needs (almost) no CPU: its Train workers do
        tune.with_parameters(_trial, cfg=cfg, data=data, run_name=run_name, storage=str(ws.checkpoints),
                             lookups=lookups, spec=spec), {"CPU": _TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_loss", mode="min", scheduler=scheduler, search_alg=search_alg,
                                    num_samples=t.num_samples, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(
            name=f"{run_name}-tune", storage_path=str(ws.checkpoints), verbose=0, stop=stopper,
            callbacks=[_ReleaseStoppedTrialResources(), MLflowLoggerCallback(tracking_uri=tracking_uri, registry_uri=tracking_uri,
                                            experiment_name=experiment, save_artifact=False,
                                            tags={"mlflow.parentRunId": parent_run_id} if parent_run_id else None)]),
    )
    with _tracking_env_kept():
        grid = tuner.fit()
    if stopper.stalled_for is not None:
        raise TrainingError(f"tuning stopped: no trial reported for {stopper.stalled_for:.0f} s "
                            f"(tuning.stall_timeout_s {t.stall_timeout_s:g}); {_held_resources()}")
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        epochs = int(len(df)) if df is not None else 0
        best = float(df["val_loss"].min()) if df is not None and "val_loss" in df else float("nan")
        trials.append(TrialSummary(trial_id=str(r.metrics.get("trial_id", r.path)),
                                   params=_resolve({k: r.config[k] for k in space}, lookups),
                                   epochs=epochs, best_val_loss=best, status="error" if r.error else "ok"))
    try:
        best_result = grid.get_best_result(metric="val_loss", mode="min", scope="all")
    except RuntimeError as exc:
        raise TrainingError(f"no tuning trial finished an epoch: {exc}") from exc
    ckpt = best_result.metrics.get(CHECKPOINT_PATH_KEY)
    if not ckpt:
        raise TrainingError("the best tuning trial reported no checkpoint")
    overrides = _resolve({k: best_result.config[k] for k in space}, lookups)
    best = training_result(cfg, run_name, Path(ckpt), spec, seconds=time.perf_counter() - started)
    return TuningResult(best=best, best_overrides=overrides, trials=trials, max_epochs=max_t)


def report_budget(cfg: PipelineConfig) -> int:
    """Most reports one trial makes: epochs (MLP), or checkpoints over the boosting rounds (trees)."""
    if cfg.model.family == "mlp":
        return cfg.training.epochs
    return -(-cfg.model.num_boost_round // cfg.model.checkpoint_every)
