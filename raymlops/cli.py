"""The ``raymlops`` command: parse, call one library function, render with rich. No logic of its own.

Errors print as ``ErrorType: message`` and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import os
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
from raymlops.config import config_error, config_json_schema, load_config
from raymlops.errors import DataValidationError, RaymlopsError, RayStopped

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
            _name_library_log()
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def _library_logs(cfg: Any, command: str) -> None:
    """Ray's and MLflow's own messages go to a log file in the workdir (``raymlops.logs``), unless --debug."""
    if _state["debug"]:
        return
    from raymlops import logs

    logs.route_to(Path(cfg.workdir_path) / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def _name_library_log() -> None:
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
    _state["debug"] = debug
    if not debug:
        from raymlops import logs

        logs.quiet_mlflow()


@app.command("run")
@_guarded
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
    _library_logs(cfg, "run")
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
    argv = (["--debug"] if _state["debug"] else []) + ["run", str(config), "--run-name", name]
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
@_guarded
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


def _registry(config: Path | None, workdir: Path | None):
    from raymlops.registry.store import Registry

    if config is not None:
        return Registry.for_config(load_config(config))
    return Registry.for_workdir(workdir or Path(".raymlops"))


_CONFIG_OPT = typer.Option(None, "--config", "-c", help="Use this config's workdir and tracking URI.")
_WORKDIR_OPT = typer.Option(None, help="Working folder (default ./.raymlops).")


@app.command("promote")
@_guarded
def promote_cmd(name: str = typer.Argument(..., help="Registered model name."),
                version: int = typer.Argument(..., help="Version to make champion."),
                reason: str = typer.Option("manual promotion", help="Recorded in the audit log."),
                config: Path | None = _CONFIG_OPT, workdir: Path | None = _WORKDIR_OPT) -> None:
    """Point the champion alias at VERSION (recorded in the audit log)."""
    move = _registry(config, workdir).promote(name, version, reason=reason)
    out.print(f"{name}: champion v{move.from_version or '-'} -> v{move.to_version}")


@app.command("rollback")
@_guarded
def rollback_cmd(name: str = typer.Argument(..., help="Registered model name."),
                 reason: str = typer.Option("manual rollback", help="Recorded in the audit log."),
                 config: Path | None = _CONFIG_OPT, workdir: Path | None = _WORKDIR_OPT) -> None:
    """Restore the previous champion."""
    move = _registry(config, workdir).rollback(name, reason=reason)
    out.print(f"{name}: champion v{move.from_version} -> v{move.to_version} (rolled back)")


@app.command("models")
@_guarded
def models_cmd(name: str | None = typer.Argument(None, help="Show this model's versions."),
               config: Path | None = _CONFIG_OPT, workdir: Path | None = _WORKDIR_OPT) -> None:
    """List registered models, or one model's versions with aliases, metrics and lineage."""
    reg = _registry(config, workdir)
    if name is None:
        table = Table(title=f"registered models ({reg.tracking_uri})")
        for col in ("name", "latest", "aliases"):
            table.add_column(col)
        for m in reg.list_models():
            versions = reg.list_versions(m.name)
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((m.aliases or {}).items()))
            table.add_row(m.name, f"v{versions[-1].version}" if versions else "-", aliases)
        out.print(table)
        return
    aliases: dict[str, list[str]] = {}
    for alias, version in (reg.client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    table = Table(title=f"{name} ({reg.tracking_uri})")
    for col in ("version", "aliases", "auc / rmse", "data", "run", "created"):
        table.add_column(col, overflow="fold")
    for v in reg.list_versions(name):
        tags = v.tags or {}
        metric = tags.get("raymlops.metric.auc") or tags.get("raymlops.metric.rmse") or "-"
        table.add_row(f"v{v.version}", ", ".join(sorted(aliases.get(str(v.version), []))), metric, tags.get("raymlops.data_fingerprint", "-"),
                      (v.run_id or "-")[:12], time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)))
    out.print(table)


