"""The ``raymlops`` command: parse, call one library function, render with rich. No logic of its own.

Errors print as ``ErrorType: message`` and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from raymlops import __version__
from raymlops.config import config_json_schema, load_config
from raymlops.errors import DataValidationError, RaymlopsError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="raymlops: from raw data to a monitored, self-retraining model on Ray.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect versioned data snapshots.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


def _guarded(fn: F) -> F:
    """Turn raymlops errors into `Type: message` and exit code 1 (tracebacks only with --debug)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RaymlopsError as exc:
            if _state["debug"]:
                err.print_exception()
            err.print(f"[bold red]{type(exc).__name__}[/]: {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"raymlops {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.")) -> None:
    _state["debug"] = debug


@app.command("run")
@_guarded
def run_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
            address: str | None = typer.Option(None, help="Ray address; default: start local Ray here."),
            num_cpus: int | None = typer.Option(None, help="CPUs for local Ray (default: this machine's).")) -> None:
    """Run the pipeline the config describes (data stage: ingest, validate, snapshot, split, features)."""
    from raymlops.pipeline import run_pipeline

    cfg = load_config(config)
    started = time.perf_counter()

    def progress(stage: str, message: str) -> None:
        err.print(f"[cyan]{stage:>9}[/] {message}", highlight=False)

    try:
        result = run_pipeline(cfg, address=address, num_cpus=num_cpus, progress=progress)
    except DataValidationError as exc:
        if exc.report_path:
            _print_report(json.loads(Path(exc.report_path).read_text()))
        raise
    d = result.data
    table = Table(title=f"{cfg.name}: data stage", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("snapshot", f"{d.snapshot.snapshot_id}  ({'reused' if d.reused_snapshot else 'new'})")
    table.add_row("rows", f"{d.snapshot.manifest.rows:,}")
    table.add_row("snapshot path", str(d.snapshot.path))
    table.add_row("validation report", f"{d.report_path}  ({len(d.report.checks)} checks passed)")
    table.add_row("splits", ", ".join(f"{k} {v:,}" for k, v in d.split_rows.items()))
    table.add_row("features", f"{len(d.features.output_columns)} columns -> {d.features_path}")
    table.add_row("time", f"{time.perf_counter() - started:.1f}s  ("
                  + ", ".join(f"{k} {v:.1f}s" for k, v in d.seconds.items()) + ")")
    out.print(table)


def _print_report(report: dict[str, Any]) -> None:
    failed = [c for c in report["checks"] if not c["passed"]]
    table = Table(title=f"validation FAILED on {report['rows']:,} rows: {len(failed)} of "
                        f"{len(report['checks'])} checks (the others passed)")
    for col in ("column", "check", "failures", "examples (file row: value)"):
        table.add_column(col, overflow="fold")
    for c in failed:
        examples = []
        for e in c["examples"][:3]:
            where = f"{Path(str(e['source'])).name} row {e['row']:,}" if e.get("source") and e.get("row") else ""
            examples.append(f"{where}: {e.get('value')!r}" if where else repr(e.get("value")))
        table.add_row(c["column"] or "(dataset)", c["check"], f"{c['failures']:,}", "\n".join(examples) or c["detail"])
    err.print(table)


@app.command("validate-config")
@_guarded
def validate_config_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML).")) -> None:
    """Check a config file without running anything."""
    cfg = load_config(config)
    out.print(f"[green]ok[/]: {config} is a valid pipeline config ({cfg.name}, "
              f"{len(cfg.data.sources)} sources, {len(cfg.validation.columns)} column expectations)")


@app.command("schema")
@_guarded
def schema_cmd(output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Print the config's JSON schema (for editors)."""
    text = json.dumps(config_json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


@app.command("profile")
@_guarded
def profile_cmd(data: str = typer.Argument(..., help="A file, glob or URI to profile."),
                fmt: str | None = typer.Option(None, "--format", help="csv, parquet or json (default: from the name)."),
                rows: int = typer.Option(200_000, help="Profile at most this many rows."),
                output: Path | None = typer.Option(None, "--output", "-o", help="Write the YAML here.")) -> None:
    """Propose a `validation` section from data."""
    import pandas as pd

    from raymlops.data.profile import profile_frame
    from raymlops.data.readers import expand_paths, read_file
    from raymlops.errors import DataSourceError

    files = expand_paths(data)
    kind = fmt or _guess_format(files[0])
    tables, n = [], 0
    for f in files:
        for table in read_file(f, kind, text_columns=()):
            tables.append(table.to_pandas())
            n += len(tables[-1])
            if n >= rows:
                break
        if n >= rows:
            break
    if not tables:
        raise DataSourceError(f"{data}: no rows to profile")
    proposal = {"validation": profile_frame(pd.concat(tables, ignore_index=True).head(rows))}
    text = f"# proposed by `raymlops profile` from {min(n, rows):,} rows of {data}; review before use\n"
    text += yaml.safe_dump(proposal, sort_keys=False, default_flow_style=None, width=110)
    if output:
        output.write_text(text)
        out.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _guess_format(path: str) -> str:
    name = path.lower().removesuffix(".gz").removesuffix(".zip").removesuffix(".bz2")
    for suffix, kind in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
                         (".jsonl", "json"), (".json", "json"), (".ndjson", "json")):
        if name.endswith(suffix):
            return kind
    raise typer.BadParameter(f"cannot tell the format of {path}; pass --format csv|parquet|json")


def _snapshots_root(config: Path | None, workdir: Path | None) -> Path:
    from raymlops.workspace import Workspace

    if workdir is not None:
        return Workspace(workdir).snapshots
    if config is not None:
        return Workspace(load_config(config).workdir_path).snapshots
    return Workspace(Path(".raymlops")).snapshots


@data_app.command("list")
@_guarded
def data_list_cmd(config: Path | None = typer.Option(None, "--config", "-c", help="Use this config's workdir."),
                  workdir: Path | None = typer.Option(None, help="Working folder (default ./.raymlops).")) -> None:
    """List published snapshots, newest first."""
    from raymlops.data.versioning import list_snapshots

    root = _snapshots_root(config, workdir)
    snaps = list_snapshots(root)
    if not snaps:
        out.print(f"no snapshots under {root}")
        return
    table = Table(title=f"snapshots under {root}")
    for col in ("id", "rows", "columns", "created", "sources"):
        table.add_column(col)
    for s in snaps:
        m = s.manifest
        table.add_row(m.snapshot_id, f"{m.rows:,}", str(len(m.schema)),
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_at)),
                      f"{len(m.sources)} ({Path(m.sources[0]).name}{', ...' if len(m.sources) > 1 else ''})")
    out.print(table)


@data_app.command("show")
@_guarded
def data_show_cmd(snapshot_id: str = typer.Argument(..., help="Snapshot id (see `raymlops data list`)."),
                  config: Path | None = typer.Option(None, "--config", "-c", help="Use this config's workdir."),
                  workdir: Path | None = typer.Option(None, help="Working folder (default ./.raymlops).")) -> None:
    """Show a snapshot's manifest: sources, rows, schema, report."""
    from raymlops.data.versioning import load_snapshot

    snap = load_snapshot(_snapshots_root(config, workdir), snapshot_id)
    out.print_json(json.dumps({"path": str(snap.path), **snap.manifest.to_dict()}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
