"""``training`` and ``tuning``: Ray Train workers, epochs, checkpoints; the search space."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from raymlops.config.base import StrictModel


class TrainingConfig(StrictModel):
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="Ray Train workers. 0 trains in the driver's own process (Ray Train's local mode: no "
        "worker processes to start, the same checkpoints, resume and results). 'auto': 0 when the training split "
        "has at most local_max_rows rows, use_gpu is off and no tuning runs; 1 otherwise.")
    local_max_rows: int = Field(
        250_000, ge=0, description="The most training rows 'auto' trains in the driver (benchmarks/train_bench.py "
        "measures both sides).")
    use_gpu: bool = Field(False, description="Train on GPUs.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How workers are placed over nodes: PACK fills few nodes (fast collectives), SPREAD "
        "puts them on different nodes where possible (one lost node costs fewer workers).")
    epochs: int = Field(10, ge=1, description="Most epochs.")
    batch_size: int = Field(512, ge=1, description="Rows per step per worker.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without improvement before stopping.")
    max_failures: int = Field(2, ge=0, description="Worker failures survived by resuming from a checkpoint.")
    seed: int = Field(0, description="Seed for a reproducible CPU run.")
    refit: bool = Field(
        False, description="Once the gates pass, train again on the training, validation and test splits together, "
        "with the same settings for the rounds (epochs) early stopping kept, and register that model. The gates "
        "and evaluation.json judge the run before it (the refit has seen the test rows); the refit's own "
        "judge is live traffic (the loop's canary). Set by retraining.refit for the loop's retrains.")

    def resolved_workers(self, train_rows: int, tuning: bool = False) -> int:
        """Workers for a run on ``train_rows`` rows, 'auto' resolved: 0 (the driver) for a small CPU run.
        Tune's trials always get workers: they report to the scheduler through them."""
        if self.num_workers != "auto":
            return max(1, int(self.num_workers)) if tuning else int(self.num_workers)
        return 0 if train_rows <= self.local_max_rows and not self.use_gpu and not tuning else 1


class UniformDim(StrictModel):
    type: Literal["uniform", "loguniform"] = Field(description="Continuous; loguniform samples the exponent.")
    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound.")

    @model_validator(mode="after")
    def _ordered(self) -> UniformDim:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


class IntDim(StrictModel):
    type: Literal["int"] = Field(description="Integers in [low, high].")
    low: int = Field(description="Lower bound (inclusive).")
    high: int = Field(description="Upper bound (inclusive).")


class ChoiceDim(StrictModel):
    type: Literal["choice"] = Field(description="One of the listed values.")
    values: list[Any] = Field(min_length=1, description="The candidates.")


SearchDim = Annotated[UniformDim | IntDim | ChoiceDim, Field(discriminator="type")]


TUNABLE_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "mlp": ("learning_rate", "batch_size", "hidden_sizes", "dropout", "embedding_dim"),
    "lightgbm": ("learning_rate", "num_leaves", "max_depth", "min_child_samples", "feature_fraction",
                 "bagging_fraction", "bagging_freq", "lambda_l2", "max_bin"),
    "xgboost": ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda",
                "max_bin"),
}


TUNABLE = TUNABLE_BY_FAMILY["mlp"]


# What `tuning.enabled: true` searches when the config gives no search_space.
DEFAULT_SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "mlp": {"learning_rate": {"type": "loguniform", "low": 3e-4, "high": 1e-2},
            "hidden_sizes": {"type": "choice", "values": [[32], [64, 32], [128, 64]]},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.3}},
    "lightgbm": {"learning_rate": {"type": "loguniform", "low": 0.01, "high": 0.2},
                 "num_leaves": {"type": "int", "low": 15, "high": 127},
                 "min_child_samples": {"type": "int", "low": 5, "high": 100},
                 "feature_fraction": {"type": "uniform", "low": 0.6, "high": 1.0}},
    "xgboost": {"learning_rate": {"type": "loguniform", "low": 0.01, "high": 0.2},
                "max_depth": {"type": "int", "low": 3, "high": 10},
                "min_child_weight": {"type": "loguniform", "low": 0.5, "high": 20.0},
                "colsample_bytree": {"type": "uniform", "low": 0.6, "high": 1.0}},
}


class TuningConfig(StrictModel):
    enabled: bool = Field(False, description="Search hyperparameters with Ray Tune (each trial a Ray Train run).")
    num_samples: int = Field(8, ge=1, description="Trials.")
    max_concurrent_trials: int = Field(2, ge=1, description="Trials running at once.")
    search_alg: Literal["optuna", "random", "grid"] = Field(
        "optuna", description="How trial parameters are proposed. grid: every combination of the choice and int "
                              "dimensions, num_samples times over (1 unless num_samples is set).")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it can be stopped.")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor of trials per rung.")
    stall_timeout_s: float = Field(
        600, gt=0, description="Stop the search with an error naming what holds the CPUs when no trial has "
                               "reported for this long (a trial waiting forever for resources, not a slow one: "
                               "set it above your slowest epoch or report interval).")
    search_space: dict[str, SearchDim] = Field(
        default_factory=dict, description="Parameter -> distribution; the parameters depend on model.family: "
        + "; ".join(f"{f}: {', '.join(names)}" for f, names in TUNABLE_BY_FAMILY.items())
        + ". Empty with tuning enabled: the family's default space.")

    def planned_trials(self) -> int:
        """Trials a search runs: num_samples, or for grid num_samples times the number of combinations."""
        if self.search_alg != "grid":
            return self.num_samples
        combos = 1
        for dim in self.search_space.values():
            combos *= len(dim.values) if isinstance(dim, ChoiceDim) else dim.high - dim.low + 1
        return self.num_samples * combos

    @model_validator(mode="after")
    def _grid_is_finite(self) -> TuningConfig:
        if self.search_alg != "grid":
            return self
        continuous = [name for name, dim in self.search_space.items() if isinstance(dim, UniformDim)]
        if continuous:
            raise ValueError(f"search_alg grid needs finite dimensions (choice or int); {', '.join(continuous)} "
                             "is continuous: list its values as a choice, or use optuna/random")
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_pass_over_a_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("search_alg") == "grid" and "num_samples" not in data:
            return {**data, "num_samples": 1}  # one pass over the grid, not the default 8 passes
        return data
