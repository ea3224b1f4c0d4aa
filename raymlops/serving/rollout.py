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

Example::

    slots = ModelSlots(Registry.for_workdir(".raymlops"), "flights-delay", api_schema)
    slots.refresh()
    served = slots.pick(canary_share=0.1, draw=random.random())
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Collection
from typing import Any

from raymlops.errors import ModelPackageError, RaymlopsError
from raymlops.packaging import LoadedModel, load_package
from raymlops.registry import CHALLENGER, CHAMPION, Registry

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


class ModelSlots:
    """The champion (always) and the challenger (during a canary) of one registered model."""

    def __init__(self, registry: Registry, model: str, api_schema: dict[str, Any] | None = None,
                 cache_root: str | Path | None = None, trusted_builders: Collection[str] = ()) -> None:
        self.registry = registry
        self.trusted_builders = tuple(trusted_builders)
        self.model = model
        self.api_schema = api_schema
        self.cache_root = Path(cache_root or tempfile.gettempdir())
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

    def _load(self, alias: str, version: str) -> Served:
        dest = Path(tempfile.mkdtemp(prefix=f"raymlops-{self.model}-v{version}-", dir=self.cache_root))
        try:
            path = self.registry.download_package(self.model, version, dest)
            model = load_package(path, self.trusted_builders)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        schema = model.manifest.get("input_schema")
        if self.api_schema is not None and schema != self.api_schema:
            shutil.rmtree(dest, ignore_errors=True)
            raise ModelPackageError(
                f"version {version} of {self.model!r} expects other input columns or types than the deployed API "
                f"accepts ({sorted(schema or {})} vs {sorted(self.api_schema)}); redeploy with `raymlops serve`")
        return Served(alias=alias, version=str(version), model=model, path=dest)

    def _retire(self, served: Served | None) -> None:
        if served is not None:
            shutil.rmtree(served.path, ignore_errors=True)

    def refresh(self) -> list[str]:
        """Bring both slots in line with the registry aliases; return what changed, in words."""
        events: list[str] = []
        with self._lock:
            for alias in (CHAMPION, CHALLENGER):
                wanted = self.registry.version_for_alias(self.model, alias)
                current = self.slots[alias]
                if wanted is None:
                    if alias == CHALLENGER and current is not None:
                        self.slots[alias] = None
                        self._retire(current)
                        events.append(f"challenger v{current.version} removed")
                    continue
                if current is not None and current.version == wanted:
                    self.errors.pop(alias, None)
                    continue
                if self.refused.get(alias) == wanted:
                    continue
                if self.champion is not None and alias == CHALLENGER and self.champion.version == wanted:
                    self.slots[alias] = None  # challenger == champion: nothing to compare
                    self._retire(current)
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
                self._retire(current)
                events.append(f"{alias} v{current.version if current else '-'} -> v{new.version}")
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

    def close(self) -> None:
        for served in self.slots.values():
            self._retire(served)
