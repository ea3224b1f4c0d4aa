"""The typer application every command module registers on, and what the commands share: the error
guard (``Type: message``, exit 1), the consoles, where library log lines go, the registry options."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from raymlops import __version__
from raymlops.config import load_config
from raymlops.errors import RaymlopsError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="raymlops: from raw data to a monitored, self-retraining model on Ray.")
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
state = {"debug": False}


def guarded(fn: F) -> F:
    """Turn raymlops errors into `Type: message` and exit code 1 (tracebacks only with --debug)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RaymlopsError as exc:
            if state["debug"]:
                err.print_exception()
            err.print(f"[bold red]{type(exc).__name__}[/]: {exc}", markup=True, highlight=False, soft_wrap=True)
            name_library_log()
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def library_logs(cfg: Any, command: str) -> None:
    """Ray's and MLflow's own messages go to a log file in the workdir (``raymlops.logs``), unless --debug."""
    if state["debug"]:
        return
    from raymlops import logs

    logs.route_to(Path(cfg.workdir_path) / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def name_library_log() -> None:
    """After an error: where Ray's and MLflow's messages about it are, when this command kept any."""
    from raymlops import logs

    path = logs.log_path()
    if path is not None and path.is_file() and path.stat().st_size:
        err.print(f"Ray's and MLflow's messages: {path} (or rerun with --debug)", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"raymlops {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.")) -> None:
    state["debug"] = debug
    if not debug:
        from raymlops import logs

        logs.quiet_mlflow()




def guess_format(path: str) -> str:
    name = path.lower().removesuffix(".gz").removesuffix(".zip").removesuffix(".bz2")
    for suffix, kind in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
                         (".jsonl", "json"), (".json", "json"), (".ndjson", "json")):
        if name.endswith(suffix):
            return kind
    raise typer.BadParameter(f"cannot tell the format of {path}; pass --format csv|parquet|json")


def registry_for(config: Path | None, workdir: Path | None):
    from raymlops.registry.store import Registry

    if config is not None:
        return Registry.for_config(load_config(config))
    return Registry.for_workdir(workdir or Path(".raymlops"))


CONFIG_OPT = typer.Option(None, "--config", "-c", help="Use this config's workdir and tracking URI.")
WORKDIR_OPT = typer.Option(None, help="Working folder (default ./.raymlops).")


def main() -> None:
    app()
