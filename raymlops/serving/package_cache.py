"""A node's copies of model packages, shared by its replicas, and the champion they last confirmed.

Why: a replica that replaces a dead one should serve within seconds. Asking MLflow which version is the
champion costs ~1.5 s of CPU before the first byte is downloaded (importing MLflow, opening its store),
and on a busy 2-core node that doubles. The replicas on a node confirm the champion with the registry
every ``serving.watch_interval_s`` and note it here; a new replica whose node confirmed it recently
starts from the local copy (its checksums verified like any download) and asks the registry right after
it serves. Copies are also downloaded once per node instead of once per replica.

Layout, private to the user (0700; refused, and a private folder per process used instead, when
anyone else could write to it)::

    <tmp>/raymlops-packages-<uid>/<key of tracking URI and model>/
        v3/               a complete package (downloaded beside, then renamed into place)
        champion.json     {"version": "3", "confirmed_at": 1764500000.0}

Example::

    cache = PackageCache.for_model("sqlite:////srv/.raymlops/mlflow.db", "flights-delay")
    path = cache.fetch("3", lambda dest: registry.download_package("flights-delay", "3", dest))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from raymlops.workspace import publish_folder, write_json_atomic

log = logging.getLogger(__name__)
POINTER = "champion.json"
STALE_DOWNLOAD_S = 3600.0  # a half-written download this old belongs to a process that died


class PackageCache:
    """Verified-on-load package copies of one model of one registry, and its last confirmed champion."""

    def __init__(self, root: Path, shared: bool) -> None:
        self.root = root
        self.shared = shared  # False: a private folder of this process (nothing to share or trust)

    @classmethod
    def for_model(cls, tracking_uri: str, model: str, base: str | Path | None = None) -> PackageCache:
        base = Path(base or tempfile.gettempdir()) / f"raymlops-packages-{os.getuid()}"
        key = hashlib.sha256(f"{tracking_uri}\n{model}".encode()).hexdigest()[:16]
        try:
            for folder in (base, base / key):
                folder.mkdir(mode=0o700, exist_ok=True)
                _check_private(folder)
            return cls(base / key, shared=True)
        except (OSError, PermissionError) as exc:
            log.warning("not sharing model packages on this node (%s); using a private folder", exc)
            return cls(Path(tempfile.mkdtemp(prefix=f"raymlops-{model}-")), shared=False)

    def path(self, version: str) -> Path:
        return self.root / f"v{version}"

    def has(self, version: str) -> bool:
        return self.path(version).is_dir()

    def fetch(self, version: str, download: Callable[[Path], Path]) -> Path:
        """The folder of ``version``: the node's copy, or downloaded (``download(dest)`` returns where the
        package landed under ``dest``) beside and renamed into place, so no one sees half a package."""
        target = self.path(version)
        if target.is_dir():
            os.utime(target)  # recently used: kept by ``prune``
            return target
        return publish_folder(target, download, prefix=f".v{version}.")  # another replica's copy wins a race

    def discard(self, version: str) -> None:
        """Remove a copy that failed verification (or was half pruned), so the next fetch downloads it."""
        target = self.path(version)
        if target.is_dir():
            doomed = self.root / f".discarded-v{version}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(target, doomed)  # out of sight at once, then deleted
            except OSError:
                return
            shutil.rmtree(doomed, ignore_errors=True)

    def note_champion(self, version: str, now: float | None = None) -> None:
        """Record that the registry named ``version`` champion at ``now`` (written whole: temp, rename)."""
        write_json_atomic(self.root / POINTER,
                          {"version": str(version), "confirmed_at": time.time() if now is None else now})

    def confirmed_champion(self, max_age_s: float, now: float | None = None) -> str | None:
        """The champion a replica on this node confirmed with the registry within ``max_age_s``, or None."""
        try:
            pointer = json.loads((self.root / POINTER).read_text())
            version, confirmed_at = str(pointer["version"]), float(pointer["confirmed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - confirmed_at
        return version if 0 <= age <= max_age_s else None

    def prune(self, keep: Collection[str], keep_newest: int = 3) -> list[str]:
        """Delete copies beyond the ``keep_newest`` most recently used, except the versions in ``keep``
        (what this replica serves); and downloads left half-written by a process that died."""
        removed: list[str] = []
        now = time.time()
        for entry in self.root.iterdir():
            if entry.name.startswith((".v", ".discarded-")) and now - entry.stat().st_mtime > STALE_DOWNLOAD_S:
                shutil.rmtree(entry, ignore_errors=True)
        copies = sorted((p for p in self.root.glob("v*") if p.is_dir()), key=lambda p: p.stat().st_mtime,
                        reverse=True)
        for old in copies[keep_newest:]:
            version = old.name[1:]
            if version not in keep:
                self.discard(version)
                removed.append(version)
        return removed

    def close(self) -> None:
        """A private folder goes with its process; a shared one stays for the node's next replica."""
        if not self.shared:
            shutil.rmtree(self.root, ignore_errors=True)


def _check_private(folder: Path) -> None:
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{folder} is not a folder (a link?)")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user (uid {info.st_uid})")
    if info.st_mode & 0o077:
        raise PermissionError(f"{folder} is open to other users (mode {stat.filemode(info.st_mode)})")
