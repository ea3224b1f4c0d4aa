"""The XGBoost family: XGBoost on Ray Train (``XGBoostTrainer``: a rabit tracker on the driver, workers
summing histograms), hist trees with native categorical splits, saved as XGBoost's UBJSON model.

Each worker holds a shard of the training and of the validation split; XGBoost sums the evaluation
metrics over workers, so every worker sees the same validation loss and stops at the same round.
``device: cuda`` is used when ``training.use_gpu`` is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import DEFAULT_SEARCH_SPACES, TUNABLE_BY_FAMILY
from raymlops.errors import ModelPackageError
from raymlops.model.contract import Features, ModelSpec, WorkerConfig, feature_matrix

MODEL_FILE = "model.ubj"
BEST_MODEL_FILE = "best_model.ubj"


def xgboost_params(spec: ModelSpec, model: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """XGBoost's parameters from the family's config (pure: unit-tested without Ray)."""
    objective, metric = {"classification": ("binary:logistic", ["logloss", "auc"]),
                         "multiclass": ("multi:softprob", ["mlogloss"])}.get(spec.task, ("reg:squarederror", ["rmse"]))
    return {
        "objective": objective, "eval_metric": metric,
        **({"num_class": spec.outputs} if spec.task == "multiclass" else {}),
        "eta": model["learning_rate"], "max_depth": model["max_depth"], "min_child_weight": model["min_child_weight"],
        "subsample": model["subsample"], "colsample_bytree": model["colsample_bytree"],
        "lambda": model["reg_lambda"], "max_bin": model["max_bin"], "tree_method": "hist",
        "device": "cuda" if training.get("use_gpu") else "cpu",
        "nthread": max(1, int(training.get("cpus_per_worker", 1))), "seed": training.get("seed", 0),
    }


def feature_types(spec: ModelSpec) -> list[str]:
    return ["q"] * len(spec.numeric) + ["c"] * len(spec.categorical)


def dmatrix(x: np.ndarray, spec: ModelSpec, label: np.ndarray | None = None,
            weight: np.ndarray | None = None) -> Any:
    import xgboost as xgb

    return xgb.DMatrix(x, label=label, weight=weight, feature_names=[f"f{i}" for i in range(x.shape[1])],
                       feature_types=feature_types(spec), enable_categorical=True)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import xgboost as xgb

    from raymlops.model.boosting import RoundReporter, resume_state, shard_arrays

    config = WorkerConfig.of(loop_config)
    spec, target = config.spec, config.target
    model, training = config.model.model_dump(), config.training.model_dump()  # the family's params read dicts
    params = xgboost_params(spec, model, training)
    x, y, w = shard_arrays("train", spec, target, config.weight)  # validation rows count alike
    vx, vy, _ = shard_arrays("validation", spec, target)
    dtrain, dval = dmatrix(x, spec, y, w), dmatrix(vx, spec, vy)

    state, model_bytes = resume_state(MODEL_FILE, config)
    init_model = None
    if model_bytes:
        init_model = xgb.Booster()
        init_model.load_model(bytearray(model_bytes))
    remaining = model["num_boost_round"] - state.rounds
    if state.stopped or remaining <= 0:
        return

    def save(folder: Path, st) -> None:
        booster = current["booster"]
        booster.save_model(str(folder / MODEL_FILE))
        booster[: st.best_iteration + 1].save_model(str(folder / BEST_MODEL_FILE))

    current: dict[str, Any] = {}
    reporter = RoundReporter(state, total_rounds=model["num_boost_round"], every=model["checkpoint_every"],
                             patience=model["early_stopping_rounds"], save=save, config=config)
    loss_name = params["eval_metric"][0]

    class Callback(xgb.callback.TrainingCallback):
        def after_iteration(self, booster, epoch, evals_log) -> bool:
            current["booster"] = booster
            values = {k: float(v[-1]) for k, v in evals_log.get("validation", {}).items()}
            extra = {"shard_rows": int(len(y))}
            if "auc" in values:
                extra["val_auc"] = values["auc"]
            loss = values[loss_name] ** 2 if loss_name == "rmse" else values[loss_name]  # rmse -> mse, like l2
            return reporter.after_round(booster.num_boosted_rounds() - 1, loss, extra)

    xgb.train(params, dtrain, num_boost_round=remaining, evals=[(dval, "validation")], xgb_model=init_model,
              callbacks=[Callback()], verbose_eval=False)


def _arrays(frame: pd.DataFrame, spec: ModelSpec, target: str) -> tuple[np.ndarray, np.ndarray]:
    return feature_matrix(frame, spec), frame[target].to_numpy(np.float32)


def fit_local(spec: ModelSpec, model: dict[str, Any], training: dict[str, Any], train_frame: pd.DataFrame,
              validation_frame: pd.DataFrame, target: str) -> XGBoostPredictor:
    """The same model fitted in this process (no Ray): for baselines and small jobs."""
    import xgboost as xgb

    train, validation = _arrays(train_frame, spec, target), _arrays(validation_frame, spec, target)
    booster = xgb.train(xgboost_params(spec, model, training), dmatrix(train[0], spec, train[1]),
                        num_boost_round=model["num_boost_round"],
                        evals=[(dmatrix(validation[0], spec, validation[1]), "validation")],
                        early_stopping_rounds=model["early_stopping_rounds"], verbose_eval=False)
    best = booster[: booster.best_iteration + 1] if hasattr(booster, "best_iteration") else booster
    return XGBoostPredictor(best, spec)


class XGBoostPredictor:
    def __init__(self, booster: Any, spec: ModelSpec) -> None:
        self.booster, self.spec = booster, spec

    def predict(self, features: Features) -> np.ndarray:
        out = self.booster.predict(dmatrix(feature_matrix(features, self.spec), self.spec))
        return np.asarray(out, dtype=np.float64)


class XGBoostFamily:
    name = "xgboost"
    model_file = "model.xgb.ubj"
    tunable = TUNABLE_BY_FAMILY["xgboost"]
    split_validation = True  # XGBoost sums the metrics over workers

    def worker(self):
        return train_loop_per_worker

    def fit_local(self, spec, model, training, train, validation, target) -> XGBoostPredictor:
        return fit_local(spec, model, training, train, validation, target)

    def trainer_class(self) -> type:
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer

    def checkpoint_files(self, checkpoint_dir: Path) -> dict[str, Path]:
        return {self.model_file: Path(checkpoint_dir) / BEST_MODEL_FILE}

    def load(self, package_dir: Path, manifest: dict[str, Any], spec: ModelSpec) -> XGBoostPredictor:
        import xgboost as xgb

        path = Path(package_dir) / self.model_file
        booster = xgb.Booster()
        try:  # UBJSON: parsed, never unpickled
            booster.load_model(bytearray(path.read_bytes()))
        except xgb.core.XGBoostError as exc:
            raise ModelPackageError(f"{package_dir}: {self.model_file} is not an XGBoost UBJSON model ({exc})") from exc
        booster.set_param({"nthread": 1})
        if booster.num_features() != len(spec.columns):
            raise ModelPackageError(f"{package_dir}: the XGBoost model takes {booster.num_features()} features, "
                                    f"the package's spec lists {len(spec.columns)}")
        return XGBoostPredictor(booster, spec)

    def default_search_space(self) -> dict[str, dict[str, Any]]:
        return DEFAULT_SEARCH_SPACES["xgboost"]


FAMILY = XGBoostFamily()
