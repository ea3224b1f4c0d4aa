"""The pipeline config: one YAML file, validated by pydantic, is the single source of truth.

Every stage reads its own section. Models are strict (unknown keys are errors) and frozen.
``load_config(path)`` parses YAML, validates the schema, runs the cross-field checks, and raises one
``ConfigError`` that lists every problem with its YAML path and line.

Example::

    cfg = load_config("configs/smoke.yaml")
    cfg.data.sources[0].path
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raymlops.errors import ConfigError

ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- data
class CsvOptions(StrictModel):
    delimiter: str = Field(",", description="Field delimiter, one character.", min_length=1, max_length=1)
    null_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "NULL", "null", "NaN", "nan"],
        description="Cell texts read as missing.",
    )


class FileSourceConfig(StrictModel):
    """Files read in parallel, one Ray task per file; each row keeps its file and row number for reports."""

    type: Literal["csv", "parquet", "json"] = Field(description="File format; json means JSON lines.")
    name: str = Field(description="Name other parts of the config use to refer to this source.")
    path: str | list[str] = Field(
        description="A path, glob, or object-store URI (s3://bucket/key, gs://...), or a list of them. "
        "Relative paths are resolved against the config file's folder."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Options for the pyarrow filesystem of a URI, e.g. endpoint_override, region, scheme.",
    )
    columns: list[str] | None = Field(None, description="Read only these columns (default: all).")
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV parsing options.")


def _url_holds_password(url: str) -> bool:
    """``user:password@`` or a ``?password=`` (``passwd``, ``pwd``) in a database URL."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    query = {k.lower() for k in parse_qs(parts.query, keep_blank_values=True)}
    return parts.password is not None or bool(query & {"password", "passwd", "pwd"})


class SqlSourceConfig(StrictModel):
    """A query read with ``ray.data.read_sql``: SQLite or PostgreSQL."""

    type: Literal["sql"] = Field(description="A SQL query.")
    name: str = Field(description="Name other parts of the config use to refer to this source.")
    url: str = Field(
        description="sqlite:///relative/or/absolute.db or postgresql://user@host:port/dbname. "
        "Never put a password here: use password_env."
    )
    query: str = Field(description="The SELECT statement to run.")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the database password."
    )

    @model_validator(mode="after")
    def _no_password_in_url(self) -> SqlSourceConfig:
        """A password in the URL would land in configs, logs and MLflow params; refused at load time."""
        if _url_holds_password(self.url):
            raise ValueError(f"source {self.name!r}: the url holds a password; remove it and name the environment "
                             "variable that holds it in password_env")
        return self


SourceConfig = Annotated[FileSourceConfig | SqlSourceConfig, Field(discriminator="type")]


class JoinConfig(StrictModel):
    """A broadcast join of a small source onto the base table (the right side must fit in memory)."""

    right: str = Field(description="Name of the source joined onto the base table.")
    keys: list[str] = Field(min_length=1, description="Key columns present in both tables.")
    how: Literal["left", "inner"] = Field("left", description="left keeps unmatched base rows.")


class CleaningConfig(StrictModel):
    drop_duplicates: bool = Field(True, description="Drop exact duplicate rows (all columns equal).")
    drop_columns: list[str] = Field(default_factory=list, description="Columns removed before the snapshot.")


