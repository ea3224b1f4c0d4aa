"""Admission by the latency SLO (raymlops/serving/admission.py): its rules, and a simulated replica under three
times the load it can serve, where the learned limit keeps admitted requests within the SLO and a fixed count
(Serve's own limits at the shipped 64) does not."""

from __future__ import annotations

import heapq
import random
from collections import deque

import numpy as np
import pytest

from raymlops.serving.admission import SloAdmission


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_lone_request_and_the_floor_are_always_admitted_whatever_the_latency():
    clock = Clock()
    gate = SloAdmission(0.05, floor=2, ceiling=8, clock=clock)
    for _ in range(20):  # every request far over the SLO: the limit cannot fall below the floor
        a, b = gate.enter(), gate.enter()
        assert a is not None and b is not None and gate.enter() is None
        clock.now += 1.0
        gate.leave(a), gate.leave(b)
    assert gate.limit == 2 and gate.stats()["shed"] == 20 and gate.in_flight == 0


def test_slow_requests_admitted_after_the_last_decrease_lower_the_limit_and_fast_binding_ones_raise_it():
    clock = Clock()
    gate = SloAdmission(0.1, floor=1, ceiling=10, target=0.8, decrease=0.9, clock=clock)
    gate.limit = 8.0
    tickets = [gate.enter() for _ in range(8)]
    assert gate.enter() is None
    clock.now += 0.5  # all eight finish together, 0.5 s against a target of 0.08 s: one signal, one decrease
    for t in tickets:
        gate.leave(t)
    assert gate.limit == 4.0  # in proportion to the overshoot, but at most by half
    clock.now += 0.01
    early = gate.enter()  # admitted after that decrease: its slowness is news
    clock.now += 0.085  # 5 % over the target: the gentle decrease
    gate.leave(early)
    assert gate.limit == pytest.approx(3.6)
    late = [gate.enter() for _ in range(3)]
    clock.now += 0.2
    gate.leave(late[0])  # admitted after the last decrease: lowers it again
    assert gate.limit == pytest.approx(1.8)
    gate.leave(late[1]), gate.leave(late[2])  # admitted before that decrease: no more
    assert gate.limit == pytest.approx(1.8)

    # Fast requests that found the limit binding raise it by about one per limit's worth of them
    for _ in range(40):
        batch = [gate.enter() for _ in range(int(gate.limit))]
        assert all(batch) and gate.enter() is None
        clock.now += 0.01
        for t in batch:
            gate.leave(t)
    assert gate.limit == 10.0  # and never above the ceiling

    # Fast requests that left room (the limit kept no one out) do not raise it; failed ones do not move it
    gate.limit = 5.0
    for _ in range(50):
        t = gate.enter()
        clock.now += 0.01
        gate.leave(t)
    t = gate.enter()
    clock.now += 5.0
    gate.leave(t, measured=False)
    assert gate.limit == 5.0


def test_bad_settings_are_refused():
    for kwargs in ({"slo_s": 0, "floor": 1, "ceiling": 2}, {"slo_s": 1, "floor": 3, "ceiling": 2},
                   {"slo_s": 1, "floor": 0, "ceiling": 2}, {"slo_s": 1, "floor": 1, "ceiling": 2, "decrease": 1}):
        with pytest.raises(ValueError):
            SloAdmission(**kwargs)


def simulate(gate: SloAdmission | None, clock: Clock, *, rate: float, seconds: float, batch: int,
             batch_s: float, per_row_s: float, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """A replica that scores up to ``batch`` waiting requests in one call of ``batch_s + rows * per_row_s``,
    one call at a time, fed Poisson arrivals at ``rate``/s. Returns the admitted requests' latencies (after
    the first tenth of the run), how many were admitted and how many shed."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        arrivals.append(t)
    waiting: deque = deque()
    busy_until, in_call = None, []
    events = [(a, 0, i) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    latencies, admitted, shed = [], 0, 0

    def start_call(now: float) -> None:
        nonlocal busy_until, in_call
        in_call = [waiting.popleft() for _ in range(min(batch, len(waiting)))]
        busy_until = now + batch_s + per_row_s * len(in_call)
        heapq.heappush(events, (busy_until, 1, -1))

    while events:
        now, kind, _ = heapq.heappop(events)
        clock.now = now
        if kind == 0:  # an arrival
            ticket = gate.enter() if gate else object()
            if ticket is None:
                shed += 1
                continue
            admitted += 1
            waiting.append((ticket, now))
            if busy_until is None:
                start_call(now)
        else:  # a call ends
            for ticket, arrived in in_call:
                if gate:
                    gate.leave(ticket)
                if arrived > seconds / 10:
                    latencies.append(now - arrived)
            busy_until, in_call = None, []
            if waiting:
                start_call(now)
    return np.array(latencies), admitted, shed


@pytest.mark.parametrize("batch, batch_s, per_row_s, floor", [(1, 0.010, 0.0, 2), (16, 0.004, 0.0025, 32)],
                         ids=["one at a time", "batches of 16"])
def test_at_three_times_capacity_the_learned_limit_keeps_admitted_requests_within_the_slo(
        batch, batch_s, per_row_s, floor):
    slo_s = 0.1
    capacity = batch / (batch_s + per_row_s * batch)  # requests/s with full calls
    clock = Clock()
    gate = SloAdmission(slo_s, floor=floor, ceiling=64, clock=clock)
    latencies, admitted, shed = simulate(gate, clock, rate=3 * capacity, seconds=30, batch=batch,
                                         batch_s=batch_s, per_row_s=per_row_s)
    p99 = float(np.percentile(latencies, 99))
    print(f"\n{batch}-row calls, capacity {capacity:.0f}/s, offered 3x: admitted {admitted / 30:.0f}/s, "
          f"shed {shed}, p99 {p99 * 1000:.0f} ms (SLO {slo_s * 1000:.0f} ms), limit {gate.limit:.1f}")
    assert p99 <= slo_s
    assert admitted / 30 >= 0.85 * capacity  # shedding did not starve the replica
    assert shed > admitted  # two thirds of the offered load had to go

    # A fixed count, as Serve's own limits are (the shipped 64 in the replica): a second's worth of queue
    fixed_clock = Clock()
    fixed = SloAdmission(slo_s, floor=64, ceiling=64, clock=fixed_clock)
    latencies, _, _ = simulate(fixed, fixed_clock, rate=3 * capacity, seconds=30, batch=batch, batch_s=batch_s,
                               per_row_s=per_row_s)
    assert float(np.percentile(latencies, 99)) > 1.5 * slo_s

    # At half the capacity next to nothing is shed (a burst before the first answers, while the limit
    # still grows from the floor, at most)
    clock = Clock()
    gate = SloAdmission(slo_s, floor=floor, ceiling=64, clock=clock)
    latencies, admitted, shed = simulate(gate, clock, rate=0.5 * capacity, seconds=30, batch=batch,
                                         batch_s=batch_s, per_row_s=per_row_s, seed=1)
    assert shed <= 0.001 * (admitted + shed) and float(np.percentile(latencies, 99)) <= slo_s
