"""``raymlops run`` in a child process, so that a run whose Ray dies under it still ends with a message.

When the raylet or the GCS of a driver's Ray dies, Ray's core worker ends the driver at once (``_exit``):
no exception, no ``finally``, nothing printed, and the MLflow run stays RUNNING. So the command runs the
pipeline in a child process and waits for it. A child that ends without leaving the pipeline call as
Python leaves it (returned or raised: it marks a file in a ``finally``, which ``_exit`` and signals skip)
died under the pipeline:
the parent says what happened, marks the run's attempts FAILED in MLflow and names the command that
resumes it. Errors the pipeline raises are the child's to print, as always.

The child dies with its parent (``PR_SET_PDEATHSIG`` where Linux has it, a watchdog thread anyway), so
a ``raymlops run`` killed outright still takes its Ray with it (``raymlops.runtime.reaper`` then stops the rest).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CHILD_ENV = "RAYMLOPS_RUN_CHILD"  # set in the child: "<parent pid>:<file to mark on a clean exit>"
CLEAN = "clean"


@dataclass(frozen=True)
class ChildEnd:
    """How the pipeline process ended: its exit status and whether it shut down as Python does."""

    returncode: int
    clean: bool

    def describe(self) -> str:
        if self.returncode < 0:
            name = signal.Signals(-self.returncode).name if -self.returncode in signal.valid_signals() else "?"
            how = f"was killed by signal {-self.returncode} ({name}{', out of memory?' if name == 'SIGKILL' else ''})"
        else:
            how = f"ended with exit status {self.returncode} and no error of its own"
        return (f"the pipeline process {how}: Ray ends its driver this way when the node's raylet or GCS "
                "stops (killed, out of memory, `ray stop`)")


def is_child() -> bool:
    return bool(os.environ.get(CHILD_ENV))


def become_child() -> None:
    """In the child, before the pipeline starts: die with the parent."""
    parent, _, marker = os.environ.get(CHILD_ENV, "").partition(":")
    if marker:
        _die_with(int(parent))


def mark_clean() -> None:
    """In the child, once the pipeline call has returned or raised: it did not die under it."""
    marker = os.environ.get(CHILD_ENV, "").partition(":")[2]
    if marker:
        Path(marker).write_text(CLEAN)


def _die_with(parent: int) -> None:
    try:  # Linux: the kernel sends SIGKILL when the parent ends
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent was already gone
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="raymlops-parent-watch", daemon=True).start()


def run_child(argv: list[str]) -> ChildEnd:
    """``python -m raymlops ARGV`` as the pipeline process; returns how it ended. Ctrl-C reaches the child
    through the terminal's process group (it stops cleanly and says so); SIGTERM to this process is
    passed on to it."""
    with tempfile.TemporaryDirectory(prefix="raymlops-run-") as folder:
        marker = Path(folder) / "exit"
        env = {**os.environ, CHILD_ENV: f"{os.getpid()}:{marker}"}
        child = subprocess.Popen([sys.executable, "-m", "raymlops", *argv], env=env)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child has it too, and answers it
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        try:
            returncode = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        clean = marker.is_file() and marker.read_text() == CLEAN
    return ChildEnd(returncode=returncode, clean=clean)


__all__ = ["CHILD_ENV", "ChildEnd", "become_child", "is_child", "mark_clean", "run_child"]
