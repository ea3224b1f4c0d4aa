"""Reliability tests share the integration session's local Ray and its real servers (loopback only)."""

from tests.integration.conftest import ray_session  # noqa: F401
from tests.integration.servers import mlflow_server, postgres_server  # noqa: F401
