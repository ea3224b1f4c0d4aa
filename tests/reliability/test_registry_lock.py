"""Issue 18, item 4: the alias lock excludes every writer of one registry, whatever its workdir.

Before, the lock and the audit log lived in each workdir, so two pipelines with different workdirs
sharing one MLflow store promoted without excluding each other. Now the lock is beside the store file
(SQLite, file stores) or a PostgreSQL advisory lock (``registry.lock_url``, for a tracking server), and
a writer that cannot take it within ``registry.lock_timeout_s`` fails naming the holder."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from raymlops.errors import RegistryError
from raymlops.registry.store import Registry

HOLD = """
import sys, time
from raymlops.registry.store import Registry
reg = Registry(sys.argv[1], sys.argv[2], lock_url=sys.argv[3] or None, lock_password_env=sys.argv[4] or None)
with reg._locked():
    print("held", flush=True)
    time.sleep(float(sys.argv[5]))
"""


def _holder(uri: str, workdir, lock_url: str = "", password_env: str = "", seconds: float = 30.0):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, uri, str(workdir), lock_url, password_env, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_two_workdirs_sharing_one_sqlite_store_share_its_lock_and_audit_log(tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    one, two = Registry(uri, tmp_path / "a"), Registry(uri, tmp_path / "b", lock_timeout_s=1.0)
    assert one.lock_path == two.lock_path == tmp_path / "shared" / "registry" / "registry.lock"
    assert one.audit_path == two.audit_path  # one registry, one history
    default = Registry.for_workdir(tmp_path / "c")  # the embedded default: the store is in the workdir
    assert default.lock_path == (tmp_path / "c" / "registry" / "registry.lock").resolve()
    holder = _holder(uri, tmp_path / "a")
    try:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=rf"held by another writer \(pid {holder.pid} on .*for more than 1 s"):
            with two._locked():
                pass
        assert 0.9 < time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    with two._locked():  # released when its holder died
        pass


def test_writers_of_a_tracking_server_exclude_each_other_by_an_advisory_lock(tmp_path, postgres_server):
    server = "http://127.0.0.1:9"  # never contacted: the lock is in PostgreSQL, not the tracking server
    url, env = postgres_server.url, postgres_server.password_env
    holder = _holder(server, tmp_path / "a", url, env)
    try:
        other = Registry(server, tmp_path / "b", lock_url=url, lock_password_env=env, lock_timeout_s=1.0)
        with pytest.raises(RegistryError, match=r"advisory lock .* held by another writer \(backend pid \d+ "
                                                r"\(raymlops-registry-lock\)"):
            with other._locked():
                pass
        unrelated = Registry("http://127.0.0.1:10", tmp_path / "c", lock_url=url, lock_password_env=env,
                             lock_timeout_s=1.0)
        with unrelated._locked():  # another registry's key: not blocked
            pass
    finally:
        holder.kill()
        holder.wait()
    with other._locked():  # PostgreSQL released the lock of the killed holder with its connection
        pass
    wrong = Registry(server, tmp_path / "d", lock_url=url, lock_password_env="NO_SUCH_PASSWORD_VAR",
                     lock_timeout_s=1.0)
    with pytest.raises(RegistryError, match="cannot reach the registry lock database"):
        with wrong._locked():
            pass
