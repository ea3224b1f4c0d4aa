"""A real MLflow tracking server on PostgreSQL, the set-up README recommends for a cluster."""

from tests.integration.servers import mlflow_server, postgres_server  # noqa: F401
