"""Which versions a replica serves, and switching them without dropping a request (no Ray here).

A replica holds a ``ModelSlots``: the package the ``champion`` alias names and, when a canary runs, the
one ``challenger`` names. ``refresh()`` reads both aliases from the registry; a version that changed is
downloaded, its checksums verified and the model built *beside* the one serving, then swapped in with one
assignment. Requests in flight finish on the model they started with; the next ones get the new one.
So promotion and rollback are alias moves (``raymlops promote`` / ``raymlops rollback``) that every
replica picks up within ``serving.watch_interval_s``, with zero failed requests.

A version that cannot be loaded (missing, truncated, tampered, or expecting other input columns than the
deployed API accepts) is refused: the replica keeps serving what it has and reports the error in
``/v1/model``. Losing the challenger alias ends the canary; losing the champion keeps the last one.

Packages are kept in the node's ``PackageCache``: downloaded once per node, and a replica that replaces a
dead one may start from the champion its node confirmed with the registry moments ago
(``start_from_cache``), then ``refresh()`` as usual.

Example::

    slots = ModelSlots(Registry.for_workdir(".raymlops"), "flights-delay", api_schema)
    slots.refresh()
    served = slots.pick(canary_share=0.1, draw=random.random())
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Collection
from typing import Any

from raymlops.errors import ModelPackageError, RaymlopsError
from raymlops.model.packaging import PROFILE, LoadedModel, load_package
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry
from raymlops.serving.package_cache import PackageCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One loaded version and the alias it answers for."""

    alias: str
    version: str
    model: LoadedModel
    path: Path
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "version": self.version, "loaded_at": self.loaded_at,
                "lineage": self.model.manifest.get("lineage", {}), "task": self.model.task}

    @functools.cached_property
    def reference_profile(self) -> dict[str, Any]:
        """Read once, the first time the monitor needs it (the node's copy may be pruned later)."""
        return json.loads((self.path / PROFILE).read_text())