class RandomSplitConfig(StrictModel):
    """Rows go to splits by a seeded hash of their content: stable whatever the partitioning."""

    type: Literal["random"] = "random"
    seed: int = Field(0, description="Seed of the split hash.")
    train: float = Field(0.8, gt=0, lt=1, description="Share of rows in the training split.")
    validation: float = Field(0.1, ge=0, lt=1, description="Share of rows in the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of rows in the test split.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> RandomSplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        return self


class TimeSplitConfig(StrictModel):
    """Later periods are held out: train < validation_start <= validation < test_start <= test."""

    type: Literal["time"] = "time"
    column: str = Field(description="A timestamp or date column.")
    validation_start: str = Field(description="ISO date/time where the validation split begins.")
    test_start: str = Field(description="ISO date/time where the test split begins.")


SplitConfig = Annotated[RandomSplitConfig | TimeSplitConfig, Field(discriminator="type")]


class DataConfig(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1, description="Where the data comes from.")
    base: list[str] | None = Field(
        None, description="Sources unioned into the base table (default: the first source)."
    )
    joins: list[JoinConfig] = Field(default_factory=list, description="Sources joined onto the base table.")
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Cleaning before the snapshot.")
    split: SplitConfig = Field(default_factory=RandomSplitConfig, description="How rows are split.")
    in_process_max_mb: float = Field(
        64.0, ge=0, description="File sources up to this many MiB in all (as stored) are read and prepared in "
        "the driver, with the same batch functions and the same snapshot as through Ray Data, which starts "
        "more slowly than small data takes; 0 always uses Ray Data. SQL sources always use Ray Data.")


# ----------------------------------------------------------------------------------- validation
class ColumnExpectation(StrictModel):
    type: ColumnType | None = Field(None, description="Expected type; cells that cannot be read as it fail.")
    nullable: bool = Field(True, description="Whether missing values are allowed at all.")
    max_null_fraction: float | None = Field(None, ge=0, le=1, description="Most missing values allowed, 0..1.")
    min: float | str | None = Field(None, description="Smallest allowed value (inclusive).")
    max: float | str | None = Field(None, description="Largest allowed value (inclusive).")
    allowed: list[str | int | float | bool] | None = Field(None, description="The only values allowed.")
    unique: bool = Field(False, description="No value may appear twice (over the whole dataset).")
    request_bounds: bool = Field(
        False, description="Refuse requests outside min/max/allowed too (HTTP 422). By default those bound the "
        "data a model trains on only: a request outside them is served, and the monitor measures it as drift.")


class RowCountExpectation(StrictModel):
    min: int | None = Field(None, ge=0, description="Fewest rows accepted.")
    max: int | None = Field(None, ge=0, description="Most rows accepted.")


class ValidationConfig(StrictModel):
    columns: dict[str, ColumnExpectation] = Field(default_factory=dict, description="Expectations per column.")
    row_count: RowCountExpectation = Field(default_factory=RowCountExpectation, description="Row count bounds.")
    require_declared_columns: bool = Field(True, description="A declared column missing from the data fails.")
    max_examples: int = Field(5, ge=1, le=100, description="Example rows kept per failed check.")


# ------------------------------------------------------------------------------------- features
class NumericFeature(StrictModel):
    column: str = Field(description="Input column (raw or derived).")
    impute: Literal["mean", "zero"] = Field("mean", description="Value used for missing cells.")
    scale: Literal["standard", "none"] = Field("standard", description="Standardise with the training mean/std.")


class CategoricalFeature(StrictModel):
    column: str = Field(description="Input column (raw or derived).")
    encoding: Literal["index", "onehot"] = Field(
        "index", description="index: integer ids for embeddings (0 = unknown); onehot: one column per category."
    )
    max_categories: int = Field(100, ge=1, description="Most frequent categories kept; the rest map to unknown.")
    min_frequency: int = Field(1, ge=1, description="Categories seen fewer times in training map to unknown.")


class DerivedFeature(StrictModel):
    name: str = Field(description="Name of the new column.")
    source: str = Field(description="A timestamp column it is derived from.")
    kind: Literal["hour", "day_of_week", "month", "day_of_year"] = Field(description="What to extract.")


class FeaturesConfig(StrictModel):
    target: str = Field(description="The label column.")
    target_classes: list[str] = Field(
        default_factory=list,
        description="A classifier's class names in the order the model numbers them (class i is the label value "
                    "target_classes[i]; the HTTP response names them and /v1/feedback takes them). Optional: "
                    "without it the names are fitted from the training split's target (numerically for "
                    "integers, False before True, else alphabetically), and a binary target labelled 0/1 "
                    "keeps its numbers. For model.task classification give two, negative then positive "
                    "(the score is the second's probability); for multiclass three or more.")
    numeric: list[NumericFeature] = Field(default_factory=list, description="Numeric inputs.")
    categorical: list[CategoricalFeature] = Field(default_factory=list, description="Categorical inputs.")
    derived: list[DerivedFeature] = Field(default_factory=list, description="Columns derived before fitting.")


# ----------------------------------------------------------------- later stages (issues 3 to 5)
class BaseModelConfig(StrictModel):
    """What every model family shares; each family adds its own hyperparameters."""

    task: Literal["classification", "regression", "multiclass"] = Field(
        "classification", description="What is predicted: classification (binary: labels 0/1, or two class "
                                      "names such as yes/no), multiclass (three or more classes, named or "
                                      "numbered) or regression.")

    def trusted_builders(self) -> tuple[str, ...]:
        """Import paths of code a package of this model may name (only a user's MLP builder)."""
        return ()


class ModelConfig(BaseModelConfig):
    """The torch MLP family (the default): embeddings for categorical ids, then dense layers."""

    family: Literal["mlp"] = Field("mlp", description="Model family: mlp (torch), lightgbm or xgboost.")
    builder: str = Field("mlp", description="'mlp' or a user builder as 'package.module:function'.")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 32], description="Widths of hidden layers.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    embedding_dim: int = Field(8, ge=1, description="Embedding width of each categorical feature.")

    def trusted_builders(self) -> tuple[str, ...]:
        return (self.builder,)


MLPModelConfig = ModelConfig


class BoostingModelConfig(BaseModelConfig):
    """Gradient-boosted trees: rounds, early stopping on the validation split, checkpoints."""

    num_boost_round: int = Field(1000, ge=1, description="Most boosting rounds.")
    learning_rate: float = Field(0.05, gt=0, le=1, description="Shrinkage of each tree.")
    early_stopping_rounds: int = Field(
        50, ge=1, description="Rounds without a better validation loss before boosting stops.")
    checkpoint_every: int = Field(
        50, ge=1, description="Rounds between checkpoints (and reports to Ray Train/Tune); a killed worker "
                              "resumes from the last one.")