@app.command("runs")
@_guarded
def runs_cmd(config: Path = typer.Argument(..., help="Pipeline config (its name is the MLflow experiment)."),
             limit: int = typer.Option(20, help="Most recent runs to show.")) -> None:
    """List tracked runs of a pipeline: status, metrics, model version."""
    cfg = load_config(config)
    reg = _registry(config, None)
    exp = reg.client.get_experiment_by_name(cfg.name)
    if exp is None:
        out.print(f"no runs of {cfg.name!r} yet")
        return
    runs = reg.client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    from raymlops.config import METRICS

    primary = METRICS[cfg.model.task][0]  # the task's own headline metric: auc, rmse or log_loss
    table = Table(title=f"runs of {cfg.name} ({reg.tracking_uri})")
    for col in ("run", "name", "status", f"test {primary}", "val_loss", "version", "started"):
        table.add_column(col, overflow="fold")
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        table.add_row(r.info.run_id[:12], r.info.run_name or "-", r.info.status,
                      f"{m[f'test_{primary}']:.4f}" if f"test_{primary}" in m else "-",
                      f"{m['val_loss']:.4f}" if "val_loss" in m else "-", t.get("raymlops.model_version", "-"),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000)))
    out.print(table)


@app.command("serve")
@_guarded
def serve_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
              address: str | None = typer.Option(None, help="Ray address; default: start local Ray here."),
              num_cpus: int | None = typer.Option(None, help="CPUs for local Ray (default: this machine's)."),
              port: int | None = typer.Option(None, help="HTTP port (default: serving.port)."),
              canary_share: float | None = typer.Option(None, min=0.0, max=1.0,
                                                        help="Share of requests for the challenger.")) -> None:
    """Serve the champion over HTTP (Ray Serve) until Ctrl-C; replicas follow promotions and rollbacks."""
    from raymlops.loop.service import run_service

    overrides = {} if canary_share is None else {"canary_share": canary_share}
    cfg = load_config(config)
    _library_logs(cfg, "serve")
    run_service(cfg, address=address, num_cpus=num_cpus, port=port,
                say=lambda m: err.print(f"[cyan]    serve[/] {m}", highlight=False), **overrides)


@app.command("serve-config")
@_guarded
def serve_config_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
                     output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
                     config_path: str | None = typer.Option(
                         None, help="The pipeline config's path where Serve runs (default: CONFIG as given).")) -> None:
    """Write a Ray Serve config YAML (for `serve deploy` or a KubeRay RayService serveConfigV2)."""
    from raymlops.serving.serve_config import serve_config_yaml

    text = serve_config_yaml(load_config(config), config_path or str(config))
    if output:
        from raymlops.workspace import write_text_atomic

        write_text_atomic(output, text)
        out.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command("predict")
@_guarded
def predict_cmd(model: str = typer.Option(..., "--model", "-m", help="NAME (champion), NAME@ALIAS or NAME/VERSION."),
                input: str = typer.Option(..., "--input", "-i", help="CSV, Parquet or JSON-lines file, glob or URI."),
                output: Path = typer.Option(..., "--output", "-o", help="Parquet folder to write (atomically)."),
                fmt: str | None = typer.Option(None, "--format", help="csv|parquet|json (default: from the name)."),
                batch_size: int = typer.Option(4096, min=1, help="Rows per model call."),
                concurrency: int = typer.Option(1, min=1, help="Scoring actors."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
                address: str | None = typer.Option(None, help="Ray address; default: start local Ray here."),
                num_cpus: int | None = typer.Option(None, help="CPUs for local Ray."),
                engine: str = typer.Option("auto", help="auto|ray|local: local scores in this process with "
                                           "pandas (no Ray start-up); auto picks it for local input up to "
                                           "--local-max-mb when no --address is given."),
                local_max_mb: float = typer.Option(64.0, min=0, help="Largest input (MB) auto scores locally."),
                config: Path | None = _CONFIG_OPT, workdir: Path | None = _WORKDIR_OPT) -> None:
    """Score files with a registered model version into Parquet (in-process when small, else Ray Data)."""
    from raymlops.model.batch import choose_engine, predict_files

    registry = _registry(config, workdir)
    trusted = load_config(config).model.trusted_builders() if config else ()  # a package cannot choose code to run
    started = time.perf_counter()
    chosen = choose_engine(engine, input, address=address, local_max_mb=local_max_mb)
    kwargs = dict(fmt=fmt or _guess_format(input), batch_size=batch_size, concurrency=concurrency,
                  overwrite=overwrite, trusted_builders=trusted, engine=chosen)
    if chosen == "local":
        result = predict_files(registry, model, input, output, **kwargs)
    else:
        from raymlops.runtime.session import ray_runtime

        with ray_runtime(address=address, num_cpus=num_cpus):
            result = predict_files(registry, model, input, output, **kwargs)
    out.print(f"scored {result['rows']:,} rows with {result['model']} v{result['version']} in "
              f"{time.perf_counter() - started:.1f} s ({chosen} engine) -> {result['output']}")


ci_app = typer.Typer(no_args_is_help=True, help="CI/CD for models (examples/ci/ has ready workflows).")
app.add_typer(ci_app, name="ci")


@ci_app.command("check")
@_guarded
def ci_check_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
                 summary: Path = typer.Option(Path("ci-summary.md"), help="Markdown summary for the pull request."),
                 run_name: str | None = typer.Option(None, help="Training run name (default: ci-<time>)."),
                 promote: bool = typer.Option(False, "--promote", help="Make a candidate that passes the champion."),
                 address: str | None = typer.Option(None, help="Ray address; default: start local Ray here."),
                 num_cpus: int | None = typer.Option(None, help="CPUs for local Ray.")) -> None:
    """Validate, train and gate the candidate against the champion; exit 1 when a gate fails."""
    import os

    from raymlops.ops.ci import ci_check
    from raymlops.workspace import write_text_atomic

    cfg = load_config(config)
    result = ci_check(cfg, run_name=run_name or f"ci-{time.strftime('%Y%m%d-%H%M%S')}", address=address,
                      num_cpus=num_cpus, promote=promote,
                      progress=lambda stage, msg: err.print(f"[cyan]{stage:>9}[/] {msg}", highlight=False))
    write_text_atomic(summary, result.summary)
    if os.environ.get("GITHUB_STEP_SUMMARY"):  # shown on the workflow run's page
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(result.summary)
    sys.stdout.write(result.summary)  # raw markdown: no wrapping
    err.print(f"summary written to {summary}")
    if not result.passed:
        raise typer.Exit(1)


