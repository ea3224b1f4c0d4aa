"""Ray Train on the data stage's output: one run of the model family's trainer (TorchTrainer,
LightGBMTrainer or XGBoostTrainer), resumable by name.

Example::

    result = run_training(cfg, data_result, run_name="flights-20250101-120000")
    result.model_files  # {package file name: the best model's file in the last checkpoint}
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train

from raymlops.config import PipelineConfig
from raymlops.data.stage import DataStageResult
from raymlops.errors import ConfigError, TrainingError
from raymlops.model import checkpointing
from raymlops.model.contract import STATE, ModelSpec, WorkerConfig, get_family
from raymlops.workspace import Workspace


@dataclass(frozen=True)
class TrainingResult:
    run_name: str
    checkpoint_dir: Path
    model_files: dict[str, Path]
    spec: ModelSpec
    final_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def worker_config(cfg: PipelineConfig, spec: ModelSpec, overrides: dict[str, Any] | None = None, *,
                  fixed_rounds: bool = False, local_checkpoint_dir: str | None = None) -> WorkerConfig:
    """What each worker receives: the model and training sections with a trial's tuned values applied
    (validated again, so a tuned value of the wrong type fails here, in the driver)."""
    model, training = cfg.model.model_dump(), cfg.training.model_dump()
    for key, value in (overrides or {}).items():
        (model if key in model else training)[key] = value
    return WorkerConfig(spec=spec, model=type(cfg.model).model_validate(model),
                        training=type(cfg.training).model_validate(training), target=cfg.features.target,
                        fixed_rounds=fixed_rounds, local_checkpoint_dir=local_checkpoint_dir,
                        weight=cfg.features.weight_column)


def model_spec(cfg: PipelineConfig, data: DataStageResult) -> ModelSpec:
    """The model's inputs, and for regression the training target's mean and std (the MLP learns the
    standardised target; predictions are mapped back)."""
    target = cfg.features.target
    if cfg.model.task == "multiclass":
        if "train" in data.frames:  # the raw split in the driver: class names
            names = sorted(set(data.frames["train"][target].astype(str)))
        else:  # the transformed split: class indices
            names = [data.features.target_classes[int(i)]
                     for i in sorted(data.datasets["train"].select_columns([target]).unique(target))]
        if len(names) < 2:
            raise ConfigError(f"features.target: the training split holds only class {names} of "
                              f"{data.features.target_classes}; a multiclass model needs at least two classes "
                              "in it: move data.split's boundaries or add data")
    if cfg.model.task != "regression":
        return ModelSpec.from_features(data.features, cfg.model.task)
    column = data.datasets["train"].select_columns([target]).to_pandas()[target].astype("float64")
    mean, std = float(column.mean()), float(column.std(ddof=0))
    return ModelSpec.from_features(data.features, cfg.model.task, target_mean=mean,
                                   target_std=std if std > 0 else 1.0)


def workers_for(cfg: PipelineConfig, data: DataStageResult, tuning: bool = False) -> int:
    """Ray Train workers for this run (``TrainingConfig.resolved_workers`` on its training split)."""
    return cfg.training.resolved_workers(data.split_rows.get("train", 0), tuning=tuning)


def build_trainer(cfg: PipelineConfig, data: DataStageResult, run_name: str, storage: Path,
                  overrides: dict[str, Any] | None = None, callbacks: list | None = None,
                  spec: ModelSpec | None = None, workers: int | None = None,
                  max_failures: int | None = None, fixed_rounds: bool = False) -> Any:
    spec = spec or model_spec(cfg, data)
    family = get_family(cfg.model.family)
    t = cfg.training
    workers = workers_for(cfg, data) if workers is None else workers
    # In local mode the loop writes and finds its own checkpoints (model/checkpointing.py).
    config = worker_config(cfg, spec, overrides, fixed_rounds=fixed_rounds,
                           local_checkpoint_dir=str(storage / run_name) if workers == 0 else None)
    return family.trainer_class()(
        family.worker(),
        train_loop_config=config.loop_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=t.use_gpu, placement_strategy=t.placement_strategy,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures if max_failures is None else max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or []),
        # Materialised first: when the workers hold every CPU (2 workers on 2 cores), a lazy dataset's
        # transform tasks could never be scheduled and training would wait forever.
        datasets={"train": data.datasets["train"].materialize(),
                  "validation": data.datasets["validation"].materialize()},
        # One worker reads every row anyway: unsplit, its epochs iterate the materialised Dataset itself,
        # without the split coordinator actor a split starts (seconds before the first step on 2 cores).
        dataset_config=ray.train.DataConfig(
            datasets_to_split=[] if workers == 1 else "all" if family.split_validation else ["train"]),
    )


def read_checkpoint_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint_dir) / STATE).read_text())


def run_training(cfg: PipelineConfig, data: DataStageResult, run_name: str,
                 overrides: dict[str, Any] | None = None, fixed_rounds: bool = False) -> TrainingResult:
    """Train, or resume the run of that name from its last checkpoint; returns where the model is."""
    ws = Workspace(cfg.workdir_path).ensure()
    started = time.perf_counter()
    spec = model_spec(cfg, data)
    workers = workers_for(cfg, data)
    trainer = build_trainer(cfg, data, run_name, ws.checkpoints, overrides, spec=spec, workers=workers,
                            fixed_rounds=fixed_rounds)
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray raises TrainingFailedError subclasses and others
        raise TrainingError(f"training run {run_name!r} failed: {exc}. Its last checkpoint (if any) is under "
                            f"{ws.checkpoints / run_name}; rerun with --run-name {run_name} to resume.") from exc
    checkpoint = Path(result.checkpoint.path) if result.checkpoint is not None else None
    if checkpoint is None and workers == 0:
        # A rerun of a local-mode run that had trained every epoch (it died registering, say) resumes with
        # nothing left to train and reports nothing; Ray Train's controller would hand back the last
        # checkpoint, local mode does not. The run's own newest checkpoint is its result.
        checkpoint = checkpointing.newest_local_checkpoint(ws.checkpoints / run_name)
    if checkpoint is None:
        raise TrainingError(f"training run {run_name!r} reported no checkpoint (no epoch completed)")
    return training_result(cfg, run_name, checkpoint, spec, seconds=time.perf_counter() - started)


def training_result(cfg: PipelineConfig, run_name: str, ckpt_dir: Path, spec: ModelSpec,
                    seconds: float) -> TrainingResult:
    """What a finished run (or the best tuning trial) left in its checkpoint."""
    state = read_checkpoint_state(ckpt_dir)
    return TrainingResult(
        run_name=run_name, checkpoint_dir=ckpt_dir, model_files=get_family(cfg.model.family).checkpoint_files(ckpt_dir),
        spec=spec, final_metrics=state["metrics"], history=state.get("history", [state["metrics"]]), seconds=seconds)


def refit_overrides(trained: TrainingResult, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a refit trains for: the rounds (boosting) or epochs (MLP) that the gated run's early stopping
    kept, with the run's other overrides (a tuned retrain's best trial)."""
    final = trained.final_metrics
    if "best_round" in final:
        return {**(overrides or {}), "num_boost_round": max(1, int(final["best_round"]))}
    history = trained.history or [final]
    best = min(history, key=lambda h: h["val_loss"])
    return {**(overrides or {}), "epochs": int(best["epoch"]) + 1}


REFIT_SPLITS = ("train", "validation", "test")


def refit_rows(data: DataStageResult) -> int:
    """Rows a refit trains on: every split's."""
    return sum(int(data.split_rows.get(s, 0)) for s in REFIT_SPLITS)


def refit_data(data: DataStageResult) -> DataStageResult:
    """The data of a refit: the training, validation and test splits together as its training split (the
    validation split is still scored each round, but only as a record: nothing stops early)."""
    parts = [data.datasets[s] for s in REFIT_SPLITS if s in data.datasets]
    return dataclasses.replace(data, datasets={**data.datasets, "train": parts[0].union(*parts[1:])},
                               split_rows={**data.split_rows, "train": refit_rows(data)})


def run_refit(cfg: PipelineConfig, data: DataStageResult, run_name: str, planned: dict[str, Any]) -> TrainingResult:
    """The gated run's model trained once more on all its splits (``training.refit``) with ``planned``
    (``refit_overrides``), as run ``<run_name>-refit`` (resumable by name like any run)."""
    return run_training(cfg, refit_data(data), f"{run_name}-refit", planned, fixed_rounds=True)