class LightGBMModelConfig(BoostingModelConfig):
    """LightGBM (categorical features split natively; data-parallel over Ray Train workers)."""

    family: Literal["lightgbm"] = Field(description="Model family: mlp (torch), lightgbm or xgboost.")
    num_leaves: int = Field(31, ge=2, description="Most leaves per tree.")
    max_depth: int = Field(-1, description="Most depth per tree (-1: no limit).")
    min_child_samples: int = Field(20, ge=1, description="Fewest rows in a leaf.")
    feature_fraction: float = Field(1.0, gt=0, le=1, description="Share of features tried per tree.")
    bagging_fraction: float = Field(1.0, gt=0, le=1, description="Share of rows per tree (with bagging_freq > 0).")
    bagging_freq: int = Field(0, ge=0, description="Rebag every k rounds (0: no bagging).")
    lambda_l2: float = Field(0.0, ge=0, description="L2 regularisation of leaf values.")
    max_bin: int = Field(255, ge=2, description="Histogram bins per numeric feature.")


class XGBoostModelConfig(BoostingModelConfig):
    """XGBoost (hist trees, categorical features split natively; distributed over Ray Train workers)."""

    family: Literal["xgboost"] = Field(description="Model family: mlp (torch), lightgbm or xgboost.")
    max_depth: int = Field(6, ge=1, description="Most depth per tree.")
    min_child_weight: float = Field(1.0, ge=0, description="Least hessian in a leaf.")
    subsample: float = Field(1.0, gt=0, le=1, description="Share of rows per tree.")
    colsample_bytree: float = Field(1.0, gt=0, le=1, description="Share of features per tree.")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation of leaf values.")
    max_bin: int = Field(256, ge=2, description="Histogram bins per numeric feature.")


AnyModelConfig = Annotated[ModelConfig | LightGBMModelConfig | XGBoostModelConfig, Field(discriminator="family")]
MODEL_CONFIGS: dict[str, type[BaseModelConfig]] = {
    "mlp": ModelConfig, "lightgbm": LightGBMModelConfig, "xgboost": XGBoostModelConfig}


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


class ComparisonConfig(StrictModel):
    """How a model is judged against the champion: on an interval of the difference, not on two point values.

    One AUC on ~6,500 rows has a standard error near 0.007, so ``auc >= champion - 0.005`` on point
    values is decided by noise. With this on, a champion-relative gate fails only when the whole interval
    of (candidate - champion) breaks it; the loop promotes, discards or rolls back only when the interval
    says so, and waits for more labels (up to retraining.max_wait_s) while it straddles the threshold.
    """

    enabled: bool = Field(True, description="Judge champion-relative gates on a confidence interval of the "
                          "difference; False: compare the point values, as before.")
    test: Literal["bootstrap", "delong"] = Field(
        "bootstrap", description="bootstrap: resample rows (any of auc, log_loss, accuracy, f1, rmse, mae, mse, r2); "
        "delong: DeLong's test for auc (other metrics still bootstrap).")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level: intervals cover 1 - alpha.")
    resamples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    min_samples: int = Field(
        200, ge=10, description="Fewest labelled rows for an interval; a test split below it falls back to point "
        "values (the gate's detail says so).")
    seed: int = Field(0, description="Seed of the bootstrap: the same rows give the same verdict.")
    group_by_day: bool = Field(
        True, description="With a time split, resample whole days of its column rather than rows (rows of one day "
        "share its weather and delays, so they are not independent and a row bootstrap is overconfident). "
        "Used by the gates on the test split and by the loop's canary and rollback verdicts.")


class EvaluationConfig(StrictModel):
    gates: list[str] = Field(default_factory=list, description="Conditions such as 'auc >= 0.70'.")
    slices: list[str] = Field(default_factory=list, description="Columns to report metrics per value of.")
    comparison: ComparisonConfig = Field(
        default_factory=ComparisonConfig, description="Statistics of champion-relative gates and of the loop's verdicts.")