k8s_app = typer.Typer(no_args_is_help=True, help="Kubernetes (KubeRay) manifests for a pipeline.")
app.add_typer(k8s_app, name="k8s")


@k8s_app.command("render")
@_guarded
def k8s_render_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
                   image: str = typer.Option(..., help="Container image with raymlops installed (cluster/Dockerfile)."),
                   output: Path = typer.Option(Path("k8s"), "--output", "-o", help="Folder for the manifests."),
                   namespace: str | None = typer.Option(None, help="Namespace written into every manifest."),
                   gpu: bool = typer.Option(False, "--gpu", help="Add an autoscaling GPU worker group."),
                   max_workers: int = typer.Option(4, min=1, help="Most CPU workers the autoscaler starts."),
                   project_root: Path = typer.Option(Path("."), help="The project folder the image holds at /app.")
                   ) -> None:
    """Write RayCluster, RayJob, RayService, MLflow, PostgreSQL, storage and Prometheus manifests."""
    from raymlops.ops.kuberay import render, write_manifests

    docs = render(load_config(config), image=image, project_root=project_root,
                  namespace=namespace, gpu=gpu, max_workers=max_workers)
    for path in write_manifests(docs, output):
        out.print(f"wrote {path}")


@app.command("loop")
@_guarded
def loop_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
             address: str = typer.Option("auto", help="Ray address of the cluster that serves the model."),
             once: bool = typer.Option(False, "--once", help="Take one step and exit."),
             every: float | None = typer.Option(None, help="Seconds between steps (default: retraining.check_every_s).")
             ) -> None:
    """Run the closed loop for a model served elsewhere (`raymlops serve` runs it itself when enabled)."""
    from raymlops.loop.controller import run_loop

    cfg = load_config(config)
    _library_logs(cfg, "loop")
    decisions = run_loop(cfg, address=address, once=once, every_s=every,
                         progress=lambda step, msg: err.print(f"[cyan]{step:>9}[/] {msg}", highlight=False))
    for d in decisions:
        out.print(f"{d.kind}: {d.action}  {'; '.join(d.reasons + d.blocked_by)}", highlight=False)


@app.command("status")
@_guarded
def status_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
               address: str | None = typer.Option(None, help="Ray address to read the monitor from (joins that "
                                                  "cluster); default: the `raymlops serve` running from this "
                                                  "workdir, over HTTP; '' for no live view."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """The loop: versions, aliases, traffic split, drift, live quality and the last decisions."""
    from raymlops.loop.controller import loop_status

    status = loop_status(load_config(config), address=address or None, live=address != "")
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2, default=str) + "\n")
        return
    _print_status(status)


