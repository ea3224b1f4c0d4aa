"""The ``raymlops`` command: parse, call one library function, render with rich. No logic of its own.

One module per command group registers its commands on ``app.app``; errors print as
``ErrorType: message`` and exit 1, ``--debug`` shows the traceback.
"""

from raymlops.cli import run, data, models, serve, ops  # noqa: F401  (each registers its commands; in help order)
from raymlops.cli.app import app, main

__all__ = ["app", "main"]
