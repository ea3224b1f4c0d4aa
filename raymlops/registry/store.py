"""MLflow at the edge: tracking runs, registering gated packages, and moving aliases with an audit log.

The embedded default is SQLite in the working folder (artifacts beside it); ``registry.tracking_uri``
or ``MLFLOW_TRACKING_URI`` point at a tracking server instead. Promotion changes one thing, the
``champion`` alias; every alias move goes through ``move_alias``, which holds the registry's lock
(``registry.lock``: every writer of the store takes the same one, whatever its workdir), retries the
unique-constraint race MLflow 3.17 has on SQLite under concurrent writers, and appends the move to the
audit log (JSON lines) in the same critical section, so the log and the registry agree.

Example::

    reg = Registry.for_config(cfg)
    reg.promote("flights-delay", 3, reason="manual")
    reg.rollback("flights-delay")
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raymlops.config import PipelineConfig
from raymlops.errors import RegistryError
from raymlops.registry.lock import advisory_key, advisory_lock, file_lock, registry_home, store_file
from raymlops.registry.sqlite_seed import seed_sqlite_store
from raymlops.workspace import Workspace, append_lines, publish_folder, read_json_lines

log = logging.getLogger(__name__)

# Downloads of a few small files need no progress bar (it floods logs of replicas and CI).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

CHAMPION = "champion"
CHALLENGER = "challenger"
# The version tag that authenticates a package: the sha256 of its manifest.json, written at registration.
MANIFEST_TAG = "raymlops.manifest_sha256"
_RETRIES = 8


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the code that ran (with '+dirty' when the tree has changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=cwd, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _is_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("unique constraint", "database is locked", "already exists", "integrityerror"))


def _retry(fn, what: str):
    for attempt in range(_RETRIES):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps SQLAlchemy errors in MlflowException
            if attempt == _RETRIES - 1 or not _is_race(exc):
                raise RegistryError(f"{what} failed: {exc}") from exc
            time.sleep(0.05 * (2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def is_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow call failed because the tracking server could not be reached (not a refusal);
    the causes of a wrapping error count too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                   "Failed to establish a new connection", "Read timed out",
                                   "RemoteDisconnected", "Connection aborted")):
            return True
        current = current.__cause__
    return False


def alias_absent(exc: BaseException) -> bool:
    """Whether an MLflow error is the registry's answer that the model or alias does not exist."""
    code = getattr(exc, "error_code", "")
    text = str(exc)
    return not is_unreachable(exc) and (code == "RESOURCE_DOES_NOT_EXIST"
                                        or (code == "INVALID_PARAMETER_VALUE" and "not found" in text))


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME`` (the champion), ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias, version)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if not name or not alias:
            raise RegistryError(f"model reference {ref!r} should look like NAME@ALIAS")
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        if not name or not version.isdigit():
            raise RegistryError(f"model reference {ref!r} should look like NAME/VERSION (a number)")
        return name, None, version
    if not ref:
        raise RegistryError("empty model reference")
    return ref, CHAMPION, None


@dataclass(frozen=True)
class AliasMove:
    time: float
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    action: str
    reason: str
    actor: str
    # "intent" is written before the alias moves and "done" after it, so a crash in between is visible;
    # lines from before this field existed are complete moves.
    state: str = "done"


