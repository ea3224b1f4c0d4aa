"""SQL sources through ray.data.read_sql against real databases: a PostgreSQL server and a SQLite file.

The PostgreSQL server is started by the ``postgres_server`` fixture (tests/integration/servers.py) from
the Debian binaries; its password reaches Ray's workers through ``password_env``.
"""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from raymlops.config import load_config
from raymlops.data.stage import run_data_stage
from raymlops.errors import ConfigError, DataSourceError, DataValidationError, RaymlopsError
from tests.helpers import SMOKE_FLIGHTS, smoke_dict, write_config
from tests.integration.servers import PG_PASSWORD, PG_PASSWORD_ENV

pytestmark = pytest.mark.integration

FLIGHT_COLUMNS = ("year, month, day, sched_dep_time, sched_arr_time, carrier, flight, tailnum, origin, dest, "
                  "distance, hour, minute, time_hour, arr_delay, cancelled, delayed")
# time_hour is a timestamptz in PostgreSQL; the weather CSV holds it as ISO text ("2013-01-01T11:00:00Z").
# The join key is rendered as that same text (see test_postgres_timestamp_join_key_matches_csv_text_key).
PG_QUERY = ("SELECT " + FLIGHT_COLUMNS.replace(
    "time_hour", "to_char(time_hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS time_hour")
    + " FROM flights")
PG_NATIVE_QUERY = f"SELECT {FLIGHT_COLUMNS} FROM flights"



def _config_with_flights(tmp_path, flights_source: dict):
    """The smoke pipeline with its flights source replaced (weather stays the CSV, joined as in smoke)."""
    data = smoke_dict()
    sources = data["data"]["sources"]
    assert sources[0]["name"] == "flights"
    sources[0] = {"name": "flights", **flights_source}
    return load_config(write_config(tmp_path, data))


def _pg_source(server, *, query: str = PG_QUERY, password_env: str | None = PG_PASSWORD_ENV) -> dict:
    src = {"type": "sql", "url": server.url, "query": query}
    if password_env is not None:
        src["password_env"] = password_env
    return src


def _assert_smoke_result(result, sql_source: str) -> None:
    assert result.report.passed, result.report.summary()
    assert result.report.rows == 3000
    assert result.snapshot.manifest.rows == 3000
    assert sum(result.split_rows.values()) == 3000
    assert all(n > 0 for n in result.split_rows.values()), result.split_rows
    assert sql_source in result.snapshot.manifest.sources
    assert any(s.endswith("weather.csv") for s in result.snapshot.manifest.sources)
    written = json.loads(result.report_path.read_text())
    assert written["passed"] is True and written["rows"] == 3000
    # The weather join matched: the joined columns are mostly present.
    snap = pd.concat([pd.read_parquet(result.snapshot.path / f) for f in result.snapshot.manifest.files],
                     ignore_index=True)
    assert len(snap) == 3000
    assert snap["temp"].notna().mean() > 0.9
    assert "arr_delay" not in snap.columns  # dropped by the smoke cleaning
    assert set(snap["origin"].astype(str)) <= {"EWR", "JFK", "LGA"}


# ------------------------------------------------------------------------------------- PostgreSQL
@pytest.mark.postgres
def test_postgres_source_runs_the_smoke_data_stage(postgres_server, ray_session, tmp_path):
    # postgres_server is requested before ray_session; the password variable was set at collection.
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server))
    result = run_data_stage(cfg)
    _assert_smoke_result(result, postgres_server.url)
    assert PG_PASSWORD not in json.dumps(result.snapshot.manifest.to_dict())


@pytest.mark.postgres
def test_postgres_timestamp_join_key_matches_csv_text_key(postgres_server, ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server, query=PG_NATIVE_QUERY))
    try:
        result = run_data_stage(cfg)
    except DataValidationError as exc:
        raise AssertionError(f"the weather join matched nothing: {exc}") from exc
    _assert_smoke_result(result, postgres_server.url)


