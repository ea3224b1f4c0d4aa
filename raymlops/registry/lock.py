"""The lock every writer of one model registry takes to move an alias, whatever its working folder.

Two pipelines with different workdirs that share one MLflow store must exclude each other, so the
lock lives with the store, not the workdir:

- SQLite or a ``file:`` store: an ``flock`` on ``registry/registry.lock`` beside the store file (for the
  embedded default, the store is in the workdir, so that is the workdir's ``registry/`` as before). The
  audit log lives in the same folder: one registry, one history.
- A tracking server (``http(s)://``): the client cannot see the server's files, so the lock is a
  PostgreSQL advisory lock in the database ``registry.lock_url`` names (the MLflow server's own
  database, or any one every writer reaches), keyed by the tracking URI. Without ``lock_url`` it falls
  back to the workdir's file lock, which excludes writers of that workdir only (the config loader says so).

Either way the lock is taken with a timeout (``registry.lock_timeout_s``): a writer that cannot get it
raises RegistryError naming who holds it, instead of waiting without end.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from raymlops.errors import RegistryError

POLL_S = 0.05


def store_file(tracking_uri: str) -> Path | None:
    """The local file (SQLite) or folder (``file:``) of a store on this machine's filesystem, else None."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).resolve()  # sqlite:////abs/path keeps its leading /
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlparse(tracking_uri).path)).resolve()
    if "://" not in tracking_uri:  # a plain folder, as MLflow reads it
        return Path(tracking_uri).resolve()
    return None


def registry_home(tracking_uri: str, workdir: Path) -> Path:
    """Where the alias lock and the audit log of this registry live: ``registry/`` beside the store
    (the embedded default's store is in the workdir, so that is the workdir's ``registry/``); for a
    tracking server, the workdir's (see the module docstring)."""
    store = store_file(tracking_uri)
    return (store.parent if store is not None else Path(workdir)) / "registry"


def advisory_key(tracking_uri: str) -> int:
    """A signed 64-bit advisory-lock key for one registry (PostgreSQL takes bigint keys)."""
    return int.from_bytes(hashlib.sha256(f"raymlops-registry:{tracking_uri}".encode()).digest()[:8], "big",
                          signed=True)


@contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive flock on ``path``; RegistryError after ``timeout_s`` naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise RegistryError(f"the registry lock {path} is held by another writer ({holder}) for more "
                                        f"than {timeout_s:g} s; retry when it is done (registry.lock_timeout_s)"
                                        ) from None
                time.sleep(POLL_S)
        _write_holder(path)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}"


def _write_holder(path: Path) -> None:
    try:
        path.with_suffix(".holder").write_text(_holder_text())
    except OSError:
        pass  # only for messages


def _read_holder(path: Path) -> str:
    try:
        return path.with_suffix(".holder").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def advisory_lock(lock_url: str, password: str | None, key: int, timeout_s: float) -> Iterator[None]:
    """``pg_try_advisory_lock(key)`` on one connection, polled until ``timeout_s``; released (and the
    connection closed) at the end. PostgreSQL releases it too if this process dies."""
    import psycopg2

    u = urlparse(lock_url)
    try:
        conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=unquote(u.username or ""),
                                password=password, dbname=(u.path or "/").lstrip("/") or "postgres",
                                connect_timeout=10, application_name="raymlops-registry-lock")
    except psycopg2.Error as exc:
        raise RegistryError(f"cannot reach the registry lock database {lock_url}: "
                            f"{str(exc).strip().splitlines()[0]}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + timeout_s
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    cur.execute("SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN "
                                "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                                "AND l.objid::bigint = %s AND a.pid <> pg_backend_pid() LIMIT 1", (key & 0xFFFFFFFF,))
                    row = cur.fetchone()
                    holder = f"backend pid {row[0]} ({row[1] or 'no name'}) connected {row[2]:%H:%M:%S}" if row \
                        else "unknown"
                    raise RegistryError(f"the registry lock (advisory lock {key} in {lock_url}) is held by another "
                                        f"writer ({holder}) for more than {timeout_s:g} s; retry when it is done "
                                        "(registry.lock_timeout_s)")
                time.sleep(POLL_S * 4)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
