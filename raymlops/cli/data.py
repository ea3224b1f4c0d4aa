"""``raymlops data list|show``: versioned data snapshots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from raymlops.cli.app import app, guarded, out
from raymlops.config import load_config


data_app = typer.Typer(no_args_is_help=True, help="Inspect versioned data snapshots.")
app.add_typer(data_app, name="data")


def _snapshots_root(config: Path | None, workdir: Path | None) -> Path:
    from raymlops.workspace import Workspace

    if workdir is not None:
        return Workspace(workdir).snapshots
    if config is not None:
        return Workspace(load_config(config).workdir_path).snapshots
    return Workspace(Path(".raymlops")).snapshots


@data_app.command("list")
@guarded
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
@guarded
def data_show_cmd(snapshot_id: str = typer.Argument(..., help="Snapshot id (see `raymlops data list`)."),
                  config: Path | None = typer.Option(None, "--config", "-c", help="Use this config's workdir."),
                  workdir: Path | None = typer.Option(None, help="Working folder (default ./.raymlops)."),
                  split: str | None = typer.Option(None, help="Write the rows of this split (train, validation, "
                                                   "test) as the config's data.split assigned them; needs --config."),
                  output: Path | None = typer.Option(None, "--output", "-o", help="Parquet file for --split.")) -> None:
    """Show a snapshot's manifest (sources, rows, schema, report), or write the rows of one split."""
    from raymlops.data.versioning import load_snapshot

    snap = load_snapshot(_snapshots_root(config, workdir), snapshot_id)
    if split is None:
        out.print_json(json.dumps({"path": str(snap.path), **snap.manifest.to_dict()}))
        return
    import pandas as pd

    from raymlops.data.splits import rows_of_split
    from raymlops.errors import ConfigError
    from raymlops.workspace import write_bytes_atomic

    if config is None or output is None:
        raise ConfigError("--split needs --config (whose data.split assigned the rows) and --output FILE.parquet")
    frame = pd.concat([pd.read_parquet(snap.path / name) for name in snap.manifest.files], ignore_index=True)
    rows = rows_of_split(frame, load_config(config).data.split, split)
    write_bytes_atomic(output, rows.to_parquet(index=False))  # bytes in memory, then one atomic rename
    out.print(f"wrote the {len(rows):,} {split} rows (of {len(frame):,}) of snapshot {snapshot_id} to {output}",
              soft_wrap=True)