@pytest.mark.postgres
def test_postgres_syntax_error_is_a_data_source_error_naming_the_source(postgres_server, ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server, query="SELEC year, month FROM flights"))
    with pytest.raises(RaymlopsError) as info:
        run_data_stage(cfg)
    assert isinstance(info.value, DataSourceError), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert "flights" in message
    assert "syntax error" in message.lower()
    assert "Traceback" not in message


@pytest.mark.postgres
def test_postgres_unknown_table_is_a_data_source_error(postgres_server, ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server, query="SELECT * FROM no_such_table"))
    with pytest.raises(DataSourceError) as info:
        run_data_stage(cfg)
    assert "flights" in str(info.value) and "no_such_table" in str(info.value)


@pytest.mark.postgres
def test_postgres_wrong_password_is_a_data_source_error(postgres_server, ray_session, tmp_path, monkeypatch):
    wrong = "not-the-password-" + PG_PASSWORD[-4:]
    monkeypatch.setenv("RAYMLOPS_TEST_PG_WRONG_PASSWORD", wrong)
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server, password_env="RAYMLOPS_TEST_PG_WRONG_PASSWORD"))
    with pytest.raises(DataSourceError) as info:
        run_data_stage(cfg)
    message = str(info.value)
    assert "'flights'" in message
    assert "password authentication failed" in message
    assert wrong not in message and PG_PASSWORD not in message


@pytest.mark.postgres
def test_postgres_missing_password_variable_names_the_variable(postgres_server, ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("RAYMLOPS_TEST_PG_UNSET_PASSWORD", raising=False)
    cfg = _config_with_flights(tmp_path, _pg_source(postgres_server, password_env="RAYMLOPS_TEST_PG_UNSET_PASSWORD"))
    with pytest.raises(DataSourceError) as info:
        run_data_stage(cfg)
    assert "RAYMLOPS_TEST_PG_UNSET_PASSWORD" in str(info.value)


@pytest.mark.postgres
def test_postgres_url_with_password_is_refused(postgres_server, ray_session, tmp_path):
    """Refused when the config loads (issue 18.7), before any connection is tried."""
    url = postgres_server.url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)
    with pytest.raises(ConfigError) as info:
        _config_with_flights(tmp_path, {"type": "sql", "url": url, "query": PG_QUERY})
    assert "password_env" in str(info.value) and PG_PASSWORD not in str(info.value)


# ----------------------------------------------------------------------------------------- SQLite
@pytest.fixture
def flights_sqlite(tmp_path):
    path = tmp_path / "flights.db"
    frame = pd.read_csv(SMOKE_FLIGHTS)
    with sqlite3.connect(path) as conn:
        frame.to_sql("flights", conn, index=False)
    conn.close()
    return path


def test_sqlite_source_runs_the_smoke_data_stage(flights_sqlite, ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, {"type": "sql", "url": f"sqlite:///{flights_sqlite}",
                                          "query": f"SELECT {FLIGHT_COLUMNS} FROM flights"})
    result = run_data_stage(cfg)
    _assert_smoke_result(result, f"sqlite:///{flights_sqlite}")


def test_sqlite_missing_file_is_a_data_source_error(ray_session, tmp_path):
    missing = tmp_path / "nope.db"
    cfg = _config_with_flights(tmp_path, {"type": "sql", "url": f"sqlite:///{missing}", "query": "SELECT 1"})
    with pytest.raises(DataSourceError) as info:
        run_data_stage(cfg)
    assert str(missing) in str(info.value)
    assert not missing.exists()  # reading never creates the database


def test_sqlite_bad_query_is_a_data_source_error_naming_the_source(flights_sqlite, ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, {"type": "sql", "url": f"sqlite:///{flights_sqlite}",
                                          "query": "SELEC month FROM flights"})
    with pytest.raises(RaymlopsError) as info:
        run_data_stage(cfg)
    assert isinstance(info.value, DataSourceError), f"{type(info.value).__name__}: {info.value}"
    assert "flights" in str(info.value) and "syntax error" in str(info.value)
