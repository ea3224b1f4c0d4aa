"""The model contract: what every model family (torch MLP, LightGBM, XGBoost, ...) provides.

Packaging, batch scoring, serving, monitoring, the loop and tuning talk to a family only through this
contract, never to torch or a boosting library directly. A family is a small object with:

- ``name`` (the ``model.family`` value) and ``config_type`` (its pydantic settings, in ``config.py``);
- ``trainer_class()`` and ``worker()``: the Ray Train V2 trainer (TorchTrainer,
  LightGBMTrainer, XGBoostTrainer) and the function each worker runs; the function reports a
  checkpoint every few epochs or rounds with ``state.json`` (the metrics so far) beside the model files
  and resumes from ``ray.train.get_checkpoint()``, so a killed worker costs only the work since;
- ``checkpoint_files(checkpoint_dir)``: the files of the best model in a checkpoint, by package name;
- ``fit_local(spec, model, training, train, validation, target)``: the same model fitted in this process,
  without Ray (the replay's scheduled-retrain baselines; small jobs);
- ``load(package_dir, manifest, spec)``: a ``Predictor`` from a verified package (native, safe formats
  only: safetensors, LightGBM's text model, XGBoost's UBJSON; never a pickle);
- ``tunable`` and ``default_search_space()``: the hyperparameters Ray Tune may vary, and a sensible space;
- ``split_validation``: whether each worker sees a shard of the validation split (False: every worker
  scores all of it, so early stopping takes the same decision on every worker).

Adding a family, worked through for a hypothetical "catboost" family:

1. Settings, in ``raymlops/config.py``::

       class CatBoostModelConfig(BaseModelConfig):
           family: Literal["catboost"] = "catboost"
           iterations: int = Field(500, ge=1, description="Most boosting rounds.")
           depth: int = Field(6, ge=1, le=16, description="Tree depth.")

   and add it to ``AnyModelConfig`` (the discriminated union on ``family``).
2. A module ``raymlops/model/catboost_family.py``::

       class CatBoostPredictor:
           def __init__(self, booster, spec):
               self.booster, self.spec = booster, spec
           def predict(self, features):           # transformed features in, one score per row out
               return self.booster.predict(feature_matrix(features, self.spec), prediction_type="Probability")[:, 1]

       def train_loop_per_worker(config):          # runs on each Ray Train worker
           x, y, w = shard_arrays("train", config.spec, config.target, config.weight)  # w: row weights or None
           # (see raymlops/model/boosting.py for the helpers)
           ...fit, and every N rounds ray.train.report(metrics, checkpoint=...) with state.json...

       class CatBoostFamily:
           name = "catboost"
           model_file = "model.cbm"
           tunable = ("depth", "learning_rate")
           split_validation = True
           def worker(self): return train_loop_per_worker
           def trainer_class(self): from ray.train.data_parallel_trainer import DataParallelTrainer; return DataParallelTrainer
           def checkpoint_files(self, d): return {self.model_file: Path(d) / "best_model.cbm"}
           def load(self, path, manifest, spec): return CatBoostPredictor(load_booster(path / self.model_file), spec)
           def default_search_space(self): return {"depth": {"type": "int", "low": 4, "high": 10}}

       FAMILY = CatBoostFamily()

3. Register it in ``FAMILY_MODULES`` below and its library in ``FAMILY_LIBRARIES`` (a missing library
   is then a ConfigError at load time, before any training starts).
4. Tests: a unit test of save/load/predict on a tiny fit, and the parametrised e2e test in
   ``tests/e2e/test_model_families.py`` gets the new name.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from raymlops.config import BaseModelConfig, TrainingConfig
from raymlops.data.features import FittedFeatures
from raymlops.errors import ConfigError

STATE = "state.json"  # every family's checkpoint holds it: metrics, history, where to resume
WORKER_KEY = "raymlops"  # Ray Train's train_loop_config is a dict: the WorkerConfig is its one entry


@dataclass(frozen=True)
class ModelSpec:
    """What a model's inputs look like, derived from the fitted features, and how its target was scaled.

    ``target_mean``/``target_std`` standardise a regression target during training (fitted on the training
    split); predictions are mapped back with them, so a model never sees a target in the thousands.
    ``classes`` names a multiclass model's classes: it outputs one probability per class, in this order.
    """

    task: str
    numeric: list[str]
    categorical: list[str]
    cardinalities: list[int]
    target_mean: float = 0.0
    target_std: float = 1.0
    classes: list[str] = field(default_factory=list)

    @classmethod
    def from_features(cls, fitted: FittedFeatures, task: str, target_mean: float = 0.0,
                      target_std: float = 1.0) -> ModelSpec:
        numeric = [s.column for s in fitted.numeric]
        categorical, cards = [], []
        for s in fitted.categorical:
            if s.encoding == "index":
                categorical.append(s.column)
                cards.append(s.cardinality)
            else:
                numeric.extend(s.output_columns())
        return cls(task=task, numeric=numeric, categorical=categorical, cardinalities=cards,
                   target_mean=target_mean, target_std=target_std,
                   classes=list(fitted.target_classes) if task != "regression" else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def outputs(self) -> int:
        """Scores per row: one per class for multiclass, one otherwise."""
        return len(self.classes) if self.task == "multiclass" else 1

    @property
    def columns(self) -> list[str]:
        """Model input columns in order: numeric (and one-hot), then categorical ids."""
        return [*self.numeric, *self.categorical]


# Transformed features: a frame (batch scoring, training) or column arrays (a request's records, from
# ``FittedFeatures.transform_records``); every family reads both.
Features = pd.DataFrame | dict[str, np.ndarray]


@dataclass(frozen=True)
class WorkerConfig:
    """What each Ray Train worker of a run receives (typed; Ray pickles it to every worker).

    ``model`` and ``training`` are the config's sections with a tuning trial's values applied.
    ``fixed_rounds`` marks a refit (``training.refit``): train every round or epoch it is given, no early
    stopping, and keep the last model (its validation rows are among its training rows, so "best" means
    nothing). ``local_checkpoint_dir`` is set only in local mode (``num_workers: 0``), where the loop
    writes and finds its own checkpoints (``model/checkpointing.py``).
    """

    spec: ModelSpec
    model: BaseModelConfig
    training: TrainingConfig
    target: str
    fixed_rounds: bool = False
    local_checkpoint_dir: str | None = None
    weight: str | None = None  # features.weight_column: the training rows' weights in the loss

    def loop_config(self) -> dict[str, Any]:
        """Ray Train's ``train_loop_config``, which must be a dict: this config as its one entry."""
        return {WORKER_KEY: self}

    @staticmethod
    def of(loop_config: dict[str, Any]) -> WorkerConfig:
        """The worker's side of ``loop_config``."""
        return loop_config[WORKER_KEY]


