"""``PipelineConfig``: every section together, and the checks that span sections."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from raymlops.config.base import StrictModel
from raymlops.config.data import DataConfig, TimeSplitConfig
from raymlops.config.evaluation import EvaluationConfig, check_gate
from raymlops.config.features import FeaturesConfig
from raymlops.config.model import AnyModelConfig, ModelConfig
from raymlops.config.monitoring import MonitoringConfig
from raymlops.config.registry import RegistryConfig
from raymlops.config.retraining import RetrainingConfig
from raymlops.config.serving import ServingConfig
from raymlops.config.training import DEFAULT_SEARCH_SPACES, SearchDim, TUNABLE_BY_FAMILY, TrainingConfig, TuningConfig
from raymlops.config.validation import ValidationConfig
from raymlops.errors import ConfigError


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
    if f.weight_column is not None and (f.weight_column == f.target or f.weight_column in used
                                        or f.weight_column in {d.source for d in f.derived}):
        problems.append(("features.weight_column", f"{f.weight_column!r} is the target or a model input; the "
                         "weight column must be a column of its own"))
    derived_names = [d.name for d in f.derived]
    for i, d in enumerate(f.derived):
        if derived_names.index(d.name) != i:
            problems.append((f"features.derived[{i}].name", f"derived column {d.name!r} is declared twice"))
    return problems


@cross_check
def _recency_weights_need_a_clock(cfg: PipelineConfig) -> list[tuple[str, str]]:
    if cfg.retraining.half_life_days is not None and not isinstance(cfg.data.split, TimeSplitConfig):
        return [("retraining.half_life_days", "recency weights need each row's time: use a time split "
                 "(data.split.type: time), or remove half_life_days")]
    return []


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


def default_run_name(cfg: PipelineConfig) -> str:
    """The run's name when none is given: the pipeline's name and the start time. Here, not in
    ``pipeline``, so that ``raymlops run``'s supervising parent names the run without importing Ray."""
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
