"""A real MLflow tracking server on PostgreSQL, the set-up README recommends for a cluster."""

from __future__ import annotations

import pytest

from tests.integration.servers import postgres_server, start_mlflow_server, stop_process_group  # noqa: F401


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory):  # noqa: F811
    proc, server = start_mlflow_server(postgres_server, tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_process_group(proc)
