"""The LightGBM family: data-parallel LightGBM on Ray Train (``LightGBMTrainer``), saved as LightGBM's
own text model.

With more than one worker each trains on its shard with ``tree_learner: data_parallel`` and the
network parameters Ray Train sets up, so histograms are summed over all workers and every tree sees
every training row (without them each worker would silently learn from its shard alone). Categorical
ids are split natively (``categorical_feature``), no one-hot. The root of the first tree counts the
rows it was grown from; it is reported as ``trained_rows`` so a run proves it used the whole split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import DEFAULT_SEARCH_SPACES, TUNABLE_BY_FAMILY
from raymlops.errors import ModelPackageError
from raymlops.model.contract import Features, ModelSpec, WorkerConfig, feature_matrix

MODEL_FILE = "model.txt"            # the full booster, to resume from
BEST_MODEL_FILE = "best_model.txt"  # the booster cut at its best round, for the package


def lightgbm_params(spec: ModelSpec, model: dict[str, Any], training: dict[str, Any], world_size: int) -> dict[str, Any]:
    """LightGBM's parameters from the family's config (pure: unit-tested without Ray)."""
    objective, metric = {"classification": ("binary", ["binary_logloss", "auc"]),
                         "multiclass": ("multiclass", ["multi_logloss"])}.get(spec.task, ("regression", ["l2"]))
    params = {
        "objective": objective, "metric": metric,
        "learning_rate": model["learning_rate"], "num_leaves": model["num_leaves"], "max_depth": model["max_depth"],
        "min_child_samples": model["min_child_samples"], "feature_fraction": model["feature_fraction"],
        "bagging_fraction": model["bagging_fraction"], "bagging_freq": model["bagging_freq"],
        "lambda_l2": model["lambda_l2"], "max_bin": model["max_bin"],
        "seed": training.get("seed", 0), "deterministic": True, "force_row_wise": True,
        "num_threads": max(1, int(training.get("cpus_per_worker", 1))), "verbose": -1,
        "feature_pre_filter": False,
    }
    if spec.task == "multiclass":
        params["num_class"] = spec.outputs
    if training.get("use_gpu"):
        params["device_type"] = "gpu"
    if world_size > 1:
        params.update(tree_learner="data_parallel", pre_partition=True)
    return params


def root_row_count(booster: Any) -> int:
    """Rows the first tree was grown from (its root's count): all rows over all workers when
    data-parallel training works, one shard's rows when it does not."""
    tree = booster.dump_model(num_iteration=1)["tree_info"][0]["tree_structure"]
    return int(tree.get("internal_count", tree.get("leaf_count", 0)))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import lightgbm as lgb
    import ray.train
    from ray.train.lightgbm import get_network_params

    from raymlops.model.boosting import RoundReporter, resume_state, shard_arrays

    config = WorkerConfig.of(loop_config)
    spec, target = config.spec, config.target
    model, training = config.model.model_dump(), config.training.model_dump()  # the family's params read dicts
    world = ray.train.get_context().get_world_size()
    params = lightgbm_params(spec, model, training, world)
    if world > 1:
        params.update(get_network_params())
    x, y, w = shard_arrays("train", spec, target, config.weight)  # validation rows count alike
    vx, vy, _ = shard_arrays("validation", spec, target)
    categorical = list(range(len(spec.numeric), len(spec.columns)))
    train_set = lgb.Dataset(x, y, weight=w, categorical_feature=categorical, free_raw_data=False, params=params)
    val_set = lgb.Dataset(vx, vy, reference=train_set, categorical_feature=categorical, free_raw_data=False)

    state, model_bytes = resume_state(MODEL_FILE, config)
    init_model = lgb.Booster(model_str=model_bytes.decode()) if model_bytes else None
    remaining = model["num_boost_round"] - state.rounds
    if state.stopped or remaining <= 0:
        return
    counted: dict[str, int] = {}

    def save(folder: Path, st) -> None:
        booster = current["booster"]
        booster.save_model(str(folder / MODEL_FILE))
        booster.save_model(str(folder / BEST_MODEL_FILE), num_iteration=st.best_iteration + 1)

    current: dict[str, Any] = {}
    reporter = RoundReporter(state, total_rounds=model["num_boost_round"], every=model["checkpoint_every"],
                             patience=model["early_stopping_rounds"], save=save, config=config)
    loss_name = params["metric"][0]

    def callback(env: lgb.callback.CallbackEnv) -> None:
        current["booster"] = env.model
        if "trained_rows" not in counted:
            counted["trained_rows"] = root_row_count(env.model)
        values = {name: value for _, name, value, _ in env.evaluation_result_list}
        extra = {"trained_rows": counted["trained_rows"], "shard_rows": int(len(y))}
        if "auc" in values:
            extra["val_auc"] = float(values["auc"])
        if reporter.after_round(env.iteration, float(values[loss_name]), extra):
            raise lgb.callback.EarlyStopException(reporter.state.best_iteration, env.evaluation_result_list)

    lgb.train(params, train_set, num_boost_round=remaining, valid_sets=[val_set], valid_names=["validation"],
              init_model=init_model, callbacks=[callback], keep_training_booster=True)


def _arrays(frame: pd.DataFrame, spec: ModelSpec, target: str) -> tuple[np.ndarray, np.ndarray]:
    return feature_matrix(frame, spec), frame[target].to_numpy(np.float32)


def fit_local(spec: ModelSpec, model: dict[str, Any], training: dict[str, Any], train_frame: pd.DataFrame,
              validation_frame: pd.DataFrame, target: str) -> LightGBMPredictor:
    """The same model fitted in this process (no Ray): for baselines and small jobs. Same parameters,
    same early stopping on the validation loss."""
    import lightgbm as lgb

    train, validation = _arrays(train_frame, spec, target), _arrays(validation_frame, spec, target)
    params = lightgbm_params(spec, model, training, world_size=1)
    categorical = list(range(len(spec.numeric), len(spec.columns)))
    train_set = lgb.Dataset(*train, categorical_feature=categorical, params=params)
    val_set = lgb.Dataset(*validation, reference=train_set, categorical_feature=categorical)
    booster = lgb.train(params, train_set, num_boost_round=model["num_boost_round"], valid_sets=[val_set],
                        callbacks=[lgb.early_stopping(model["early_stopping_rounds"], first_metric_only=True,
                                                      verbose=False)])
    best = booster.best_iteration or booster.current_iteration()
    return LightGBMPredictor(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)), spec)


class LightGBMPredictor:
    def __init__(self, booster: Any, spec: ModelSpec) -> None:
        self.booster, self.spec = booster, spec

    def predict(self, features: Features) -> np.ndarray:
        out = self.booster.predict(feature_matrix(features, self.spec), num_threads=1)
        return np.asarray(out, dtype=np.float64)


class LightGBMFamily:
    name = "lightgbm"
    model_file = "model.lgb.txt"
    tunable = TUNABLE_BY_FAMILY["lightgbm"]
    split_validation = False  # every worker scores the whole validation split: one early-stopping decision

    def worker(self):
        return train_loop_per_worker

    def fit_local(self, spec, model, training, train, validation, target) -> LightGBMPredictor:
        return fit_local(spec, model, training, train, validation, target)

    def trainer_class(self) -> type:
        from ray.train.lightgbm import LightGBMTrainer

        return LightGBMTrainer

    def checkpoint_files(self, checkpoint_dir: Path) -> dict[str, Path]:
        return {self.model_file: Path(checkpoint_dir) / BEST_MODEL_FILE}

    def load(self, package_dir: Path, manifest: dict[str, Any], spec: ModelSpec) -> LightGBMPredictor:
        import lightgbm as lgb

        path = Path(package_dir) / self.model_file
        try:  # LightGBM's text format: parsed, never unpickled
            booster = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ModelPackageError(f"{package_dir}: {self.model_file} is not a LightGBM text model ({exc})") from exc
        if booster.num_feature() != len(spec.columns):
            raise ModelPackageError(f"{package_dir}: the LightGBM model takes {booster.num_feature()} features, "
                                    f"the package's spec lists {len(spec.columns)}")
        return LightGBMPredictor(booster, spec)

    def default_search_space(self) -> dict[str, dict[str, Any]]:
        return DEFAULT_SEARCH_SPACES["lightgbm"]


FAMILY = LightGBMFamily()