def feature_matrix(features: Features, spec: ModelSpec) -> np.ndarray:
    """The tree families' input: float32 columns in ``spec.columns`` order, categorical ids as exact
    small integers. Training and scoring both build it here, so a row is split the same way in both."""
    n = len(next(iter(features.values()))) if isinstance(features, dict) else len(features)
    if not spec.columns:
        return np.zeros((n, 0), np.float32)
    cols = [np.asarray(features[c], dtype=np.float32) for c in spec.columns]
    return np.ascontiguousarray(np.stack(cols, axis=1))


class Predictor(Protocol):
    """A loaded model: transformed features in, one score per row out (probability of the positive
    class for classification, the value in the target's own units for regression), or for multiclass
    a row of class probabilities [n, len(spec.classes)] summing to 1."""

    def predict(self, features: Features) -> np.ndarray: ...


class ModelFamily(Protocol):
    """One kind of model, from Ray Train to a package to a Predictor (see the module docstring)."""

    name: ClassVar[str]
    model_file: ClassVar[str]
    tunable: ClassVar[tuple[str, ...]]
    split_validation: ClassVar[bool]

    def worker(self) -> Callable[[dict[str, Any]], None]: ...

    def trainer_class(self) -> type: ...

    def fit_local(self, spec: ModelSpec, model: dict[str, Any], training: dict[str, Any], train: pd.DataFrame,
                  validation: pd.DataFrame, target: str) -> Predictor:
        """The same model fitted in this process without Ray (baselines, small jobs): transformed
        features plus the target column in, a Predictor out."""

    def checkpoint_files(self, checkpoint_dir: Path) -> dict[str, Path]: ...

    def load(self, package_dir: Path, manifest: dict[str, Any], spec: ModelSpec) -> Predictor: ...

    def default_search_space(self) -> dict[str, dict[str, Any]]: ...


FAMILY_MODULES = {"mlp": "raymlops.model.mlp_family", "lightgbm": "raymlops.model.lgbm", "xgboost": "raymlops.model.xgb"}
FAMILY_LIBRARIES = {"mlp": "torch", "lightgbm": "lightgbm", "xgboost": "xgboost"}


def get_family(name: str) -> ModelFamily:
    """The family object by ``model.family`` name (its module is imported on first use only)."""
    if name not in FAMILY_MODULES:
        raise ConfigError(f"model.family: unknown family {name!r}; choose one of {sorted(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY
