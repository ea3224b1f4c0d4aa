"""raymlops: one declarative config from raw data to a monitored, self-retraining HTTP model, on Ray.

The lifecycle, one package or module per stage (docs/architecture.md has the data flow):

    config.py            PipelineConfig: the YAML schema every stage reads its section of
    data/                ingest, validate, snapshot, split, fit features (Ray Data, or in the driver when
                         the data is small): DataStageResult
    model/               the model contract (contract.py) and its families: mlp (torch), lgbm (LightGBM),
                         xgb (XGBoost); local_fit.py fits a family in-process (baselines, small jobs)
    training/            the family's Ray Train trainer, Ray Tune, evaluation gates, paired comparisons,
                         the stage that registers a version only after its gates pass
    packaging.py         the model package (safe formats, checksums); inference.py: batch scoring
    registry.py          MLflow tracking and the registry: champion / challenger aliases, audit log
    serving/             Ray Serve + FastAPI: typed requests, rollout, canary, deadlines
    monitoring/          drift statistics, live quality, the monitor actor; the loop's policy
    loop.py              the closed loop: canary, watch, retrain
    runtime.py           the only module that connects to Ray (embedded local cluster or an address)
    pipeline.py          runs the stages in order
    cli.py               `raymlops run CONFIG`, `serve`, `predict`, `status`, `loop`, ...

In a notebook: ``raymlops.run(config)``, ``raymlops.load_model(name).predict(frame)``,
``raymlops.serve(config)`` (``api.py``: thin calls of what the CLI runs).

Pure modules (config, validation, versioning, splits, features, profile, drift, policy, evaluation) never
import Ray or MLflow; import-linter checks that in `make test`.
"""

from raymlops.api import Model, load_model, run, serve, shutdown
from raymlops.config import PipelineConfig, load_config
from raymlops.errors import (
    ConfigError,
    DataSourceError,
    DataValidationError,
    FeatureError,
    GateFailed,
    ModelPackageError,
    RaymlopsError,
    RegistryError,
    RuntimeConnectionError,
    ServingError,
    SnapshotError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Model",
    "DataSourceError",
    "DataValidationError",
    "FeatureError",
    "GateFailed",
    "ModelPackageError",
    "PipelineConfig",
    "RaymlopsError",
    "RegistryError",
    "RuntimeConnectionError",
    "ServingError",
    "SnapshotError",
    "TrainingError",
    "__version__",
    "load_config",
    "load_model",
    "run",
    "serve",
    "shutdown",
]
