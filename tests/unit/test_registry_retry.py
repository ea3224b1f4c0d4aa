"""The one retry around MLflow writes: SQLite's unique-constraint race is retried, anything else is not."""

from __future__ import annotations

import pytest

from raymlops.registry import store as registry
from raymlops.errors import RegistryError


class Flaky:
    """Fails ``times`` times with ``message``, then answers: the shape of MLflow 3.17's alias race."""

    def __init__(self, times: int, message: str) -> None:
        self.times, self.message, self.calls = times, message, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise Exception(self.message)
        return "moved"


@pytest.fixture
def sleeps(monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(registry.time, "sleep", waited.append)
    return waited


RACE = ("(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.name, "
        "registered_model_aliases.alias")


def test_the_unique_constraint_race_is_retried_with_growing_waits(sleeps):
    fn = Flaky(3, RACE)
    assert registry._retry(fn, "moving the champion alias") == "moved"
    assert fn.calls == 4 and len(sleeps) == 3
    assert sleeps[0] < sleeps[2]  # backs off (with jitter within [0.5, 1.5) of 0.05 * 2**attempt)


def test_a_locked_database_is_retried_too(sleeps):
    fn = Flaky(1, "(sqlite3.OperationalError) database is locked")
    assert registry._retry(fn, "registering") == "moved" and fn.calls == 2


def test_other_errors_are_not_retried_and_say_what_failed(sleeps):
    fn = Flaky(1, "RESOURCE_DOES_NOT_EXIST: Registered Model with name=m not found")
    with pytest.raises(RegistryError, match="moving the champion alias failed: RESOURCE_DOES_NOT_EXIST"):
        registry._retry(fn, "moving the champion alias")
    assert fn.calls == 1 and sleeps == []


def test_a_race_that_never_ends_gives_up_after_the_retries(sleeps):
    fn = Flaky(100, RACE)
    with pytest.raises(RegistryError, match="UNIQUE constraint"):
        registry._retry(fn, "moving the champion alias")
    assert fn.calls == registry._RETRIES and len(sleeps) == registry._RETRIES - 1


def test_the_registry_lock_is_reentrant_within_a_thread_and_exclusive_across_threads(tmp_path):
    """The MLflow client is made under the lock on first use, possibly inside an alias move holding it."""
    import threading
    import time

    reg = registry.Registry(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)  # no MLflow client is made here
    order: list[str] = []
    with reg._locked():
        with reg._locked():  # would wait on itself forever if not re-entrant
            order.append("inner")

        def other_thread() -> None:
            with reg._locked():
                order.append("other")

        other = threading.Thread(target=other_thread)
        other.start()
        time.sleep(0.3)
        order.append("outer done")
    other.join(timeout=5)
    assert order == ["inner", "outer done", "other"]


class _Refusing:
    """An MLflow client whose alias look-up fails as ``exc`` says: for a refusal the in-memory client never
    makes (a permission error)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_model_version_by_alias(self, name, alias):
        raise self.exc


# What MLflow 3.17's REST client raised for a server that refused the connection.
REFUSED = ("API request to http://127.0.0.1:9/api/2.0/mlflow/registered-models/alias failed with exception "
           "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/2.0/mlflow/"
           "registered-models/alias?name=m&alias=champion (Caused by NewConnectionError(\"HTTPConnection(host="
           "'127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] Connection refused\"))")


def test_an_unreachable_registry_is_not_an_absent_alias(tmp_path):
    """version_for_alias said None (no champion) for every error, so an outage settled a move that had
    happened as 'abandoned' and made replicas drop their challenger."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from raymlops.errors import RegistryError
    from raymlops.registry.memory import InMemoryMlflowClient
    from raymlops.registry.store import Registry, alias_absent, is_unreachable

    client = InMemoryMlflowClient(tmp_path / "store", tracking_uri="http://127.0.0.1:9")
    reg = Registry("http://127.0.0.1:9", tmp_path, client=client)
    with pytest.raises(MlflowException, match="^Registered Model with name=m not found$") as answer:
        client.get_model_version_by_alias("m", "champion")
    assert answer.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert reg.version_for_alias("m", "champion") is None
    client.create_registered_model("m")
    with pytest.raises(MlflowException, match=r"^Registered model alias champion not found\.$") as answer:
        client.get_model_version_by_alias("m", "champion")
    assert answer.value.error_code == "INVALID_PARAMETER_VALUE"
    assert reg.version_for_alias("m", "champion") is None
    assert is_unreachable(MlflowException(REFUSED)) and not alias_absent(MlflowException(REFUSED))
    client.unreachable = True
    with pytest.raises(RegistryError, match="cannot be reached, so where 'm'@champion points is unknown") as err:
        reg.version_for_alias("m", "champion")
    assert is_unreachable(err.value)
    reg = Registry("http://127.0.0.1:9", tmp_path,
                   client=_Refusing(MlflowException("permission denied", error_code=PERMISSION_DENIED)))
    with pytest.raises(RegistryError, match="cannot read alias 'champion' of model 'm'"):
        reg.version_for_alias("m", "champion")