def _print_status(status: dict[str, Any]) -> None:
    ev = status["evidence"]
    split = ", ".join(f"v{v} {share:.0%}" for v, share in status["traffic"].items() if v)
    out.print(f"[bold]{status['model']}[/]  champion v{status['champion'] or '-'}  challenger "
              f"v{status['challenger'] or '-'}  traffic: {split or '-'}  retrains: {status['retrains']}"
              + (f"  on watch: v{status['watch']['version']} (was v{status['watch']['previous']})"
                 if status["watch"] else ""))
    versions = Table(title="versions")
    for col in ("version", "aliases", "data"):
        versions.add_column(col)
    for v in status["versions"]:
        versions.add_row(f"v{v['version']}", ", ".join(v["aliases"]), v["data"] or "-")
    out.print(versions)
    if "error" in ev:
        out.print(f"live: {ev['error']}", highlight=False)
    else:
        drift = Table(title=f"drift of the latest window ({ev['rows']} rows; drifted: {', '.join(ev['drifted']) or 'none'})")
        for col in ("feature", "psi", "adjusted p", "drifted"):
            drift.add_column(col)
        for name, f in ev["features"].items():
            drift.add_row(name, f"{f['psi']:.3f}", f"{f['adjusted_p']:.2g}", "yes" if f["drifted"] else "")
        out.print(drift)
        quality = Table(title="live quality over labelled traffic")
        for col in ("version", "labelled", "metrics"):
            quality.add_column(col)
        for version, q in ev["quality"].items():
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in (q["metrics"] or {}).items() if k in
                                ("auc", "log_loss", "rmse", "mae"))
            quality.add_row(f"v{version}", str(q["labelled"]), metrics or "-")
        out.print(quality)
    decisions = Table(title="last decisions")
    for col in ("when", "kind", "action", "why"):
        decisions.add_column(col, overflow="fold")
    for d in status["decisions"]:
        decisions.add_row(time.strftime("%m-%d %H:%M:%S", time.localtime(d["at"])), d["kind"], d["action"],
                          "; ".join(d["reasons"] + d["blocked_by"])[:160])
    out.print(decisions)


