"""What the gradient-boosted tree families share on a Ray Train worker: the shard as arrays, and the
round-by-round bookkeeping (early stopping, a checkpoint every N rounds, resume).

Early stopping is ours rather than the libraries' callbacks so that its state (best round, best loss,
rounds without improvement) is in every checkpoint: a run resumed after a killed worker stops at the
same round an undisturbed run would. Every worker computes the same validation loss (LightGBM: each
worker scores the whole validation split; XGBoost: its metrics are summed over workers), so every
worker takes the same decision and makes the same number of reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raymlops.model import checkpointing
from raymlops.model.contract import STATE, ModelSpec, WorkerConfig, feature_matrix

MODEL_KEYS_FOR_STATE = ("num_boost_round", "early_stopping_rounds", "checkpoint_every")


def shard_arrays(name: str, spec: ModelSpec, target: str,
                 weight: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """This worker's shard of a dataset as (features float32 [n, k], target float32 [n], the rows'
    ``weight`` column float32 [n] or None)."""
    import ray.train

    xs, ys, ws = [], [], []
    for batch in ray.train.get_dataset_shard(name).iter_batches(batch_size=65_536, batch_format="numpy"):
        xs.append(feature_matrix(batch, spec))
        ys.append(np.asarray(batch[target], dtype=np.float32))
        if weight:
            ws.append(np.asarray(batch[weight], dtype=np.float32))
    if not xs:
        return (np.zeros((0, len(spec.columns)), np.float32), np.zeros(0, np.float32),
                np.zeros(0, np.float32) if weight else None)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws) if weight else None


@dataclass
class RoundState:
    """Where boosting stands; saved as ``state.json`` in every checkpoint."""

    rounds: int = 0                  # rounds completed
    best_iteration: int = -1         # 0-based round with the lowest validation loss
    best_val_loss: float = math.inf
    bad_rounds: int = 0
    stopped: bool = False
    started_at_round: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def observe(self, iteration: int, val_loss: float, patience: int, fixed: bool = False) -> bool:
        """Record round ``iteration``'s validation loss; True when boosting should stop here. With
        ``fixed`` (a refit: its validation rows are among its training rows) every round counts as the
        best and nothing stops early, so the model is the one after the last round."""
        self.rounds = iteration + 1
        if fixed or val_loss < self.best_val_loss - 1e-12:
            self.best_val_loss, self.best_iteration, self.bad_rounds = val_loss, iteration, 0
        else:
            self.bad_rounds += 1
        self.stopped = self.bad_rounds >= patience
        return self.stopped

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RoundState:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def resume_state(model_file: str, config: WorkerConfig) -> tuple[RoundState, bytes | None]:
    """The state and the full model's bytes from this run's last checkpoint, if any."""
    checkpoint = checkpointing.resume_checkpoint(config.local_checkpoint_dir)
    if not checkpoint:
        return RoundState(), None
    with checkpoint.as_directory() as d:
        state = RoundState.from_json(Path(d, STATE).read_text())
        state.started_at_round = state.rounds
        return state, Path(d, model_file).read_bytes()


class RoundReporter:
    """Called after every boosting round: early stopping, and every ``every`` rounds (and at the end)
    a report to Ray Train with a checkpoint (rank 0 writes the files; every rank reports)."""

    def __init__(self, state: RoundState, *, total_rounds: int, every: int, patience: int,
                 save: Callable[[Path, RoundState], None], config: WorkerConfig) -> None:
        self.state, self.total_rounds, self.every, self.patience, self.save = state, total_rounds, every, patience, save
        self.config = config

    def after_round(self, iteration: int, val_loss: float, extra: dict[str, Any]) -> bool:
        """True when boosting should stop (early stopping)."""
        import ray
        import ray.train

        stop = self.state.observe(iteration, val_loss, self.patience, fixed=self.config.fixed_rounds)
        last = iteration + 1 >= self.total_rounds
        if not (stop or last or (iteration + 1) % self.every == 0):
            return stop
        metrics = {"epoch": iteration, "round": iteration + 1, "val_loss": float(val_loss),
                   "best_val_loss": float(self.state.best_val_loss), "best_round": self.state.best_iteration + 1,
                   "started_at_epoch": self.state.started_at_round, "started_at_round": self.state.started_at_round,
                   "early_stopped": bool(stop and not last), **extra,
                   # Lets the tuner free this worker group's placement group if Tune stops the trial (ray#54305).
                   "placement_group_id": ray.get_runtime_context().get_placement_group_id() or ""}
        self.state.metrics = metrics
        self.state.history.append(metrics)
        def write(folder: Path) -> None:
            self.save(folder, self.state)
            (folder / STATE).write_text(self.state.to_json())

        checkpointing.report(self.config.local_checkpoint_dir, iteration + 1, metrics, write)
        return stop


def boosting_threads(training: dict[str, Any]) -> int:
    """Threads per worker: the CPUs it reserved (more would fight the other workers for cores)."""
    return max(1, int(training.get("cpus_per_worker", 1)))
