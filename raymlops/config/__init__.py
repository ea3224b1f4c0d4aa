"""The pipeline config: one YAML file, validated by pydantic, is the single source of truth.

Every stage reads its own section. Models are strict (unknown keys are errors) and frozen.
``load_config(path)`` parses YAML, validates the schema, runs the cross-field checks, and raises one
``ConfigError`` that lists every problem with its YAML path and line.

Example::

    cfg = load_config("configs/smoke.yaml")
    cfg.data.sources[0].path

One module per section (``data``, ``validation``, ``features``, ``model``, ``training``, ``evaluation``,
``registry``, ``serving``, ``monitoring``, ``retraining``), ``pipeline`` for the whole and ``load`` for
reading a file; every public name is importable from ``raymlops.config`` itself.
"""

from raymlops.config.base import ColumnType, StrictModel, closest_names, did_you_mean, url_holds_password
from raymlops.config.data import CleaningConfig, CsvOptions, DataConfig, FileSourceConfig, JoinConfig, RandomSplitConfig, SourceConfig, SplitConfig, SqlSourceConfig, TimeSplitConfig
from raymlops.config.evaluation import ComparisonConfig, EvaluationConfig, METRICS, check_gate, parse_gate
from raymlops.config.features import CategoricalFeature, DerivedFeature, FeaturesConfig, NumericFeature
from raymlops.config.load import config_error, config_json_schema, load_config, parse_config
from raymlops.config.model import AnyModelConfig, BaseModelConfig, BoostingModelConfig, LightGBMModelConfig, MLPModelConfig, MODEL_CONFIGS, ModelConfig, XGBoostModelConfig
from raymlops.config.monitoring import DriftConfig, MonitoringConfig, RetentionConfig
from raymlops.config.pipeline import CROSS_CHECKS, CrossCheck, PipelineConfig, cross_check, default_run_name
from raymlops.config.registry import RegistryConfig
from raymlops.config.retraining import RetrainingConfig
from raymlops.config.serving import BatchingConfig, ServingConfig
from raymlops.config.training import ChoiceDim, DEFAULT_SEARCH_SPACES, IntDim, SearchDim, TUNABLE, TUNABLE_BY_FAMILY, TrainingConfig, TuningConfig, UniformDim
from raymlops.config.validation import ColumnExpectation, RowCountExpectation, ValidationConfig

__all__ = ["AnyModelConfig", "BaseModelConfig", "BatchingConfig", "BoostingModelConfig", "CROSS_CHECKS", "CategoricalFeature", "ChoiceDim", "CleaningConfig", "ColumnExpectation", "ColumnType", "ComparisonConfig", "CrossCheck", "CsvOptions", "DEFAULT_SEARCH_SPACES", "DataConfig", "DerivedFeature", "DriftConfig", "EvaluationConfig", "FeaturesConfig", "FileSourceConfig", "IntDim", "JoinConfig", "LightGBMModelConfig", "METRICS", "MLPModelConfig", "MODEL_CONFIGS", "ModelConfig", "MonitoringConfig", "NumericFeature", "PipelineConfig", "RandomSplitConfig", "RegistryConfig", "RetentionConfig", "RetrainingConfig", "RowCountExpectation", "SearchDim", "ServingConfig", "SourceConfig", "SplitConfig", "SqlSourceConfig", "StrictModel", "TUNABLE", "TUNABLE_BY_FAMILY", "TimeSplitConfig", "TrainingConfig", "TuningConfig", "UniformDim", "ValidationConfig", "XGBoostModelConfig", "check_gate", "closest_names", "config_error", "config_json_schema", "cross_check", "default_run_name", "did_you_mean", "load_config", "parse_config", "parse_gate", "url_holds_password"]
