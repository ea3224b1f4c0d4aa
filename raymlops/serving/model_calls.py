"""Model calls off a replica's event loop, each with a deadline.

A replica's event loop also answers health checks and every other request. A model call that blocks it
(a forward pass that hangs, a custom builder stuck on a lock) would freeze them all, and a cancelled
request would not even stop waiting. So each call runs on a small thread pool and is awaited with a
deadline: past it the caller gets ``ModelCallTimeout`` (HTTP 504) at once. Python cannot kill a thread,
so the call itself is abandoned, counted until it returns, and never awaited again; while a model does
not answer the health probe either, Serve replaces the replica. Pure asyncio, no Ray.

Example::

    calls = ModelCalls(workers=4, timeout_s=10.0)
    scores = await calls.run(model.predict_frame, frame)   # raises ModelCallTimeout after 10 s
    calls.stats()  # {"running": 0, "abandoned": 0, "timed_out": 0, "workers": 4}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelCallTimeout(TimeoutError):
    """A model call did not return within its deadline; the request gets 504."""


class ModelCalls:
    """A bounded thread pool for model calls, with per-call deadlines and honest counts."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        if workers < 1 or timeout_s <= 0:
            raise ValueError(f"workers must be >= 1 and timeout_s > 0 (got {workers}, {timeout_s})")
        self.workers, self.timeout_s = workers, timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raymlops-model")
        self._lock = threading.Lock()
        self._running: set[int] = set()  # ids of calls executing in a thread now
        self._abandoned: set[int] = set()  # of those, the ones whose caller gave up
        self._next_id = 0
        self.timed_out = 0

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """``fn(*args)`` in the pool; ``ModelCallTimeout`` when it takes longer than the deadline."""
        with self._lock:
            call_id = self._next_id
            self._next_id += 1
        future = self._pool.submit(self._tracked, call_id, fn, args)
        deadline = self.timeout_s if timeout_s is None else timeout_s
        try:
            # wrap_future: cancelling the awaiting side cancels a call that has not started yet.
            return await asyncio.wait_for(asyncio.wrap_future(future), deadline)
        except asyncio.TimeoutError:
            self._give_up(call_id)
            with self._lock:
                self.timed_out += 1
            raise ModelCallTimeout(f"the model did not answer within {deadline:g} s; the call was abandoned") from None
        except asyncio.CancelledError:  # the request itself was cancelled (client gone, proxy timeout)
            self._give_up(call_id)
            raise

    def _tracked(self, call_id: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            self._running.add(call_id)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running.discard(call_id)
                self._abandoned.discard(call_id)

    def _give_up(self, call_id: int) -> None:
        with self._lock:
            if call_id in self._running:
                self._abandoned.add(call_id)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": len(self._running), "abandoned": len(self._abandoned),
                    "timed_out": self.timed_out, "workers": self.workers}
