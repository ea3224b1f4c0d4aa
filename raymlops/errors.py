"""The exceptions raymlops raises, all under one root so callers can catch the family.

    RaymlopsError                 anything raymlops raises on purpose
    ├── ConfigError               a pipeline config is malformed (file, YAML path, what was expected)
    ├── DataSourceError           a source cannot be read (which source, which file, why)
    ├── DataValidationError       data broke its declared expectations; carries the ValidationReport path
    ├── SnapshotError             a snapshot is missing, incomplete or inconsistent
    ├── FeatureError              a feature pipeline cannot be fitted or applied (which column, why)
    ├── TrainingError             training failed after its retries (the checkpoint is kept)
    ├── GateFailed                a candidate failed an evaluation gate; nothing was registered
    ├── RegistryError             the model registry refused or lost an operation
    ├── ModelPackageError         a model package is missing, tampered with or unreadable
    ├── ServingError              the model service cannot deploy, is not ready, or refused a request (status)
    ├── RuntimeConnectionError    Ray cannot be started or reached
    └── ClusterError              a local cluster or a Ray job cannot be started, reached or followed

Every class is picklable (Ray moves exceptions between processes): each stores its constructor
arguments and rebuilds itself from them in ``__reduce__``.
"""

from __future__ import annotations

from typing import Any


class RaymlopsError(Exception):
    """Root of every error raymlops raises on purpose; the CLI prints ``Type: message`` and exits 1."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self):  # keep the class and details across Ray's pickling
        return (_rebuild, (type(self), self.message, self.details))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[RaymlopsError], message: str, details: dict[str, Any]) -> RaymlopsError:
    return cls(message, **details)


class ConfigError(RaymlopsError):
    """The config file is missing, not YAML, or breaks the schema; ``problems`` lists each with its path."""

    def __init__(self, message: str, problems: list[str] | None = None, **details: Any) -> None:
        super().__init__(message, problems=problems or [], **details)
        self.problems = problems or []


class DataSourceError(RaymlopsError):
    """A declared source cannot be listed or read."""


class DataValidationError(RaymlopsError):
    """The data broke its expectations. ``report_path`` points at the full JSON report."""

    def __init__(self, message: str, report_path: str | None = None, **details: Any) -> None:
        super().__init__(message, report_path=report_path, **details)
        self.report_path = report_path


class SnapshotError(RaymlopsError):
    """A snapshot is missing, incomplete, or its manifest disagrees with its files."""


class FeatureError(RaymlopsError):
    """A feature pipeline cannot be fitted or applied."""


class TrainingError(RaymlopsError):
    """Training failed after its retries; rerun with the same run name to resume from the checkpoint."""


class GateFailed(RaymlopsError):
    """A candidate model failed at least one gate; the registry was left unchanged."""


class RegistryError(RaymlopsError):
    """An operation on the MLflow registry failed (which model, version, alias and why)."""


class ModelPackageError(RaymlopsError):
    """A model package is missing, incomplete, tampered with, or of an unknown format."""


class RuntimeConnectionError(RaymlopsError):
    """Ray cannot be started locally or reached at the given address."""


class RayStopped(RaymlopsError):
    """Ray stopped under a running pipeline (its raylet or GCS died), which ended the pipeline's process."""


class ServingError(RaymlopsError):
    """The model service cannot be deployed, is not ready, or answered a request with an error."""

    def __init__(self, message: str, status: int | None = None, **details: Any) -> None:
        super().__init__(message, status=status, **details)
        self.status = status


__all__ = [
    "ConfigError",
    "DataSourceError",
    "DataValidationError",
    "FeatureError",
    "GateFailed",
    "ModelPackageError",
    "RayStopped",
    "RaymlopsError",
    "RegistryError",
    "RuntimeConnectionError",
    "ServingError",
    "SnapshotError",
    "TrainingError",
]


class ClusterError(RaymlopsError):
    """A local cluster cannot be started, reached or stopped, or a job cannot be submitted or followed."""
