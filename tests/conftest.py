"""Suite order: quick verdicts first, the long fault injections last (`make test` still runs them all).

Unit tests (pure logic, seconds) run first, then the CLI end to end (each command starts its own Ray,
before the session's Ray and its Serve instance exist), the integration tests on the session's one
local Ray, and last the reliability and multi-node tests, which kill processes, stop servers and start
clusters of their own. Within a group the files keep their order.
"""

from __future__ import annotations

ORDER = ("unit", "e2e", "integration", "reliability", "multinode")


def _group(item) -> int:
    parts = item.path.parts
    for i, name in enumerate(ORDER):
        if name in parts:
            return i
    return len(ORDER)


def pytest_collection_modifyitems(session, config, items) -> None:
    items.sort(key=_group)  # stable: the order inside each group is kept
