"""raymlops: one declarative config from raw data to a monitored, self-retraining HTTP model, on Ray.

The lifecycle, one package or module per stage (see ARCHITECTURE in the docs):

    config.py            PipelineConfig: the YAML schema every stage reads its section of
    data/sources.py      ingest CSV / Parquet / JSON lines / SQL / object-store URIs with Ray Data
    data/validation.py   declared expectations -> ValidationReport (per column, with example rows)
    data/versioning.py   content fingerprint -> immutable, atomically published Parquet snapshot
    data/splits.py       train / validation / test by seeded hash or by time
    data/features.py     feature pipeline fitted on train; one transform for batches and requests
    data/stage.py        the data stage on Ray, tying the above together
    runtime.py           the only module that connects to Ray (embedded local cluster or an address)
    pipeline.py          runs the stages in order
    cli.py               `raymlops run CONFIG`, `validate-config`, `schema`, `profile`, `data list/show`

Pure modules (config, validation, versioning, splits, features, profile) never import Ray or MLflow;
import-linter checks that in `make test`.
"""

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
]
