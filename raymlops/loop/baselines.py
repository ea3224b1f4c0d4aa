"""Scheduled-retrain baselines: what a user's cron job would do, refitted beside a replay so that the
closed loop is judged against them on the same requests.

At every step of the replay the pipeline's model family and config is refitted on all labelled history
(``scheduled_all``) and on its latest ``window_days`` (``scheduled_window``), and both score the step's
rows before its labels are known; ``scheduled_slow`` keeps the all-history fit of the step that falls
every ``every_days`` (cron at the loop's own ``retraining.every_s``, for context; it costs no extra fit).

The fits run one after another, in step order, in one process of their own, so the replay's serving and
loop steps never wait for them: a step's rows are handed over when the step starts and its labels are
history from the next step on, exactly as in the replay itself. Each fit uses ``threads`` threads (default
one, as the loop's own retrains use ``training.cpus_per_worker``). The process runs at a lower priority, so
a fit's wall seconds say more about the machine than about the fit: ``cpu_seconds``, the process's CPU
time over the fit, is its cost (with one thread, the seconds it takes on an idle core).

Example::

    with ScheduledBaselines(cfg, history, time_column="time_hour", window_days=60,
                            validation_days=7, every_days=14) as cron:
        pending = [cron.submit(step_rows) for step_rows in steps]
        scores = [p.result() for p in pending]   # StepScores, one per step
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import PipelineConfig
from raymlops.model.local_fit import LocalModel, fit_frame, window

LINES = ("scheduled_all", "scheduled_window")


@dataclass(frozen=True)
class StepScores:
    """One step's scores from every line, with what each fit cost."""

    scores: dict[str, np.ndarray]  # line -> scores of the step's rows (also "scheduled_slow")
    train_rows: dict[str, int]
    seconds: dict[str, float]  # line -> the fit's wall seconds (0 for scheduled_slow unless it refitted)
    cpu_seconds: dict[str, float]
    slow_refitted: bool


@dataclass
class _Cron:
    """The state of the baseline process: everything labelled so far and the slow line's model."""

    cfg: PipelineConfig
    history: pd.DataFrame
    time_column: str
    window_days: float
    validation_days: float
    every_days: float
    threads: int
    slow_model: LocalModel | None = None
    slow_at: pd.Timestamp | None = None
    pending: list[pd.DataFrame] = field(default_factory=list)

    def step(self, rows: pd.DataFrame) -> StepScores:
        if self.pending:  # the previous step's rows, labelled by now
            self.history = pd.concat([self.history, *self.pending], ignore_index=True)
            self.pending = []
        fitted, seconds, cpu = {}, {}, {}
        for line, frame in (("scheduled_all", self.history),
                            ("scheduled_window", window(self.history, self.time_column, self.window_days))):
            cpu0 = time.process_time()
            fitted[line] = fit_frame(self.cfg, frame, time_column=self.time_column,
                                     validation_days=self.validation_days, threads=self.threads)
            seconds[line], cpu[line] = fitted[line].seconds, time.process_time() - cpu0
        starts = pd.Timestamp(rows[self.time_column].min())
        starts = (starts.tz_localize("UTC") if starts.tzinfo is None else starts.tz_convert("UTC")).normalize()
        refit = self.slow_at is None or (starts - self.slow_at).days >= self.every_days
        if refit:
            self.slow_model, self.slow_at = fitted["scheduled_all"], starts
        seconds["scheduled_slow"] = seconds["scheduled_all"] if refit else 0.0
        cpu["scheduled_slow"] = cpu["scheduled_all"] if refit else 0.0
        scores = {line: model.predict_frame(rows) for line, model in fitted.items()}
        scores["scheduled_slow"] = self.slow_model.predict_frame(rows)
        self.pending.append(rows)
        return StepScores(scores=scores, train_rows={line: m.train_rows for line, m in fitted.items()},
                          seconds=seconds, cpu_seconds=cpu, slow_refitted=refit)


_STATE: _Cron | None = None  # the baseline process's own state (one process, steps in order)


def _start(state: _Cron) -> None:
    global _STATE
    try:
        os.nice(5)  # the replay's own serving and loop come first; the baselines take what is left
    except OSError:
        pass
    _STATE = state


def _step(rows: pd.DataFrame) -> StepScores:
    assert _STATE is not None, "the baseline process was not started"
    return _STATE.step(rows)


class ScheduledBaselines:
    """The scheduled lines, fitted in one background process (see the module's docstring)."""

    def __init__(self, cfg: PipelineConfig, history: pd.DataFrame, *, time_column: str, window_days: float,
                 validation_days: float, every_days: float, threads: int = 1) -> None:
        state = _Cron(cfg=cfg, history=history, time_column=time_column, window_days=window_days,
                      validation_days=validation_days, every_days=every_days, threads=threads)
        # spawn: the replay process holds Ray's and Serve's threads, which a fork would copy half-way
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(state,))

    def submit(self, rows: pd.DataFrame) -> Future[StepScores]:
        """Fit every line on the history known before ``rows`` and score them; ``rows`` become history
        for the next step (their labels are in by then)."""
        return self._pool.submit(_step, rows)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ScheduledBaselines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LINES", "ScheduledBaselines", "StepScores"]
