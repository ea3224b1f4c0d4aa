"""A new SQLite tracking store starts as a copy of a migrated template, not as a migration in place.

MLflow makes a new SQLite store by running every one of its Alembic migrations, about 4 s of CPU on
a 2-core machine: a fifth of a small ``raymlops run``, paid again by every new working folder. What the
migrations produce depends only on MLflow's version, so the template is built once per version in
the user's cache (``$XDG_CACHE_HOME/raymlops``, else ``~/.cache/raymlops``) and copied. The template
holds the tables and the Alembic revision and no experiment: MLflow adds its Default experiment,
with this store's own artifact root, the first time it opens the copy.

Anything that goes wrong here (no writable cache, an unexpected MLflow) leaves the store to MLflow,
which then migrates it as before: seeding is a shortcut, never a requirement.

Example::

    seed_sqlite_store(Path(".raymlops/mlflow.db"))   # True when the copy was made
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raymlops"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def template_path() -> Path:
    """The migrated, empty store for the installed MLflow, built on first use (atomically)."""
    import mlflow

    path = cache_dir() / f"mlflow-{mlflow.__version__}-sqlite-template.db"
    if path.is_file():
        return path
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".template-", suffix=".db", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # SQLite creates it
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)  # the same tables and migrations MLflow runs on a new store
        finally:
            engine.dispose()
        _fsync(tmp)
        os.replace(tmp, path)  # two builders at once: either one's complete file wins
    finally:
        tmp.unlink(missing_ok=True)
    return path


def seed_sqlite_store(db_path: Path) -> bool:
    """Copy the template to ``db_path`` unless a store is already there; False when MLflow must make it."""
    db_path = Path(db_path)
    if db_path.exists():
        return False
    try:
        template = template_path()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{db_path.name}.", suffix=".seed", dir=db_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(template, tmp)
            _fsync(tmp)
            try:
                os.link(tmp, db_path)  # create-if-absent: never replaces a store another writer just made
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except Exception as exc:  # the shortcut failed: MLflow migrates the new store itself
        log.warning("could not seed the MLflow store %s from a template (%s: %s); MLflow creates it",
                    db_path, type(exc).__name__, exc)
        return False
