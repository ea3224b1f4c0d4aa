"""One local Ray for the whole integration session, started explicitly and small."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    os.environ.setdefault("RAYMLOPS_PROGRESS", "0")
    from raymlops.runtime.session import ray_runtime

    with ray_runtime(num_cpus=2) as rt:
        yield rt


# Real servers on 127.0.0.1 (PostgreSQL, moto S3), session-scoped; importing them here also sets the
# PostgreSQL password variable before any fixture starts Ray, so Ray's workers inherit it.
from tests.integration.servers import postgres_server, s3_server  # noqa: E402,F401
