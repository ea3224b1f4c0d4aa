"""raymlops: one declarative config from raw data to a monitored, self-retraining HTTP model, on Ray.

The lifecycle, one package per stage, each importing only those below it (docs/architecture.md):

    config/       PipelineConfig: the YAML schema, one module per section every stage reads; the gate
                  grammar; load.py reads a file and names every problem by YAML path and line
    data/         ingest, validate, snapshot, split, fit features (Ray Data, or in the driver when the
                  data is small): DataStageResult
    model/        the model contract and its families (mlp: torch, lgbm: LightGBM, xgb: XGBoost), the
                  package (packaging.py: safe formats, checksums), a package's typed inputs, metrics,
                  batch scoring (batch.py)
    registry/     MLflow tracking and the registry (store.py): champion / challenger aliases, audit log,
                  the lock every writer takes (lock.py)
    monitoring/   drift statistics, live-quality windows, feedback joined by request id, the monitor actor
    training/     the family's Ray Train trainer, Ray Tune, paired comparisons, gates; the stage registers
                  a version only after its gates pass
    serving/      Ray Serve + FastAPI: typed requests, rollout, canary, deadlines; the HTTP client
    loop/         the closed loop: controller (canary, watch, retrain), its policy and retraining window,
                  `raymlops serve` with its loop (service.py), replaying labelled rows
    pipeline.py   runs the stages in order: data, then training
    runtime/      the only package that starts or connects to Ray (embedded local Ray or an address)
    ops/          clusters, Ray Jobs, KubeRay manifests, Ray's token, `raymlops ci check`
    cli/          `raymlops run CONFIG`, `serve`, `predict`, `status`, `loop`, ... (a module per group)

In a notebook: ``raymlops.run(config)``, ``raymlops.load_model(name).predict(frame)``,
``raymlops.serve(config)`` (``api.py``: thin calls of what the CLI runs).

Pure modules (config, validation, versioning, splits, features, profile, drift, policy, gates, metrics)
never import Ray, MLflow or torch; import-linter checks that and the layers in `make test`.
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
