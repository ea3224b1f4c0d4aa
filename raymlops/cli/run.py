"""``raymlops run`` (supervised), ``validate-config``, ``schema``, ``profile``: the pipeline's own commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from raymlops.cli.app import app, err, guarded, guess_format, library_logs, out, state
from raymlops.config import config_error, config_json_schema, load_config
from raymlops.errors import DataValidationError, RayStopped


@app.command("run")
@guarded
def run_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
            address: str | None = typer.Option(None, help="Ray address; default: start local Ray here."),
            num_cpus: int | None = typer.Option(None, help="CPUs for local Ray (default: this machine's)."),
            run_name: str | None = typer.Option(None, help="Name the training run; an interrupted run's name "
                                                "resumes it from its last checkpoint."),
            data_only: bool = typer.Option(False, "--data-only", help="Stop after the data stage."),
            workdir: str | None = typer.Option(None, help="Working folder instead of the config's `workdir` "
                                               "(on a cluster: shared storage every node sees).")) -> None:
    """Run the pipeline: ingest, validate, snapshot, split, features, train (or tune), evaluate, register."""
    from raymlops.ops import supervisor
    from raymlops.pipeline import run_pipeline

    cfg = load_config(config)
    if workdir:
        cfg = cfg.model_copy(update={"workdir": str(Path(workdir).resolve())})
    if not supervisor.is_child():
        _supervise(cfg, config, address=address, num_cpus=num_cpus, run_name=run_name, data_only=data_only,
                   workdir=workdir)
        return
    supervisor.become_child()
    library_logs(cfg, "run")
    started = time.perf_counter()

    def progress(stage: str, message: str) -> None:
        err.print(f"[cyan]{stage:>9}[/] {message}", highlight=False)

    try:
        result = run_pipeline(cfg, address=address, num_cpus=num_cpus, run_name=run_name, data_only=data_only,
                              progress=progress)
    except DataValidationError as exc:
        if exc.report_path:
            _print_report(json.loads(Path(exc.report_path).read_text()))
        raise
    finally:
        supervisor.mark_clean()  # returned or raised: whatever comes next, the pipeline did not die under us
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
    table.add_row("time", f"{sum(d.seconds.values()):.1f}s  ("
                  + ", ".join(f"{k} {v:.1f}s" for k, v in d.seconds.items()) + ")")
    out.print(table)
    if result.training is not None:
        from raymlops.training.stage import summary_rows

        t = Table(title=f"{cfg.name}: model", show_header=False)
        t.add_column("what", no_wrap=True)
        t.add_column("value", overflow="fold")
        for key, value in summary_rows(result.training):
            t.add_row(key, value)
        t.add_row("total time", f"{time.perf_counter() - started:.1f}s")
        out.print(t)


def _supervise(cfg: Any, config: Path, *, address: str | None, num_cpus: int | None, run_name: str | None,
               data_only: bool, workdir: str | None) -> None:
    """Run the pipeline in a child process (``raymlops.ops.supervisor``); if Ray stopped under it, say so,
    mark its MLflow attempts FAILED and name the command that resumes it."""
    from raymlops.ops import supervisor
    from raymlops.config import default_run_name

    name = run_name or default_run_name(cfg)
    argv = (["--debug"] if state["debug"] else []) + ["run", str(config), "--run-name", name]
    argv += ["--address", address] if address else []
    argv += ["--num-cpus", str(num_cpus)] if num_cpus is not None else []
    argv += ["--data-only"] if data_only else []
    argv += ["--workdir", workdir] if workdir else []
    end = supervisor.run_child(argv)
    if end.clean:
        if end.returncode:
            raise typer.Exit(end.returncode)
        return
    what = end.describe()
    marked = ""
    if not data_only:
        try:
            from raymlops.registry.store import Registry

            failed = Registry.for_config(cfg).fail_running_attempts(cfg.name, name, what)
            marked = f" Its MLflow run{'s' if len(failed) != 1 else ''} {', '.join(failed)} marked FAILED." \
                if failed else ""
        except Exception as exc:  # noqa: BLE001 - the message below matters more than the bookkeeping
            marked = f" (its MLflow run could not be marked FAILED: {exc})"
    checkpoints = cfg.workdir_path / "checkpoints" / name
    raise RayStopped(
        f"run {name!r} stopped: {what}.{marked} Checkpoints so far are kept in {checkpoints}; "
        f"`raymlops run {config} --run-name {name}` resumes from the last one.")


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
@guarded
def validate_config_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML).")) -> None:
    """Check a config file without running anything (and its columns against local data files)."""
    from raymlops.data.columns import local_data_column_problems

    cfg = load_config(config)
    problems, skipped = local_data_column_problems(cfg)
    if problems:
        raise config_error(problems, "against its data", config)
    out.print(f"[green]ok[/]: {config} is a valid pipeline config ({cfg.name}, "
              f"{len(cfg.data.sources)} sources, {len(cfg.validation.columns)} column expectations"
              + ("; its columns match the data)" if skipped is None else ")"))
    if skipped:
        err.print(f"note: columns not checked against the data: {skipped}", highlight=False, markup=False)


@app.command("schema")
@guarded
def schema_cmd(output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Print the config's JSON schema (for editors)."""
    text = json.dumps(config_json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


@app.command("profile")
@guarded
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
    kind = fmt or guess_format(files[0])
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