class ModelSlots:
    """The champion (always) and the challenger (during a canary) of one registered model."""

    def __init__(self, registry: Registry, model: str, api_schema: dict[str, Any] | None = None,
                 cache: PackageCache | None = None, trusted_builders: Collection[str] = ()) -> None:
        self.registry = registry
        self.trusted_builders = tuple(trusted_builders)
        self.model = model
        self.api_schema = api_schema
        self.cache = cache or PackageCache.for_model(registry.tracking_uri, model)
        self.slots: dict[str, Served | None] = {CHAMPION: None, CHALLENGER: None}
        self.errors: dict[str, str] = {}
        self.refused: dict[str, str] = {}  # alias -> version refused, so a bad version is not retried forever
        self._lock = threading.Lock()  # one refresh at a time; readers never wait on it

    @property
    def champion(self) -> Served | None:
        return self.slots[CHAMPION]

    @property
    def challenger(self) -> Served | None:
        return self.slots[CHALLENGER]

    def _download(self, version: str) -> Path:
        return self.cache.fetch(version, lambda dest: self.registry.download_package(self.model, version, dest))

    def _load(self, alias: str, version: str) -> Served:
        """Verify and build ``version`` from the node's copy; a copy that fails is fetched once more from
        the registry before the version is refused (it may have been damaged or pruned on this node)."""
        if self.cache.has(version):
            try:
                return self._build(alias, version, self.cache.path(version))
            except (ModelPackageError, OSError) as exc:
                log.warning("the node's copy of %s v%s failed (%s); downloading it again", self.model, version, exc)
                self.cache.discard(version)
        try:
            return self._build(alias, version, self._download(version))
        except BaseException:
            self.cache.discard(version)
            raise

    def _build(self, alias: str, version: str, path: Path) -> Served:
        model = load_package(path, self.trusted_builders)
        schema = model.manifest.get("input_schema")
        if self.api_schema is not None and schema != self.api_schema:
            raise ModelPackageError(
                f"version {version} of {self.model!r} expects other input columns or types than the deployed API "
                f"accepts ({sorted(schema or {})} vs {sorted(self.api_schema)}); redeploy with `raymlops serve`")
        return Served(alias=alias, version=str(version), model=model, path=path)

    def start_from_cache(self, max_age_s: float) -> bool:
        """Serve the champion this node confirmed with the registry within ``max_age_s``, from its local
        copy, without asking the registry (the caller refreshes right after). False when there is none."""
        version = self.cache.confirmed_champion(max_age_s)
        if version is None or not self.cache.has(version):
            return False
        try:
            served = self._build(CHAMPION, version, self.cache.path(version))
        except (RaymlopsError, OSError) as exc:
            log.warning("not starting from the node's copy of %s v%s: %s", self.model, version, exc)
            return False
        with self._lock:
            if self.slots[CHAMPION] is None:
                self.slots[CHAMPION] = served
        return True

    def refresh(self) -> list[str]:
        """Bring both slots in line with the registry aliases; return what changed, in words."""
        events: list[str] = []
        confirmed: str | None = None
        with self._lock:
            for alias in (CHAMPION, CHALLENGER):
                wanted = self.registry.version_for_alias(self.model, alias)
                if alias == CHAMPION:
                    confirmed = wanted
                current = self.slots[alias]
                if wanted is None:
                    if alias == CHALLENGER and current is not None:
                        self.slots[alias] = None
                        events.append(f"challenger v{current.version} removed")
                    continue
                if current is not None and current.version == wanted:
                    self.errors.pop(alias, None)
                    continue
                if self.refused.get(alias) == wanted:
                    continue
                if self.champion is not None and alias == CHALLENGER and self.champion.version == wanted:
                    self.slots[alias] = None  # challenger == champion: nothing to compare
                    continue
                try:
                    new = self._load(alias, wanted)
                except (RaymlopsError, OSError) as exc:
                    self.errors[alias] = f"v{wanted}: {exc}"
                    self.refused[alias] = wanted
                    log.error("refusing %s v%s of %s, keeping %s: %s", alias, wanted, self.model,
                              f"v{current.version}" if current else "nothing", exc)
                    events.append(f"{alias} v{wanted} refused: {exc}")
                    continue
                self.slots[alias] = new  # the swap: one assignment
                self.errors.pop(alias, None)
                self.refused.pop(alias, None)
                self._prune()
                events.append(f"{alias} v{current.version if current else '-'} -> v{new.version}")
            if confirmed is not None and self.champion is not None and self.champion.version == confirmed:
                try:
                    self.cache.note_champion(confirmed)  # a replica starting on this node may begin with it
                except OSError as exc:
                    log.warning("could not note the confirmed champion in %s: %s", self.cache.root, exc)
        if self.champion is None:
            raise ModelPackageError(
                f"model {self.model!r} has no servable champion: "
                f"{self.errors.get(CHAMPION, 'no version holds the champion alias')}")
        return events

    def pick(self, canary_share: float, draw: float) -> Served:
        """The version that answers a request: the challenger for ``draw < canary_share``, else the champion."""
        champion, challenger = self.champion, self.challenger
        if champion is None:
            raise ModelPackageError(f"model {self.model!r} has no champion loaded")
        if challenger is not None and draw < canary_share:
            return challenger
        return champion

    def current(self, alias: str) -> Served:
        """The model now answering for ``alias`` (the champion when a challenger went away)."""
        served = self.slots.get(alias) or self.champion
        if served is None:
            raise ModelPackageError(f"model {self.model!r} has no champion loaded")
        return served

    def describe(self) -> dict[str, Any]:
        return {alias: (s.describe() if s else None) for alias, s in self.slots.items()} | {"errors": dict(self.errors)}

    def _prune(self) -> None:
        try:
            self.cache.prune(keep={s.version for s in self.slots.values() if s is not None})
        except OSError as exc:  # tidying must never stop a swap
            log.warning("could not prune the node's model copies in %s: %s", self.cache.root, exc)

    def close(self) -> None:
        self.cache.close()