class Registry:
    """The MLflow tracking store and model registry of one working folder."""

    def __init__(self, tracking_uri: str, workdir: Path, *, lock_url: str | None = None,
                 lock_password_env: str | None = None, lock_timeout_s: float = 120.0, client: Any = None) -> None:
        """``client`` replaces the MLflow client made on first use: unit tests pass the in-memory one
        (``registry.memory.InMemoryMlflowClient``)."""
        self.tracking_uri = tracking_uri
        self.workdir = Path(workdir)
        self.artifact_root = (self.workdir / "mlartifacts").resolve()
        home = registry_home(tracking_uri, self.workdir)  # beside the store: every writer of it sees the lock
        self.audit_path = home / "audit.jsonl"
        self.lock_path = home / "registry.lock"
        self.lock_url, self.lock_password_env, self.lock_timeout_s = lock_url, lock_password_env, lock_timeout_s
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        self._held = threading.local()  # how deep this thread is inside ``_locked``
        if client is not None:
            self.__dict__["client"] = client  # where the cached property keeps its value

    @functools.cached_property
    def client(self) -> Any:
        """The MLflow client, made on first use: importing MLflow and opening its store costs ~1.5 s of
        CPU, which a serving replica starting from its node's package cache does not spend before serving."""
        from mlflow.tracking import MlflowClient

        if not self.tracking_uri.startswith("sqlite"):
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        # MLflow creates and migrates a new SQLite store when a client is made (and the registry store on
        # first use); several processes doing it at once (pipelines started together on a fresh workdir)
        # crash on each other's half-made tables. One at a time, under the registry lock.
        with self._locked():
            if self.tracking_uri.startswith("sqlite:///"):
                seed_sqlite_store(store_file(self.tracking_uri))  # a new store copies a migrated template: ~4 s of CPU less
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            client.search_registered_models(max_results=1)
        return client

    @classmethod
    def for_config(cls, cfg: PipelineConfig) -> Registry:
        r = cfg.registry
        return cls.for_workdir(cfg.workdir_path, r.tracking_uri, lock_url=r.lock_url,
                               lock_password_env=r.lock_password_env, lock_timeout_s=r.lock_timeout_s)

    @classmethod
    def for_workdir(cls, workdir: str | Path, tracking_uri: str | None = None, **lock: Any) -> Registry:
        ws = Workspace(Path(workdir).resolve()).ensure()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ws.mlflow_uri
        return cls(uri, ws.root, **lock)

    # ------------------------------------------------------------------------------- tracking
    def experiment_id(self, name: str) -> str:
        def get_or_create() -> str:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = self.artifact_root.as_uri() if "://" not in self.tracking_uri or \
                self.tracking_uri.startswith("sqlite") else None
            return self.client.create_experiment(name, artifact_location=location)
        return _retry(get_or_create, f"creating MLflow experiment {name!r}")

    def start_run(self, experiment: str, run_name: str, tags: dict[str, str] | None = None,
                  parent_run_id: str | None = None) -> str:
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags)
        return run.info.run_id

    def end_interrupted_runs(self, experiment: str, run_name: str, resumed_by: str) -> list[str]:
        """Mark earlier attempts of ``run_name`` still shown as RUNNING (their process died) as KILLED.

        A driver that is killed never ends its MLflow run (nor its trials' runs), which would stay
        "running" forever. A rerun with the same name resumes their work, so it closes them and says so.
        """
        stale, children = self._running_attempts(experiment, run_name, but=resumed_by)
        for run_id in children + stale:
            self.set_tags(run_id, {"raymlops.resumed_by": resumed_by})
            self.end_run(run_id, "KILLED")
        return stale

    def fail_running_attempts(self, experiment: str, run_name: str, reason: str) -> list[str]:
        """Mark the attempts of ``run_name`` still RUNNING (and their trials) FAILED, saying why: what
        ``raymlops run`` does when its pipeline process died without ending them (Ray stopped under it)."""
        stale, children = self._running_attempts(experiment, run_name)
        for run_id in children + stale:
            self.set_tags(run_id, {"raymlops.failure": reason[:5000]})
            self.end_run(run_id, "FAILED")
        return stale

    def _running_attempts(self, experiment: str, run_name: str, but: str | None = None) -> tuple[list[str], list[str]]:
        """Top-level runs of ``run_name`` shown as RUNNING (except ``but``), and their RUNNING child runs."""
        exp = self.experiment_id(experiment)
        # The name is matched here, not in the filter: MLflow's filter parser keeps a backslash that escapes
        # a quote, so a name holding ' or \\ could never match there. Few runs are RUNNING at a time.
        stale = [r.info.run_id for r in self.client.search_runs([exp], "attributes.status = 'RUNNING'")
                 if (r.data.tags or {}).get("raymlops.run_name") == run_name and r.info.run_id != but]
        children = [r.info.run_id for parent in stale for r in self.client.search_runs(
            [exp], f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")]
        return stale, children

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, history: list[dict[str, Any]], step_key: str = "epoch") -> None:
        """Log many metric values in batches (one call per 1,000 values, not one per value)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for i, row in enumerate(history):
            step = int(row.get(step_key, i))
            for k, v in row.items():
                if k != step_key and isinstance(v, int | float) and not isinstance(v, bool) and v == v:
                    items.append(Metric(k, float(v), now, step))
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, local_file: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(local_file), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------------------- registry
    def register(self, name: str, run_id: str, artifact_path: str, tags: dict[str, str],
                 description: str = "") -> str:
        """Create a model version from a run's logged package (call only after every gate passed)."""
        def ensure_model() -> None:
            try:
                self.client.get_registered_model(name)
            except Exception:
                self.client.create_registered_model(name, description="Registered by raymlops")
        _retry(ensure_model, f"creating registered model {name!r}")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        mv = _retry(lambda: self.client.create_model_version(name, source, run_id=run_id, tags=tags,
                                                             description=description),
                    f"registering a version of {name!r}")
        return str(mv.version)

    def version_for_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None only when the registry answers that there is none.

        A registry that cannot be reached is not an answer: it raises RegistryError, so that no caller
        takes an outage for "no champion" (settling an interrupted move as abandoned when it happened,
        or a replica dropping its challenger)."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception as exc:
            if alias_absent(exc):
                return None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if is_unreachable(exc):
                raise RegistryError(f"the MLflow tracking server at {self.tracking_uri} cannot be reached, so "
                                    f"where {name!r}@{alias} points is unknown: {first}") from exc
            raise RegistryError(f"cannot read alias {alias!r} of model {name!r} at {self.tracking_uri}: {first}") from exc

    def resolve(self, ref: str) -> tuple[str, str]:
        """A model reference (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``) -> (name, version) that exists."""
        name, alias, version = parse_model_ref(ref)
        if alias is not None:
            version = self.version_for_alias(name, alias)
            if version is None:
                raise RegistryError(f"model {name!r} has no version with alias {alias!r} in {self.tracking_uri}")
        self.version_info(name, version)
        return name, str(version)

    def version_info(self, name: str, version: str | int) -> Any:
        try:
            return self.client.get_model_version(name, str(version))
        except Exception as exc:
            raise RegistryError(f"model {name!r} has no version {version}: {exc}") from exc

    def registered_manifest(self, name: str, version: str | int) -> str | None:
        """The manifest digest recorded when ``version`` was registered; None for versions registered before
        raymlops recorded it (their files are still checked against their manifest, with a warning)."""
        digest = (self.version_info(name, version).tags or {}).get(MANIFEST_TAG)
        if digest is None:
            log.warning("model %r v%s has no %s tag (registered by an older raymlops): its manifest cannot be "
                        "authenticated, only the files it lists", name, version, MANIFEST_TAG)
        return digest

    def download_package(self, name: str, version: str | int, dest: str | Path) -> Path:
        """Fetch a version's package files under ``dest`` and verify them against the manifest registered
        with the version (raises ModelPackageError, naming the file, when they differ)."""
        import mlflow.artifacts

        from raymlops.model.packaging import verify_package

        mv = self.version_info(name, version)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dest),
                                                        tracking_uri=self.tracking_uri))
        verify_package(path, self.registered_manifest(name, version))
        return path

    def local_package(self, name: str, version: str | int) -> Path:
        """This workdir's copy of a version's package (``packages/NAME-vN/model``), downloaded once (beside,
        then renamed into place) and verified against the registry's manifest digest on every call."""
        from raymlops.model.packaging import verify_package

        target = self.workdir / "packages" / f"{name}-v{version}" / "model"
        if target.is_dir():
            verify_package(target, self.registered_manifest(name, version))
            return target
        return publish_folder(target, lambda tmp: self.download_package(name, version, tmp))

    def aliases(self, name: str) -> dict[str, str]:
        """Where each alias of model ``name`` points, ``{alias: version}``; empty when the registry answers
        that the model does not exist. (Versions from ``list_versions`` carry no aliases: MLflow's SQL
        stores leave them out of a version search.)"""
        try:
            model = self.client.get_registered_model(name)
        except Exception as exc:
            if alias_absent(exc):
                return {}
            raise RegistryError(f"cannot read the aliases of model {name!r}: {exc}") from exc
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def list_versions(self, name: str) -> list[Any]:
        """Model ``name``'s versions, oldest first; empty when the registry answers that it has none.

        A registry that cannot be read is not "no versions": it raises RegistryError (``status`` and
        ``models`` used to print an empty table while the tracking server was down)."""
        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if is_unreachable(exc):
                raise RegistryError(f"the MLflow tracking server at {self.tracking_uri} cannot be reached, so the "
                                    f"versions of model {name!r} are unknown: {first}") from exc
            raise RegistryError(f"cannot list the versions of model {name!r} at {self.tracking_uri}: {first}") from exc
        return sorted(versions, key=lambda v: int(v.version))

    def list_models(self) -> list[Any]:
        return list(self.client.search_registered_models())

    # ---------------------------------------------------------------------------- alias moves
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry's lock (``registry.lock``: beside the store, or an advisory lock), re-entrant within a thread: the MLflow client is made (under this
        lock) on first use, which can be inside an alias move that already holds it, and flock waits on a
        second open of the same file even in the process that holds the first."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        if self.lock_url and store_file(self.tracking_uri) is None:  # a tracking server: the store is not ours to lock
            password = os.environ.get(self.lock_password_env) if self.lock_password_env else None
            taken = advisory_lock(self.lock_url, password, advisory_key(self.tracking_uri), self.lock_timeout_s)
        else:
            taken = file_lock(self.lock_path, self.lock_timeout_s)
        with taken:
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0

    def _append_audit(self, move: AliasMove) -> None:
        append_lines(self.audit_path, [json.dumps(move.__dict__, sort_keys=True)])

    def _audit_records(self) -> list[AliasMove]:
        """The audit log's records; a line torn by a crash (or damaged) is skipped and counted in a warning,
        so it never stops promote, rollback or the loop."""
        values, skipped = read_json_lines(self.audit_path)
        moves = []
        for value in values:
            try:
                moves.append(AliasMove(**value))
            except TypeError:
                skipped += 1
        if skipped:
            log.warning("%s: skipped %d line(s) that are not whole audit records (torn by a crash?)",
                        self.audit_path, skipped)
        return moves

    def audit_log(self, name: str | None = None) -> list[AliasMove]:
        """Completed alias moves in order (a move whose process died half-way counts once settled)."""
        return [m for m in self._audit_records() if m.state == "done" and (name is None or m.model == name)]

    def pending_moves(self, name: str | None = None) -> list[AliasMove]:
        """Intents with no outcome yet: a process died between announcing a move and recording it."""
        records = self._audit_records()
        settled = {(m.time, m.model, m.alias) for m in records if m.state != "intent"}
        return [m for m in records if m.state == "intent"
                and (m.time, m.model, m.alias) not in settled and (name is None or m.model == name)]

    def _settle_pending(self) -> None:
        """Record how each interrupted move ended, judged by where its alias points now (under the lock)."""
        for intent in self.pending_moves():
            now = self.version_for_alias(intent.model, intent.alias)
            happened = now == intent.to_version and now != intent.from_version
            self._append_audit(replace(intent, state="done" if happened else "abandoned",
                                       reason=f"{intent.reason} (settled after an interrupted move: "
                                              f"{'the alias had moved' if happened else 'the alias had not moved'})"))

    def move_alias(self, name: str, alias: str, version: str | int | None, *, action: str, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` (or remove it when None), with retries and an audit entry."""
        with self._locked():
            return self._move_locked(name, alias, version, action=action, reason=reason)

    def _move_locked(self, name: str, alias: str, version: str | int | None, *, action: str,
                     reason: str) -> AliasMove:
        """The move itself; the caller holds the lock."""
        self._settle_pending()
        current = self.version_for_alias(name, alias)
        if version is not None:
            self.version_info(name, version)  # must exist
        move = AliasMove(time=time.time(), model=name, alias=alias, from_version=current,
                         to_version=None if version is None else str(version), action=action,
                         reason=reason, actor=f"{getpass.getuser()}@{os.uname().nodename}:{os.getpid()}",
                         state="intent")
        self._append_audit(move)
        try:
            if version is not None:
                _retry(lambda: self.client.set_registered_model_alias(name, alias, str(version)),
                       f"setting alias {alias!r} of {name!r} to version {version}")
            elif current is not None:
                _retry(lambda: self.client.delete_registered_model_alias(name, alias),
                       f"removing alias {alias!r} of {name!r}")
        except Exception as exc:
            if self.version_for_alias(name, alias) == current:  # it did not move: say so now
                self._append_audit(replace(move, state="abandoned", reason=f"{reason} (failed: {exc})"))
            raise
        done = replace(move, state="done")
        self._append_audit(done)
        return done

    def promote(self, name: str, version: str | int, reason: str = "manual promotion") -> AliasMove:
        """Make ``version`` the champion."""
        return self.move_alias(name, CHAMPION, version, action="promote", reason=reason)

    def champion_history(self, name: str) -> list[str]:
        """Champions in order, replaying the audit log (a rollback pops the latest)."""
        stack: list[str] = []
        for move in self.audit_log(name):
            if move.alias != CHAMPION:
                continue
            if move.action == "rollback":
                if stack:
                    stack.pop()
            elif move.to_version is not None:
                stack.append(move.to_version)
        return stack

    def rollback(self, name: str, reason: str = "manual rollback") -> AliasMove:
        """Point the champion back at the previous champion (the one before the latest promotion)."""
        with self._locked():  # history read and alias moved under one lock: no promotion slips in between
            self._settle_pending()  # an interrupted promotion must count (or not) before history is read
            history = self.champion_history(name)
            if len(history) < 2:
                raise RegistryError(f"model {name!r} has no previous champion to roll back to "
                                    f"(champions so far: {history or 'none'})")
            return self._move_locked(name, CHAMPION, history[-2], action="rollback", reason=reason)
