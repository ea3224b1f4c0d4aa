"""An in-memory ``MlflowClient`` for unit tests: the calls raymlops makes, with MLflow's answers and errors.

Unit tests check the Registry's own logic (alias moves and their audit log, absent versus unreachable,
interrupted runs) without a store on disk or a server. This client keeps experiments, runs, registered
models, versions and aliases in dicts and copies artifacts into a folder; it answers with MLflow's own
entities and fails with the ``MlflowException`` (and error code) a real store raises in the cases raymlops
tells apart. ``unreachable = True`` makes every call fail as a refused connection does. Integration tests
keep the real MLflow.

It implements only the methods raymlops calls (tests/unit/test_registry_memory.py checks that list, the
signatures and the answers against MLflow). It imports MLflow, whose entities, errors and search-filter parser keep
it faithful, and never Ray or torch.

Example::

    client = InMemoryMlflowClient(tmp_path / "artifacts")
    reg = Registry(client.tracking_uri, tmp_path, client=client)
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from mlflow.entities import (Experiment, LifecycleStage, Metric, Param, Run, RunData, RunInfo, RunStatus, RunTag,
                             ViewType)
from mlflow.entities.model_registry import (ModelVersion, ModelVersionTag, RegisteredModel, RegisteredModelAlias,
                                            RegisteredModelTag)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry import (SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
                                         SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT)
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking._model_registry import DEFAULT_AWAIT_MAX_SLEEP_SECONDS
from mlflow.utils.search_utils import SearchModelUtils, SearchModelVersionUtils, SearchUtils

MEMORY_URI = "memory://raymlops"
# MLflow's SQL store orders versions this way when a search names no order.
_VERSION_ORDER = ["last_updated_timestamp DESC", "name ASC", "version_number DESC"]

R = TypeVar("R")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _missing(message: str) -> MlflowException:
    return MlflowException(message, error_code=RESOURCE_DOES_NOT_EXIST)


def _served(method: Callable[..., R]) -> Callable[..., R]:
    """One call to the 'server': refused while it is unreachable, else answered under the client's lock."""
    @functools.wraps(method)
    def call(self: InMemoryMlflowClient, *args: Any, **kwargs: Any) -> R:
        if self.unreachable:  # what MLflow's REST client raises when the connection is refused
            at = urlparse(self.tracking_uri)
            pool = f"(host={at.hostname!r}, port={at.port})"
            raise MlflowException(f"API request to {self.tracking_uri} failed with exception HTTPConnectionPool{pool}: "
                                  f"Max retries exceeded with url: {method.__name__} (Caused by NewConnectionError("
                                  f"\"HTTPConnection{pool}: Failed to establish a new connection: [Errno 111] "
                                  "Connection refused\"))")
        with self._lock:
            return method(self, *args, **kwargs)
    return call


@dataclass(frozen=True)
class _Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    created: int

    def entity(self) -> Experiment:
        return Experiment(self.experiment_id, self.name, self.artifact_location, LifecycleStage.ACTIVE,
                          creation_time=self.created, last_update_time=self.created)


@dataclass
class _Run:
    run_id: str
    experiment_id: str
    user_id: str
    run_name: str
    start_time: int
    artifact_uri: str
    status: str = "RUNNING"
    end_time: int | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)  # per key, the value get_run shows (latest step)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def entity(self) -> Run:
        info = RunInfo(self.run_id, self.experiment_id, self.user_id, self.status, self.start_time, self.end_time,
                       LifecycleStage.ACTIVE, self.artifact_uri, self.run_name)
        return Run(info, RunData(list(self.metrics.values()), [Param(k, v) for k, v in self.params.items()],
                                 [RunTag(k, v) for k, v in self.tags.items()]))


@dataclass(frozen=True)
class _Version:
    version: int
    source: str
    run_id: str | None
    tags: dict[str, str]
    description: str | None
    run_link: str | None
    model_id: str | None
    created: int


@dataclass
class _Model:
    name: str
    description: str | None
    tags: dict[str, str]
    deployment_job_id: str | None
    created: int
    updated: int
    versions: dict[int, _Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)

    def entity(self) -> RegisteredModel:
        return RegisteredModel(self.name, self.created, self.updated, self.description,
                               tags=[RegisteredModelTag(k, v) for k, v in self.tags.items()],
                               aliases=[RegisteredModelAlias(a, v) for a, v in self.aliases.items()],
                               deployment_job_id=self.deployment_job_id)

    def version_entity(self, v: _Version, with_aliases: bool = True) -> ModelVersion:
        aliases = sorted(a for a, n in self.aliases.items() if n == v.version) if with_aliases else []
        return ModelVersion(self.name, v.version, v.created, v.created, v.description, current_stage="None",
                            source=v.source, run_id=v.run_id, tags=[ModelVersionTag(k, t) for k, t in v.tags.items()],
                            run_link=v.run_link, aliases=aliases, model_id=v.model_id)


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise MlflowException(f"the in-memory MLflow client keeps artifacts in local folders, not at {uri}",
                              error_code=INVALID_PARAMETER_VALUE)
    return Path(unquote(parsed.path))


