"""Model calls with deadlines (raymlops.serving.model_calls): pure asyncio, no Ray."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raymlops.serving.model_calls import ModelCallTimeout, ModelCalls


def test_a_call_returns_its_value_and_leaves_nothing_running():
    calls = ModelCalls(workers=2, timeout_s=5)
    assert asyncio.run(calls.run(lambda a, b: a + b, 2, 3)) == 5
    assert calls.stats() == {"running": 0, "abandoned": 0, "timed_out": 0, "workers": 2}


def test_errors_of_the_model_reach_the_caller():
    calls = ModelCalls(workers=1, timeout_s=5)

    def broken():
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        asyncio.run(calls.run(broken))
    assert calls.stats()["running"] == 0


def test_a_hung_call_times_out_at_its_deadline_and_is_counted_until_it_returns():
    calls = ModelCalls(workers=2, timeout_s=0.2)
    release = threading.Event()

    async def scenario():
        started = time.monotonic()
        with pytest.raises(ModelCallTimeout, match="within 0.2 s"):
            await calls.run(release.wait, 30)
        waited = time.monotonic() - started
        assert calls.stats()["abandoned"] == 1 and calls.stats()["running"] == 1
        # The event loop was never blocked: another call goes through while the first one hangs.
        assert await calls.run(lambda: "ok") == "ok"
        return waited

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 1.0
    release.set()
    deadline = time.monotonic() + 5
    while calls.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.stats() == {"running": 0, "abandoned": 0, "timed_out": 1, "workers": 2}


def test_calls_queued_behind_hung_ones_time_out_without_ever_running():
    calls = ModelCalls(workers=1, timeout_s=5)
    release, ran = threading.Event(), []

    async def scenario():
        hung = asyncio.ensure_future(calls.run(release.wait, 30))
        await asyncio.sleep(0.05)
        with pytest.raises(ModelCallTimeout):
            await calls.run(ran.append, "queued", timeout_s=0.1)
        hung.cancel()

    asyncio.run(scenario())
    release.set()
    time.sleep(0.2)
    assert ran == []  # the waiting call was dropped, not run late
    assert calls.stats()["running"] == 0


def test_a_cancelled_request_abandons_its_call():
    calls = ModelCalls(workers=1, timeout_s=30)
    release = threading.Event()

    async def scenario():
        task = asyncio.ensure_future(calls.run(release.wait, 30))
        await asyncio.sleep(0.05)
        task.cancel()  # what a proxy timeout or a client disconnect does to the request
        with pytest.raises(asyncio.CancelledError):
            await task
        assert calls.stats()["abandoned"] == 1

    asyncio.run(scenario())
    release.set()
    deadline = time.monotonic() + 5
    while calls.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.stats()["abandoned"] == 0 and calls.stats()["timed_out"] == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ModelCalls(workers=0, timeout_s=1)
    with pytest.raises(ValueError):
        ModelCalls(workers=1, timeout_s=0)
