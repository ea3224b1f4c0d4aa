"""Suite order.

`make test` runs the suite in three parts. First the unit tests, in two processes of their own (pure
logic: none of them may find a Ray started by another test in its process). Then every other test not
marked ``serial``, in two processes (pytest-xdist, a whole file to one process, so module fixtures are
made once): each process has its own session Ray and real servers, and a command's own Ray is started by
the command as always (the three-node cluster of ``tests/multinode`` too: it asserts no timing). Last
the ``serial`` tests, alone on the machine: they assert wall-clock bounds (latency, throughput, how fast
a replica is replaced), which a second process sharing the two cores would falsify.

In the parallel part files go longest first (longest-processing-time order), so that the two processes
finish together instead of one running a long fault injection at the end while the other idles; the
figures below are each file's seconds in one run of the suite, and only their order matters. A file not
listed counts as its group's typical length.

Without xdist (``pytest tests``, ``make test-unit``) the order is the plain one: unit tests (pure logic,
seconds) first, then the CLI end to end (each command starts its own Ray), the integration tests on the
session's one local Ray, and last the reliability and multi-node tests, which kill processes, stop
servers and start clusters of their own. Within a group the files keep their order.
"""

from __future__ import annotations

import os

ORDER = ("unit", "e2e", "integration", "reliability", "multinode")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist workers export COLUMNS=80 and LINES=24, which a plain run has not; rich fixes a console's
    # width when COLUMNS is set as it is made, so the CLI's consoles would ignore a test's own COLUMNS.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

SECONDS = {  # make test --durations=0, 2026-12-07, on the 2-core machine
    "tests/integration/test_model_families.py": 340,
    "tests/multinode/test_local_cluster.py": 276,  # measured alone, in the serial part
    "tests/reliability/test_driver_killed.py": 286,
    "tests/e2e/test_training_cli.py": 268,
    "tests/integration/test_training.py": 180,
    "tests/e2e/test_replay.py": 103,  # its cron baselines now fit in a process of their own
    "tests/reliability/test_tracking_outage.py": 144,
    "tests/reliability/test_concurrent_writers.py": 136,
    "tests/e2e/test_cli.py": 133,
    "tests/reliability/test_http_fuzz.py": 114,
    "tests/reliability/test_access.py": 108,
    "tests/integration/test_data_stage.py": 63,
    "tests/integration/test_loop.py": 48,
    "tests/e2e/test_ci_check.py": 44,
}
TYPICAL_SECONDS = {"unit": 2, "e2e": 30, "integration": 15, "reliability": 15, "multinode": 60}


def _group(item) -> int:
    parts = item.path.parts
    for i, name in enumerate(ORDER):
        if name in parts:
            return i
    return len(ORDER)


def _seconds(item) -> float:
    path = item.nodeid.split("::", 1)[0]
    group = _group(item)
    return SECONDS.get(path, TYPICAL_SECONDS[ORDER[group]] if group < len(ORDER) else 1)


def pytest_collection_modifyitems(session, config, items) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects, and must order, alike
        items.sort(key=lambda item: -_seconds(item))  # stable: a file's tests stay together and in order
    else:
        items.sort(key=_group)  # stable: the order inside each group is kept
