"""Admission by the latency SLO: how many requests a replica takes in at once, learned from its latency.

Serve's own limits (``max_ongoing_requests`` per replica, ``max_queued_requests`` per proxy) are counts.
A count that keeps latency within ``monitoring.latency_slo_ms`` depends on what a model call costs on this
machine, which no config knows: at the shipped 64 + 64, a replica whose model scores 100 requests/s queues
over a second of work, twenty times a 50 ms SLO. So each replica also keeps an adaptive limit on the
requests inside it, the way TCP sizes its window (additive increase, multiplicative decrease):

- a request that finds the replica at its limit is shed at once (503 and ``Retry-After``): it was never
  started, so the client may retry it anywhere;
- a request that finished slower than ``target`` x the SLO lowers the limit, by ``decrease`` or in
  proportion to how far over it was (at most by half), if it was admitted after the last decrease: the
  requests admitted before it were admitted under the old limit and say nothing new about the new one
  (TCP reacts once per window for the same reason);
- a request that finished within it, while the limit was what kept others out, raises it by one per
  limit's worth of such requests (about one per round trip). The limit starts at the floor.

The limit never goes below ``floor``, and a lone request is always admitted. The replica sets the floor
to twice what one model call takes together (a batch, or the model-call threads without batching): one
call running and the next one filling. Below that, shedding shortens no one's wait much but leaves the
model idle between calls while new requests come through the proxy: at a floor of one batch, 32 closed-loop
clients got half the requests/s. Pure logic with an injectable clock; no Ray.

Example::

    gate = SloAdmission(slo_s=0.05, floor=32, ceiling=64)
    ticket = gate.enter()            # None: shed this request now
    ...                              # score it
    gate.leave(ticket)               # its latency moves the limit
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


RECENT = 1000  # latencies kept for the p50/p99 that stats() reports


@dataclass(frozen=True)
class Ticket:
    """An admitted request: when it came in, and how many times the replica had been full by then (if it
    is full again before the request leaves, the limit was keeping others out while it was inside)."""

    started: float
    full_before: int


class SloAdmission:
    """An AIMD limit on a replica's requests in flight, driven by their latency against the SLO."""

    def __init__(self, slo_s: float, *, floor: int, ceiling: int, target: float = 0.8, decrease: float = 0.9,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slo_s <= 0 or not 1 <= floor <= ceiling or not 0 < target <= 1 or not 0 < decrease < 1:
            raise ValueError(f"need slo_s > 0, 1 <= floor <= ceiling, 0 < target <= 1, 0 < decrease < 1 (got "
                             f"{slo_s}, {floor}, {ceiling}, {target}, {decrease})")
        self.slo_s, self.floor, self.ceiling = slo_s, floor, ceiling
        self.target_s, self.decrease, self.clock = target * slo_s, decrease, clock
        self.limit = float(floor)
        self.in_flight = 0
        self.shed = 0
        self._full = 0  # times a request was shed or filled the last place
        self._last_decrease = float("-inf")
        self._recent: deque[float] = deque(maxlen=RECENT)  # latencies of the latest measured requests
        self._lock = threading.Lock()

    def enter(self) -> Ticket | None:
        """Admit a request (a Ticket to hand back to ``leave``), or None: shed it."""
        with self._lock:
            allowed = max(self.floor, int(self.limit))
            if self.in_flight >= allowed:
                self.shed += 1
                self._full += 1
                return None
            ticket = Ticket(started=self.clock(), full_before=self._full)
            self.in_flight += 1
            if self.in_flight >= allowed:
                self._full += 1
            return ticket

    def leave(self, ticket: Ticket, *, measured: bool = True) -> float:
        """The request is done; its latency (unless ``measured`` is False: it failed) moves the limit.
        Returns the latency."""
        now = self.clock()
        latency = now - ticket.started
        with self._lock:
            self.in_flight -= 1
            if not measured:
                return latency
            self._recent.append(latency)
            if latency > self.target_s:
                if ticket.started >= self._last_decrease:
                    factor = max(0.5, min(self.decrease, self.target_s / latency))
                    self.limit = max(float(self.floor), self.limit * factor)
                    self._last_decrease = now
            elif self._full > ticket.full_before:  # the limit kept others out while it was inside
                self.limit = min(float(self.ceiling), self.limit + 1.0 / max(self.limit, 1.0))
        return latency

    def stats(self) -> dict[str, float | None]:
        """The limit, requests inside, shed so far, and the latest requests' p50/p99 (ms) as this replica
        measured them (what the SLO is about)."""
        with self._lock:
            recent = sorted(self._recent)
        def pct(q: float) -> float | None:
            return round(recent[min(len(recent) - 1, int(q * len(recent)))] * 1000, 1) if recent else None
        return {"limit": round(self.limit, 2), "in_flight": self.in_flight, "shed": self.shed,
                "floor": self.floor, "slo_ms": self.slo_s * 1000, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}