class InMemoryMlflowClient:
    """The part of ``mlflow.tracking.MlflowClient`` raymlops uses, holding its state in this process."""

    def __init__(self, artifact_root: str | Path, *, tracking_uri: str = MEMORY_URI, unreachable: bool = False) -> None:
        self.tracking_uri = tracking_uri
        self.unreachable = unreachable
        self.artifact_root = Path(artifact_root).resolve()
        self._lock = threading.RLock()
        self._experiments: dict[str, _Experiment] = {}
        self._runs: dict[str, _Run] = {}
        self._models: dict[str, _Model] = {}
        # Every MLflow store starts with this one, so the first experiment made is "1".
        self._experiments["0"] = _Experiment("0", "Default", (self.artifact_root / "0").as_uri(), _now_ms())

    # ------------------------------------------------------------------------------- tracking
    @_served
    def get_experiment_by_name(self, name: str) -> Experiment | None:
        exp = next((e for e in self._experiments.values() if e.name == name), None)
        return exp.entity() if exp else None

    @_served
    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: dict[str, Any] | None = None) -> str:
        if any(e.name == name for e in self._experiments.values()):
            raise MlflowException(f"Experiment(name={name}) already exists.", error_code=RESOURCE_ALREADY_EXISTS)
        experiment_id = str(len(self._experiments))
        location = artifact_location or (self.artifact_root / experiment_id).as_uri()
        self._experiments[experiment_id] = _Experiment(experiment_id, name, location, _now_ms())
        return experiment_id

    @_served
    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict[str, Any] | None = None,
                   run_name: str | None = None) -> Run:
        exp = self._experiments.get(str(experiment_id))
        if exp is None:
            raise _missing(f"No Experiment with id={experiment_id} exists")
        tags = {k: str(v) for k, v in (tags or {}).items()}
        run_id = uuid.uuid4().hex
        run_name = run_name or tags.get("mlflow.runName") or f"run-{len(self._runs) + 1}"
        run = _Run(run_id, exp.experiment_id, tags.get("mlflow.user", "unknown"), run_name,
                   start_time or _now_ms(), f"{exp.artifact_location}/{run_id}/artifacts",
                   tags={**tags, "mlflow.runName": run_name})
        self._runs[run_id] = run
        return run.entity()

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise _missing(f"Run with id={run_id} not found")
        return run

    @_served
    def get_run(self, run_id: str) -> Run:
        return self._run(run_id).entity()

    @_served
    def search_runs(self, experiment_ids: list[str], filter_string: str = "", run_view_type: int = ViewType.ACTIVE_ONLY,
                    max_results: int = SEARCH_MAX_RESULTS_DEFAULT, order_by: list[str] | None = None,
                    page_token: str | None = None) -> PagedList[Run]:
        """MLflow's own filter, order and paging over the runs (none is ever deleted here)."""
        ids = {str(e) for e in experiment_ids}
        runs = [] if run_view_type == ViewType.DELETED_ONLY else \
            [r.entity() for r in self._runs.values() if r.experiment_id in ids]
        runs = SearchUtils.sort(SearchUtils.filter(runs, filter_string), order_by)
        page, token = SearchUtils.paginate(runs, page_token, max_results)
        return PagedList(page, token)

    @_served
    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
                  tags: Sequence[RunTag] = (), synchronous: bool | None = None) -> None:
        run = self._run(run_id)
        changed = [{"key": p.key, "old_value": run.params[p.key], "new_value": str(p.value)}
                   for p in params if run.params.get(p.key, str(p.value)) != str(p.value)]
        if changed:
            raise MlflowException(f"Changing param values is not allowed. Params were already logged='{changed}' "
                                  f"for run ID='{run_id}'.", error_code=INVALID_PARAMETER_VALUE)
        run.params.update((p.key, str(p.value)) for p in params)
        for m in metrics:  # get_run shows the value at the largest step (then the latest time, then the largest)
            new, shown = Metric(m.key, float(m.value), m.timestamp, m.step), run.metrics.get(m.key)
            if shown is None or (new.step, new.timestamp, new.value) > (shown.step, shown.timestamp, shown.value):
                run.metrics[m.key] = new
        run.tags.update((t.key, str(t.value)) for t in tags)

    @_served
    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        run = self._run(run_id)
        run.status = RunStatus.to_string(RunStatus.from_string(status or "FINISHED"))  # an unknown status raises
        run.end_time = end_time or _now_ms()

    @_served
    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        dest = self._artifact_dir(run_id, artifact_path)
        src = Path(local_path)
        if src.is_dir():  # as MlflowClient does: a folder goes under its own name
            shutil.copytree(src, dest / src.name, dirs_exist_ok=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.name)

    @_served
    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        shutil.copytree(local_dir, self._artifact_dir(run_id, artifact_path), dirs_exist_ok=True)

    def _artifact_dir(self, run_id: str, artifact_path: str | None) -> Path:
        root = _local_path(self._run(run_id).artifact_uri)
        return root / artifact_path if artifact_path else root

    # ------------------------------------------------------------------------------- registry
    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise _missing(f"Registered Model with name={name} not found")
        return model

    def _version(self, name: str, version: str | int) -> tuple[_Model, _Version]:
        try:
            number = int(version)
        except ValueError:
            raise MlflowException(f"Parameter 'version' must be an integer, got '{version}'.",
                                  error_code=INVALID_PARAMETER_VALUE) from None
        model = self._models.get(name)
        if model is None or number not in model.versions:
            raise _missing(f"Model Version (name={name}, version={number}) not found")
        return model, model.versions[number]

    @_served
    def create_registered_model(self, name: str, tags: dict[str, Any] | None = None, description: str | None = None,
                                deployment_job_id: str | None = None) -> RegisteredModel:
        if name in self._models:
            raise MlflowException(f"Registered Model (name={name}) already exists.", error_code=RESOURCE_ALREADY_EXISTS)
        now = _now_ms()
        model = _Model(name, description, {k: str(v) for k, v in (tags or {}).items()}, deployment_job_id, now, now)
        self._models[name] = model
        return model.entity()

    @_served
    def get_registered_model(self, name: str) -> RegisteredModel:
        return self._model(name).entity()

    @_served
    def search_registered_models(self, filter_string: str | None = None,
                                 max_results: int = SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
                                 order_by: list[str] | None = None,
                                 page_token: str | None = None) -> PagedList[RegisteredModel]:
        models = SearchModelUtils.filter([m.entity() for m in self._models.values()], filter_string)
        page, token = SearchUtils.paginate(SearchModelUtils.sort(models, order_by), page_token, max_results)
        return PagedList(page, token)

    @_served
    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             tags: dict[str, Any] | None = None, run_link: str | None = None,
                             description: str | None = None,
                             await_creation_for: int = DEFAULT_AWAIT_MAX_SLEEP_SECONDS,
                             model_id: str | None = None) -> ModelVersion:
        """A new version, READY at once (so ``await_creation_for`` never waits)."""
        model = self._model(name)
        number = max(model.versions, default=0) + 1
        model.updated = _now_ms()
        model.versions[number] = _Version(number, source, run_id, {k: str(v) for k, v in (tags or {}).items()},
                                          description, run_link, model_id, model.updated)
        return model.version_entity(model.versions[number])

    @_served
    def get_model_version(self, name: str, version: str) -> ModelVersion:
        model, v = self._version(name, version)
        return model.version_entity(v)

    @_served
    def search_model_versions(self, filter_string: str | None = None,
                              max_results: int = SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
                              order_by: list[str] | None = None,
                              page_token: str | None = None) -> PagedList[ModelVersion]:
        """Versions found by MLflow's own filter. Like MLflow's SQL store, a search answers without aliases
        (only ``get_model_version`` and ``get_model_version_by_alias`` fill them in)."""
        versions = [m.version_entity(v, with_aliases=False) for m in self._models.values() for v in m.versions.values()]
        versions = SearchModelVersionUtils.sort(SearchModelVersionUtils.filter(versions, filter_string),
                                                order_by or _VERSION_ORDER)
        page, token = SearchUtils.paginate(versions, page_token, max_results)
        return PagedList(page, token)

    @_served
    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._model(name)  # a missing model is named as such, not as a missing version
        model, v = self._version(name, version)
        model.aliases[alias] = v.version

    @_served
    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._model(name).aliases.pop(alias, None)  # removing an absent alias is no error, as in MLflow

    @_served
    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        model = self._model(name)
        if alias not in model.aliases:
            raise MlflowException(f"Registered model alias {alias} not found.", error_code=INVALID_PARAMETER_VALUE)
        return model.version_entity(model.versions[model.aliases[alias]])
