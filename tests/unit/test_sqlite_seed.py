"""A new SQLite tracking store seeded from the template is the store MLflow would have made, never
replaces one that exists, and leaves the store to MLflow when the template cannot be had."""

from __future__ import annotations

import sqlite3

from raymlops.registry import sqlite_seed


def _ddl(sql: str | None) -> tuple[str, ...]:
    """A statement's lines as a set: MLflow's migrations emit a table's constraints in an order that
    varies between two runs in one process (the same table, the same constraints)."""
    return tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))


def _schema(path) -> tuple[set, list, list]:
    db = sqlite3.connect(path)
    try:
        tables = {(kind, name, _ddl(sql)) for kind, name, sql in
                  db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()}
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = db.execute("SELECT name, artifact_location FROM experiments ORDER BY experiment_id").fetchall()
    finally:
        db.close()
    return tables, revision, experiments


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow puts the Default experiment's artifacts under the working folder
    plain, seeded = tmp_path / "plain.db", tmp_path / "seeded.db"
    assert sqlite_seed.seed_sqlite_store(seeded)
    assert (tmp_path / "cache" / "raymlops").is_dir()
    for db in (plain, seeded):  # MLflow opens both as it opens any store: tracking, then the registry
        client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        client.search_experiments()
        client.search_registered_models()
    assert _schema(seeded) == _schema(plain)
    tables, revision, experiments = _schema(seeded)
    assert len(tables) > 50 and revision and experiments == [("Default", str(tmp_path / "mlruns" / "0"))]


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"somebody's store")
    assert not sqlite_seed.seed_sqlite_store(store)
    assert store.read_bytes() == b"somebody's store"
    assert list(tmp_path.glob(".mlflow.db.*")) == []  # no copy left behind


def test_without_a_usable_cache_the_store_is_left_to_mlflow(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    store = tmp_path / "work" / "mlflow.db"
    with caplog.at_level("WARNING"):
        assert not sqlite_seed.seed_sqlite_store(store)
    assert not store.exists() and "MLflow creates it" in caplog.text


def test_two_seeders_of_one_new_store_leave_one_whole_store(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sqlite_seed.template_path()  # built once; the race is over the copy
    store = tmp_path / "mlflow.db"
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(sqlite_seed.seed_sqlite_store(store)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True], results  # exactly one copy became the store
    assert _schema(store)[1] and list(tmp_path.glob(".mlflow.db.*")) == []