@app.command("submit")
@_guarded
def submit_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML), inside the project."),
               address: str | None = typer.Option(None, help="Jobs API address http://HOST:8265 (default: "
                                                  "RAY_API_SERVER_ADDRESS, else the `raymlops cluster up` cluster)."),
               workdir: str | None = typer.Option(None, help="Shared working folder every node sees (absolute)."),
               project_root: Path = typer.Option(Path("."), help="Folder uploaded as the job's working_dir."),
               pip: list[str] = typer.Option([], "--pip", help="Extra pip requirement for the job (repeatable)."),
               env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the job's processes (repeatable)."),
               run_name: str | None = typer.Option(None, help="Training run name (resumes a run of that name)."),
               job_id: str | None = typer.Option(None, "--job-id", help="Submission id (default: Ray's)."),
               wait: bool = typer.Option(False, "--wait", help="Stream the logs and exit with the job's outcome.")
               ) -> None:
    """Run the pipeline on a Ray cluster through the Jobs API (the project goes as the job's working_dir)."""
    from raymlops.ops import jobs

    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env {item!r}: expected KEY=VALUE")
        pairs[key] = value
    plan = jobs.plan_submission(load_config(config), config, project_root=project_root, workdir=workdir,
                                run_name=run_name, pip=pip, env=pairs)
    for warning in plan.warnings:
        err.print(f"[yellow]warning[/]: {warning}", highlight=False)
    where = jobs.resolve_address(address)
    submitted = jobs.submit(plan, where, submission_id=job_id)
    err.print(f"submitted {submitted} to {where}: {plan.entrypoint}", highlight=False)
    out.print(submitted)
    if wait:
        status = jobs.follow(submitted, where, lambda text: sys.stderr.write(text))
        err.print(f"job {submitted}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


@app.command("jobs")
@_guarded
def jobs_cmd(address: str | None = typer.Option(None, help="Jobs API address (as for submit)."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Jobs on the cluster, newest first."""
    from raymlops.ops import jobs

    rows = jobs.list_jobs(jobs.resolve_address(address))
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="jobs")
    for col in ("id", "status", "started", "entrypoint", "message"):
        table.add_column(col, overflow="fold")
    for r in rows:
        started = time.strftime("%m-%d %H:%M:%S", time.localtime(r["start_time"] / 1000)) if r["start_time"] else ""
        table.add_row(r["id"], r["status"], started, r["entrypoint"], r["message"][:120])
    out.print(table)


@app.command("logs")
@_guarded
def logs_cmd(job_id: str = typer.Argument(..., help="Job id (see `raymlops jobs`)."),
             address: str | None = typer.Option(None, help="Jobs API address (as for submit)."),
             follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends.")) -> None:
    """A job's driver logs."""
    from raymlops.ops import jobs

    where = jobs.resolve_address(address)
    if follow:
        status = jobs.follow(job_id, where, lambda text: sys.stdout.write(text))
        err.print(f"job {job_id}: {status}")
        return
    sys.stdout.write(jobs.logs(job_id, where))


@app.command("stop")
@_guarded
def stop_cmd(job_id: str = typer.Argument(..., help="Job id (see `raymlops jobs`)."),
             address: str | None = typer.Option(None, help="Jobs API address (as for submit).")) -> None:
    """Stop a running job (its last checkpoint stays; resubmit with the same --run-name to resume)."""
    from raymlops.ops import jobs

    stopped = jobs.stop(job_id, jobs.resolve_address(address))
    out.print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")


cluster_app = typer.Typer(no_args_is_help=True, help="A local multi-node Ray cluster on this machine.")
app.add_typer(cluster_app, name="cluster")
_CLUSTER_DIR = typer.Option(None, "--dir", help="Cluster state folder (default .raymlops/cluster, or "
                            "RAYMLOPS_CLUSTER_DIR).")


@cluster_app.command("up")
@_guarded
def cluster_up_cmd(workers: int = typer.Option(2, min=0, help="Worker nodes besides the head."),
                   head_cpus: float = typer.Option(1, min=0, help="CPUs the head node offers."),
                   worker_cpus: float = typer.Option(1, min=0, help="CPUs each worker node offers."),
                   object_store_mb: int = typer.Option(512, min=80, help="Object store per node (MiB)."),
                   directory: Path | None = _CLUSTER_DIR) -> None:
    """Start a head and N worker nodes with `ray start` (loopback, token auth); `cluster down` stops them."""
    from raymlops.ops import cluster

    c = cluster.up(directory, workers=workers, head_cpus=head_cpus, worker_cpus=worker_cpus,
                   object_store_mb=object_store_mb, progress=lambda m: err.print(m, highlight=False))
    out.print(f"cluster up: {len(c.nodes)} nodes; GCS {c.gcs_address}; Jobs API {c.dashboard_url}")
    out.print("  raymlops submit CONFIG --workdir /abs/shared/path      (finds this cluster by itself)")
    out.print(f"  raymlops run CONFIG --address {c.gcs_address}")


@cluster_app.command("add-worker")
@_guarded
def cluster_add_worker_cmd(cpus: float = typer.Option(1, min=0, help="CPUs the node offers."),
                           directory: Path | None = _CLUSTER_DIR) -> None:
    """Join one more worker node to the local cluster."""
    from raymlops.ops import cluster

    c = cluster.LocalCluster.load(directory or cluster.default_cluster_dir())
    if c is None:
        raise cluster.ClusterError("no local cluster is up; start one with `raymlops cluster up`")
    node = cluster.add_worker(c, num_cpus=cpus)
    out.print(f"{node.name} joined: node {node.node_id}")


@cluster_app.command("down")
@_guarded
def cluster_down_cmd(directory: Path | None = _CLUSTER_DIR) -> None:
    """Stop the local cluster's nodes by their recorded process ids."""
    from raymlops.ops import cluster

    stopped = cluster.down(directory, progress=lambda m: err.print(m, highlight=False))
    out.print(f"stopped {', '.join(stopped)}" if stopped else "no local cluster was running")


@cluster_app.command("status")
@_guarded
def cluster_status_cmd(directory: Path | None = _CLUSTER_DIR,
                       as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The local cluster's nodes: process, Ray node id, state in the GCS, CPUs."""
    from raymlops.ops import cluster

    s = cluster.status(directory)
    if as_json:
        sys.stdout.write(json.dumps(s, indent=2) + "\n")
        return
    if not s["nodes"]:
        out.print(f"no local cluster at {s['dir']}")
        return
    table = Table(title=f"local cluster: GCS {s['gcs_address']}, Jobs API {s['dashboard_url']}"
                  + ("" if s["up"] else " (unreachable)"))
    for col in ("node", "pid", "process", "ray node id", "state", "CPUs"):
        table.add_column(col)
    for n in s["nodes"]:
        table.add_row(n["name"], str(n["pid"]), n["process"], n["node_id"][:16], n["state"], f"{n['cpus']:g}")
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
