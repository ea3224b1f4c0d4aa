"""Where Ray's and MLflow's own messages go when a command runs: its log file, not the user's terminal.

A run that works should print raymlops' progress and results only. Ray, Serve, Ray Data and MLflow
log INFO lines (``Started Serve in namespace``, ``Creating initial MLflow database tables``),
deprecation warnings and error lines about their internals on every start; the user asked for none
of it. ``quiet_mlflow()`` keeps MLflow to its warnings; ``route_to(path)`` (called by the CLI, never by the library: a notebook keeps its own logging)
sends those loggers, Python's warnings and the errors Ray's GCS pushes to the driver (printed as
``(raylet) ...``) to ``path``; ``--debug`` leaves everything on the terminal. Libraries add their
console handlers when they are imported or started, so ``reroute()`` runs again after each start
(``runtime.session.ray_runtime``, ``serving.deploy``); it does nothing until ``route_to`` was called.

Errors raymlops raises still print as ``ErrorType: message``; the CLI adds the log file's path to them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LIBRARIES = ("ray", "py.warnings")  # MLflow: quiet_mlflow() before it is imported (it configures itself then)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_state: dict[str, logging.Handler | Path | None] = {"handler": None, "path": None}


def route_to(path: str | Path) -> Path:
    """Send library logs and warnings to ``path`` (appended) for the rest of this process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _state["handler"] is None:
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter(_FORMAT))
        _state["handler"], _state["path"] = handler, path
        logging.captureWarnings(True)
    reroute()
    return _state["path"]  # type: ignore[return-value]


def quiet_mlflow() -> None:
    """MLflow's INFO lines (``Creating initial MLflow database tables...``) off the terminal; its warnings
    stay. MLflow reads the level when it is first imported, so the CLI calls this before any import."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def log_path() -> Path | None:
    """The file library logs go to in this process, or None (not routed, or --debug)."""
    return _state["path"]  # type: ignore[return-value]


def _is_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and (stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
                 or type(stream).__name__ == "MLflowLoggingStream"))


def reroute() -> None:
    """Move every library logger's console handler to the log file (again: libraries add them late)."""
    handler = _state["handler"]
    if handler is None:
        return
    names = [n for n in list(logging.Logger.manager.loggerDict)
             if any(n == lib or n.startswith(lib + ".") for lib in LIBRARIES)]
    for name in {*LIBRARIES, *names}:
        logger = logging.getLogger(name)
        if not isinstance(logger, logging.Logger):
            continue
        consoles = [h for h in logger.handlers if _is_console(h)]
        for h in consoles:
            logger.removeHandler(h)
        if name in LIBRARIES:
            if handler not in logger.handlers:
                logger.addHandler(handler)
            logger.propagate = False
        elif consoles and handler not in logger.handlers:  # a child with handlers of its own (ray.serve)
            logger.addHandler(handler)
    _route_gcs_errors()


def _route_gcs_errors() -> None:
    """Ray prints the error messages its GCS pushes to the driver (a task retried while Serve shuts down,
    a worker that died) straight to stdout as ``(raylet) ...``; they go to the log file instead."""
    worker = sys.modules.get("ray._private.worker")
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_raymlops_routed", False):
        return
    errors = logging.getLogger("ray.gcs_errors")

    def print_to_stdstream(data, ignore_prefix: bool):  # noqa: ANN001 - Ray's own signature
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                errors.warning("%s", line)
            return None
        return original(data, ignore_prefix)

    print_to_stdstream._raymlops_routed = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream  # type: ignore[union-attr]