class RegistryConfig(StrictModel):
    model_name: str | None = Field(None, description="Registered model name in MLflow (default: the pipeline name).")
    promote_first: bool = Field(
        True, description="When no champion exists yet, the first version that passes the gates becomes champion.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite in the working folder (or MLFLOW_TRACKING_URI)."
    )
    lock_url: str | None = Field(
        None, description="postgresql://user@host:port/db where every writer of a tracking server's registry takes "
        "one advisory lock to move an alias, whatever its workdir (the server's own database will do). Without it "
        "a tracking server's alias moves exclude writers of the same workdir only; SQLite and file stores lock "
        "beside the store file. Never a password here: lock_password_env.")
    lock_password_env: str | None = Field(None, description="Environment variable holding lock_url's password.")
    lock_timeout_s: float = Field(120.0, gt=0, description="Longest an alias move waits for the registry lock "
                                  "before failing with who holds it.")

    @model_validator(mode="after")
    def _lock_url_is_postgres_without_password(self) -> RegistryConfig:
        if self.lock_url is None:
            return self
        from urllib.parse import urlsplit

        parts = urlsplit(self.lock_url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(f"registry.lock_url {self.lock_url!r}: a postgresql://user@host:port/dbname URL")
        if _url_holds_password(self.lock_url):
            raise ValueError("registry.lock_url holds a password; remove it and name the environment variable "
                             "that holds it in registry.lock_password_env")
        return self


class BatchingConfig(StrictModel):
    enabled: bool = Field(True, description="Group concurrent requests into one model call (Serve dynamic batching).")
    max_batch_size: int = Field(
        16, ge=1, le=4096, description="Most requests per model call (at most serving.max_ongoing_requests).")
    wait_timeout_s: float = Field(0.005, ge=0, le=1, description="Longest a request waits for a batch to fill.")


class ServingConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Bind address; keep loopback unless you mean it.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    app_name: str | None = Field(None, description="Serve application name (default: the registered model name).")
    route_prefix: str = Field("/", pattern=r"^/", description="URL prefix of the API.")
    min_replicas: int = Field(1, ge=1, description="Fewest replicas.")
    max_replicas: int = Field(2, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of in-flight requests per replica.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Most requests a replica works on at once (batching needs several in flight: 64 served 2.4x the requests/s of 16 at 32 clients, benchmarks/serve_bench.py).")
    max_queued_requests: int = Field(
        64, ge=1, description="Most requests waiting per proxy; beyond it requests are shed at once (finite queue).")
    shed_status: Literal[503, 429] = Field(503, description="HTTP status of a shed request.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After header sent with a shed request.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="A request not answered within this gets 408 (504 when the model call is what hung).")
    cpus_per_replica: float = Field(0.5, gt=0, description="CPUs reserved per replica.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Dynamic batching.")
    max_records_per_request: int = Field(1000, ge=1, le=100_000, description="Most records in one predict call.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Larger request bodies get 413.")
    api_key_env: str = Field(
        "RAYMLOPS_API_KEY", description="Environment variable holding the API key (never the key itself here).")
    api_key_file: str | None = Field(None, description="File holding the API key (read when the env var is unset).")
    require_key_for_predict: bool = Field(False, description="Also require the API key on /v1/predict.")
    canary_share: float = Field(
        0.0, ge=0, le=1, description="Share of requests answered by the `challenger` alias, when one exists.")
    watch_interval_s: float = Field(
        2.0, gt=0, le=300, description="How often replicas check the registry aliases and switch versions.")
    access_log: bool = Field(False, description="Log every request (Serve access log); costs throughput.")


class DriftConfig(StrictModel):
    alpha: float = Field(0.01, gt=0, lt=1, description="False-alarm level of a window across all features.")
    correction: Literal["holm", "bonferroni", "bh", "none"] = Field(
        "holm", description="Multiple-testing correction across features.")
    min_psi: float = Field(0.1, ge=0, description="A feature drifts only if its PSI is at least this as well.")


class RetentionConfig(StrictModel):
    """How long raw request records (inputs that may be personal data) are kept on disk."""

    days: float | None = Field(90, gt=0, description="Drop feedback and journal lines older than this "
                               "(null: no age limit).")
    max_bytes: int | None = Field(512 * 1024 * 1024, ge=4096, description="Most bytes each log keeps, newest "
                                  "lines first (null: no size limit).")
    check_every_s: float = Field(60, gt=0, description="How often the monitor checks the logs against the limits.")


class MonitoringConfig(StrictModel):
    enabled: bool = Field(True, description="Run the monitoring actor.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests handed to the monitor.")
    window_rows: int = Field(2000, ge=50, description="Rows per drift window.")
    min_window_rows: int = Field(500, ge=10, description="Fewest rows before a window is judged.")
    quality_window: int = Field(1000, ge=10, description="Labelled predictions per live-quality window.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Drift tests.")
    latency_slo_ms: float = Field(
        50.0, gt=0, description="p99 in-replica latency the service is sized to meet; exported as "
        "raymlops_latency_slo_seconds, which the RaymlopsLatencyHigh alert compares the live p99 with.")
    metrics_host: str = Field("127.0.0.1", description="Bind address of the monitor's Prometheus endpoint.")
    metrics_port: int = Field(9108, ge=1, le=65535, description="Port of the monitor's Prometheus endpoint.")
    keep_predictions: int = Field(
        20_000, ge=100, description="Sampled requests kept for joining late labels (the oldest fall out first).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="Limits on the feedback log "
                                       "and the prediction journal, which hold raw request records.")


class RetrainingConfig(StrictModel):
    enabled: bool = Field(False, description="Retrain when the policy says so.")
    min_drifted_features: int = Field(2, ge=1, description="Retrain when at least this many features drift.")
    on_prediction_drift: bool = Field(True, description="Retrain when the score distribution drifts.")
    drift_trigger: Literal["without_labels", "always"] = Field(
        "without_labels", description="When input or score drift alone triggers a retrain: 'without_labels' "
        "(only while the champion has too few labelled answers to judge its quality: with labels, lost quality "
        "is the trigger and drift is recorded as context) or 'always'.")
    quality_drop: float | None = Field(
        0.02, ge=0, description="Retrain when the champion's live quality (the promote gate's metric, over its "
        "labelled answers) is below its own test quality by more than this, for the whole interval "
        "(evaluation.comparison's alpha); None: off.")
    quality_floor: str | None = Field(
        None, description="Retrain when live quality breaks this, e.g. 'auc >= 0.62' (over labelled traffic).")
    every_s: float | None = Field(None, gt=0, description="Also retrain on this schedule (seconds).")
    cooldown_s: float = Field(3600, ge=0, description="Least time between two retrains.")
    max_per_day: int = Field(4, ge=1, description="Most retrains in any 24 hours.")
    canary_share: float = Field(0.2, gt=0, le=1, description="Traffic share of a new challenger while the loop runs (serving.canary_share wins when set above 0).")
    canary_min_samples: int = Field(300, ge=10, description="Labelled challenger answers before it is judged.")
    promote_gate: str = Field(
        "auc >= champion - 0.0", description="Live quality a challenger needs against the champion to be promoted.")
    rollback_gate: str = Field(
        "auc >= champion - 0.01",
        description="Live quality a new champion must keep against the one it replaced, or it is rolled back.")
    rollback_min_samples: int = Field(
        300, ge=10, description="Labelled answers of a new champion before it can be rolled back.")
    max_wait_s: float = Field(
        3 * 86_400, ge=0, description="Longest a canary or a new champion on watch waits while the difference is "
        "inside the noise (evaluation.comparison); then the champion of the time stays: the canary is discarded, "
        "the new champion kept.")
    after_wait: Literal["champion", "challenger"] = Field(
        "champion", description="Who serves when a canary's interval still straddles promote_gate after "
        "max_wait_s: 'champion' (nothing changes without evidence) or 'challenger' (it passed the offline gates "
        "and is not shown worse live; choose it where newer data is known to help, as in seasonal data).")
    window_days: float | None = Field(
        90, gt=0, description="A retrain learns from the latest this many days (of data.split's time column) of "
        "the champion's training data and labelled traffic; None: all of it.")
    validation_days: float = Field(7, gt=0, description="Days before the test days: early stopping.")
    test_days: float = Field(
        14, gt=0, description="The newest days of the window: the gates compare candidate and champion on them.")
    include_history: bool = Field(True, description="Use the champion's training rows inside the window too.")
    min_rows: int = Field(1000, ge=1, description="Fewest rows in the window for a retrain to start.")
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] | None = Field(
        None, description="Ray Train workers of a retrain (default: training's; 0 trains in the loop's process).")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs per retrain worker (default: training's); it shares the cluster with serving.")
    epochs: int | None = Field(None, ge=1, description="Most epochs of a retrain (default: training's).")
    refit: bool = Field(
        False, description="A candidate that passes the gates is trained once more on its whole window, its "
        "validation and test days included, and that model is the challenger (training.refit): the newest "
        "days are the most telling, and without a refit the candidate never learns from them. Its canary "
        "judges it on live traffic.")
    tune: bool = Field(False, description="Search hyperparameters on each retrain (tuning section).")
    check_every_s: float = Field(
        60, gt=0, description="How often `raymlops serve` (or `raymlops loop`) runs one step of the loop.")


class PipelineConfig(StrictModel):
    """A whole lifecycle: data -> features -> model -> registry -> serving -> monitoring."""

    name: str = Field(description="Name of the pipeline; also the default registered model name.")
    workdir: str = Field(
        ".raymlops", description="Folder for local state (snapshots, reports, MLflow SQLite, checkpoints, logs)."
    )
    data: DataConfig = Field(description="Sources, joins, cleaning and splits.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Data expectations.")
    features: FeaturesConfig = Field(description="Feature pipeline fitted on the training split.")
    model: AnyModelConfig = Field(default_factory=ModelConfig,
                                  description="Model family (mlp, lightgbm, xgboost) and its hyperparameters.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Ray Train settings.")
    tuning: TuningConfig = Field(default_factory=TuningConfig, description="Ray Tune settings.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Metrics and gates.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="MLflow registry.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Ray Serve deployment.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Drift and quality.")
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig, description="The closed loop.")
    base_dir: str = Field(".", description="Folder relative paths resolve against (set by load_config).")

    @model_validator(mode="before")
    @classmethod
    def _mlp_is_the_default_family(cls, data: Any) -> Any:
        """Configs written before model families existed (no ``model.family``) mean the MLP."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and "family" not in data["model"]:
            return {**data, "model": {**data["model"], "family": "mlp"}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _live_gates_fit_the_task(cls, data: Any) -> Any:
        """The loop's default promote/rollback gates compare AUC; a regression model has none, so its
        defaults compare R² (scale-free, unlike RMSE) unless the config sets its own."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
                and data["model"].get("task") == "regression"):
            return data
        retraining = data.get("retraining") if isinstance(data.get("retraining"), dict) else {}
        defaults = {"promote_gate": "r2 >= champion - 0.0", "rollback_gate": "r2 >= champion - 0.02"}
        if all(k in retraining for k in defaults) or ("retraining" in data and not isinstance(data["retraining"], dict)):
            return data
        return {**data, "retraining": {**defaults, **retraining}}

    def search_space(self) -> dict[str, Any]:
        """The tuning search space: the configured one, or the model family's default."""
        if self.tuning.search_space:
            return dict(self.tuning.search_space)
        from pydantic import TypeAdapter

        return {k: TypeAdapter(SearchDim).validate_python(v) for k, v in DEFAULT_SEARCH_SPACES[self.model.family].items()}

    def resolve_path(self, path: str) -> str:
        """Resolve a relative local path against the config's folder; URIs pass through."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str(Path(self.base_dir) / path)

    @property
    def workdir_path(self) -> Path:
        return Path(self.resolve_path(self.workdir)).resolve()

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    def config_hash(self) -> str:
        """Stable hash of the settings (not of where the file lies)."""
        payload = self.model_dump(mode="json", exclude={"base_dir"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- cross-field checks
# Gates: the expressions `evaluation.gates` holds, read here so a config with a bad one fails to load.
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==)\s*(champion\s*([+-])\s*)?([0-9.eE+-]+|champion)\s*$")
# What compute_metrics gives per task: the names a gate may use (checked when the config is loaded).
METRICS = {"classification": ("auc", "pr_auc", "log_loss", "accuracy", "f1", "calibration_error", "positive_rate",
                              "rows"),
           "regression": ("rmse", "mae", "r2", "rows"),
           "multiclass": ("log_loss", "accuracy", "macro_f1", "auc", "rows")}



def parse_gate(text: str) -> tuple[str, str, bool, str, float]:
    """(metric, op, relative_to_champion, sign, number). Raises ConfigError on a malformed gate."""
    m = _GATE.match(text)
    if not m:
        raise ConfigError(f"evaluation.gates: cannot read gate {text!r}; write e.g. 'auc >= 0.70' or "
                          "'auc >= champion - 0.005'")
    metric, op, rel, sign, number = m.group(1), m.group(2), m.group(3), m.group(4) or "+", m.group(5)
    if number == "champion":
        return metric, op, True, "+", 0.0
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"evaluation.gates: cannot read the number {number!r} in gate {text!r}; write e.g. "
                          "'auc >= 0.70' or 'auc >= champion - 0.005'") from None
    return metric, op, bool(rel), sign, value


def check_gate(text: str, task: str) -> None:
    """A gate that can be read and names a metric the task's models report; ConfigError otherwise."""
    import difflib

    metric = parse_gate(text)[0]
    known = METRICS[task]
    if metric not in known:
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"evaluation.gates: gate {text!r} names metric {metric!r}, which a {task} model does not "
                          f"report; {hint}its metrics: {', '.join(known)}")


CrossCheck = Callable[[PipelineConfig], list[tuple[str, str]]]
CROSS_CHECKS: list[CrossCheck] = []


def cross_check(fn: CrossCheck) -> CrossCheck:
    """Register a check returning (yaml path, problem and fix) pairs."""
    CROSS_CHECKS.append(fn)
    return fn


@cross_check
def _source_names_are_unique_and_known(cfg: PipelineConfig) -> list[tuple[str, str]]:
    problems = []
    names = [s.name for s in cfg.data.sources]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append((f"data.sources[{i}].name", f"source name {name!r} is used twice; names must differ"))
    known = set(names)
    for i, name in enumerate(cfg.data.base or []):
        if name not in known:
            problems.append((f"data.base[{i}]", f"unknown source {name!r}; declared: {sorted(known)}"))
    for i, join in enumerate(cfg.data.joins):
        if join.right not in known:
            problems.append((f"data.joins[{i}].right", f"unknown source {join.right!r}; declared: {sorted(known)}"))
        elif join.right in (cfg.data.base or [names[0]]):
            problems.append((f"data.joins[{i}].right", f"{join.right!r} is part of the base table; join another source"))
    return problems


@cross_check
def _feature_columns_are_consistent(cfg: PipelineConfig) -> list[tuple[str, str]]:
    problems = []
    f = cfg.features
    used: dict[str, str] = {}
    for kind, items in (("numeric", f.numeric), ("categorical", f.categorical)):
        for i, item in enumerate(items):
            path = f"features.{kind}[{i}].column"
            if item.column == f.target:
                problems.append((path, f"{item.column!r} is the target; it cannot also be an input"))
            if item.column in used:
                problems.append((path, f"{item.column!r} is already a feature at {used[item.column]}"))
            used.setdefault(item.column, path)
    if not (f.numeric or f.categorical):
        problems.append(("features", "declare at least one numeric or categorical feature"))
    derived_names = [d.name for d in f.derived]
    for i, d in enumerate(f.derived):
        if derived_names.index(d.name) != i:
            problems.append((f"features.derived[{i}].name", f"derived column {d.name!r} is declared twice"))
    return problems


@cross_check
def _tuning_trials_run_on_workers(cfg: PipelineConfig) -> list[tuple[str, str]]:
    if cfg.tuning.enabled and cfg.training.num_workers == 0:
        return [("training.num_workers", "0 trains in the driver, but tuning runs each trial on Ray Train workers "
                 "that report to the scheduler; use 1 or more (or 'auto') with tuning.enabled")]
    return []


@cross_check
def _validation_bounds_are_ordered(cfg: PipelineConfig) -> list[tuple[str, str]]:
    problems = []
    rc = cfg.validation.row_count
    if rc.min is not None and rc.max is not None and rc.min > rc.max:
        problems.append(("validation.row_count", f"min ({rc.min}) is greater than max ({rc.max})"))
    for name, exp in cfg.validation.columns.items():
        path = f"validation.columns.{name}"
        if exp.min is not None and exp.max is not None and type(exp.min) is type(exp.max) and exp.min > exp.max:
            problems.append((path, f"min ({exp.min}) is greater than max ({exp.max})"))
        if exp.allowed is not None and (exp.min is not None or exp.max is not None):
            problems.append((path, "use either allowed or min/max, not both"))
        if not exp.nullable and exp.max_null_fraction not in (None, 0):
            problems.append((path, "nullable: false contradicts max_null_fraction > 0"))
    return problems


@cross_check
def _search_space_names_known_parameters(cfg: PipelineConfig) -> list[tuple[str, str]]:
    problems = []
    family = cfg.model.family
    tunable = TUNABLE_BY_FAMILY[family]
    for name in cfg.tuning.search_space:
        if name not in tunable:
            other = [f for f, names in TUNABLE_BY_FAMILY.items() if name in names and f != family]
            where = f" (it is a {' and '.join(other)} parameter)" if other else ""
            problems.append((f"tuning.search_space.{name}",
                             f"not a tunable parameter of model.family {family}{where}; use one of {list(tunable)}"))
    return problems


@cross_check
def _model_family_is_installed(cfg: PipelineConfig) -> list[tuple[str, str]]:
    import importlib.util

    library = {"mlp": "torch", "lightgbm": "lightgbm", "xgboost": "xgboost"}[cfg.model.family]
    if importlib.util.find_spec(library) is None:
        return [("model.family", f"family {cfg.model.family} needs the {library!r} package, which is not "
                                  f"installed here: pip install {library}")]
    return []


@cross_check
def _multiclass_names_its_classes(cfg: PipelineConfig) -> list[tuple[str, str]]:
    classes, task = cfg.features.target_classes, cfg.model.task
    if len(set(classes)) != len(classes):
        return [("features.target_classes", f"class names repeat: {classes}")]
    if task == "regression":
        return ([("features.target_classes", "a regression model has no target classes: remove target_classes "
                                             "or set model.task: classification or multiclass")]
                if classes else [])
    if task == "classification":
        return ([("features.target_classes", f"a classification model has two classes (negative, then positive), "
                                             f"got {classes}; for more set model.task: multiclass")]
                if classes and len(classes) != 2 else [])
    if cfg.retraining.enabled:
        return [("retraining.enabled", "the closed loop does not judge multiclass models yet (its paired canary and "
                                       "rollback verdicts compare binary scores or values): set it to false and "
                                       "retrain with raymlops run")]
    if classes and len(classes) < 3:
        return [("features.target_classes", f"a multiclass target needs at least 3 class names, got {classes}; "
                                            "for two classes use model.task: classification")]
    return []


@cross_check
def _gates_are_readable(cfg: PipelineConfig) -> list[tuple[str, str]]:
    problems = []
    gates = [(f"evaluation.gates[{i}]", g) for i, g in enumerate(cfg.evaluation.gates)]
    r = cfg.retraining
    gates += [(f"retraining.{k}", g) for k, g in (("quality_floor", r.quality_floor), ("promote_gate", r.promote_gate),
                                                  ("rollback_gate", r.rollback_gate)) if g]
    for where, gate in gates:
        try:
            check_gate(gate, cfg.model.task)
        except ConfigError as exc:
            problems.append((where, str(exc).split(": ", 1)[-1]))
    return problems


@cross_check
def _serving_replicas_are_ordered(cfg: PipelineConfig) -> list[tuple[str, str]]:
    s = cfg.serving
    if s.min_replicas > s.max_replicas:
        return [("serving", f"min_replicas ({s.min_replicas}) exceeds max_replicas ({s.max_replicas})")]
    return []


# ---------------------------------------------------------------------------------------- load
def _yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or its deepest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_UNION_TAGS = {"csv", "parquet", "json", "sql", "random", "time", "uniform", "loguniform", "int", "choice",
               "mlp", "lightgbm", "xgboost"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (e.g. 'csv' in sources[0].csv.path) so paths match the YAML."""
    return tuple(
        part for i, part in enumerate(loc)
        if not (i > 0 and part in _UNION_TAGS and (isinstance(loc[i - 1], int) or loc[i - 1] in ("split", "model")
                                                   or (i > 1 and loc[i - 2] == "search_space")))
    )


def closest_names(name: str, candidates: Any, n: int = 3) -> list[str]:
    """The candidates most like ``name``, best first: a case-only difference, then by difflib's similarity
    ratio (at least 0.6, and within 0.15 of the best, so a clear match is not diluted by weak ones)."""
    candidates = sorted({str(c) for c in candidates})
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    if same:
        return same[:n]
    scored = sorted(((difflib.SequenceMatcher(None, name, c).ratio(), c) for c in candidates), key=lambda t: -t[0])
    best = scored[0][0] if scored else 0.0
    return [c for r, c in scored if r >= 0.6 and r >= best - 0.15][:n]


def did_you_mean(names: list[str]) -> str:
    """"did you mean 'a' or 'b'?" for a message, or "" when nothing is close."""
    if not names:
        return ""
    quoted = [repr(n) for n in names]
    return "did you mean " + (" or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else quoted[0]) + "?"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one part of a pydantic error location further in (None when it cannot tell)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if origin is list and isinstance(part, int):
        return get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return get_args(annotation)[1]
    models = _models_in(annotation)
    if len(models) > 1:  # a union, and the part is its tag, such as 'csv' in data.sources[0].csv.path
        tagged = [m for m in models if any(tag in m.model_fields and part in get_args(m.model_fields[tag].annotation)
                                           for tag in ("type", "family"))]
        return tagged[0] if tagged else None
    if models and isinstance(part, str) and part in models[0].model_fields:
        return models[0].model_fields[part].annotation
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the mapping at pydantic's raw error location ``loc`` may hold, from the schema itself."""
    annotation: Any = PipelineConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    return sorted({k for m in _models_in(annotation) for k in m.model_fields} - {"base_dir"})


def _unknown_key(loc: tuple[Any, ...]) -> str:
    allowed = _keys_at(loc[:-1])
    hint = did_you_mean(closest_names(str(loc[-1]), allowed))
    if len(loc) == 3 and loc[0] == "model" and allowed:  # a model family's own keys
        other = [f for f, m in MODEL_CONFIGS.items() if f != loc[1] and str(loc[-1]) in m.model_fields]
        why = f"; it is a key of {' and '.join(other)}" if other else (f"; {hint}" if hint else "")
        return f"not a key of model.family {loc[1]}{why} ({loc[1]} keys: {', '.join(k for k in allowed if k != 'family')})"
    if hint:
        return f"unknown key; {hint}"
    if allowed:
        return f"unknown key; allowed here: {', '.join(allowed)}"
    return "unknown key (check spelling; see `raymlops schema` for the allowed keys)"


def parse_config(data: Any, source: str = "<config>", root: yaml.Node | None = None,
                 base_dir: str = ".") -> PipelineConfig:
    """Validate a parsed mapping; every problem is reported at once with its path (and line if known)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping with sections such as 'data' and "
                          f"'features', got {type(data).__name__}")
    problems: list[str] = []
    try:
        cfg = PipelineConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            line = _yaml_line(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(tuple(err["loc"]))
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "union_tag_invalid" and loc == ("model",):
                loc = ("model", "family")
                msg = (f"unknown model family {err['ctx']['tag']!r}; choose one of {', '.join(MODEL_CONFIGS)} "
                       "(see `raymlops schema`)")
            problems.append(f"{where}: {_format_loc(loc)}: {msg}")
        raise ConfigError(_summary(source, problems), problems=problems) from None
    for check in CROSS_CHECKS:
        problems += _located(check(cfg), source, root)
    if problems:
        raise ConfigError(_summary(source, problems), problems=problems)
    return cfg


def _located(pairs: list[tuple[str, str]], source: str | None, root: yaml.Node | None) -> list[str]:
    """'file:line: yaml.path: problem' for (yaml path, problem) pairs ('yaml.path: problem' without a file)."""
    out = []
    for path, problem in pairs:
        line = _yaml_line(root, tuple(int(p) if p.isdigit() else p
                                      for p in path.replace("[", ".").replace("]", "").split(".")))
        where = (f"{source}:{line}: " if line else f"{source}: ") if source else ""
        out.append(f"{where}{path}: {problem}")
    return out


def config_error(pairs: list[tuple[str, str]], what: str, config_path: str | Path | None = None) -> ConfigError:
    """One ConfigError for problems found after loading (``what``: against what), with the file and line
    of each when the config file is given."""
    root = None
    if config_path is not None:
        try:
            root = yaml.compose(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            pass
    problems = _located(pairs, str(config_path) if config_path is not None else None, root)
    return ConfigError(_summary(f"{config_path or 'the config'} {what}", problems), problems=problems)


def _summary(source: str, problems: list[str]) -> str:
    head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {source}:"
    return "\n".join([head, *(f"  - {p}" for p in problems)])


def load_config(path: str | Path) -> PipelineConfig:
    """Read, validate and cross-check a pipeline config file; raise one ConfigError listing all problems."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give the path to a YAML file, e.g. configs/smoke.yaml)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse_config(data, source=str(path), root=root, base_dir=str(path.parent.resolve()))


def config_json_schema() -> dict[str, Any]:
    """JSON schema of the config, for editors (``raymlops schema``)."""
    schema = PipelineConfig.model_json_schema()
    schema.get("properties", {}).pop("base_dir", None)
    return schema


def default_run_name(cfg: PipelineConfig) -> str:
    """The run's name when none is given: the pipeline's name and the start time. Here, not in
    ``pipeline``, so that ``raymlops run``'s supervising parent names the run without importing Ray."""
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
