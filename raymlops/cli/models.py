"""``raymlops promote``, ``rollback``, ``models``, ``runs``, ``predict``: registered versions and their use."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from raymlops.cli.app import CONFIG_OPT, WORKDIR_OPT, app, guarded, guess_format, out, registry_for
from raymlops.config import load_config


@app.command("promote")
@guarded
def promote_cmd(name: str = typer.Argument(..., help="Registered model name."),
                version: int = typer.Argument(..., help="Version to make champion."),
                reason: str = typer.Option("manual promotion", help="Recorded in the audit log."),
                config: Path | None = CONFIG_OPT, workdir: Path | None = WORKDIR_OPT) -> None:
    """Point the champion alias at VERSION (recorded in the audit log)."""
    move = registry_for(config, workdir).promote(name, version, reason=reason)
    out.print(f"{name}: champion v{move.from_version or '-'} -> v{move.to_version}")


@app.command("rollback")
@guarded
def rollback_cmd(name: str = typer.Argument(..., help="Registered model name."),
                 reason: str = typer.Option("manual rollback", help="Recorded in the audit log."),
                 config: Path | None = CONFIG_OPT, workdir: Path | None = WORKDIR_OPT) -> None:
    """Restore the previous champion."""
    move = registry_for(config, workdir).rollback(name, reason=reason)
    out.print(f"{name}: champion v{move.from_version} -> v{move.to_version} (rolled back)")


@app.command("models")
@guarded
def models_cmd(name: str | None = typer.Argument(None, help="Show this model's versions."),
               config: Path | None = CONFIG_OPT, workdir: Path | None = WORKDIR_OPT) -> None:
    """List registered models, or one model's versions with aliases, metrics and lineage."""
    reg = registry_for(config, workdir)
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
@guarded
def runs_cmd(config: Path = typer.Argument(..., help="Pipeline config (its name is the MLflow experiment)."),
             limit: int = typer.Option(20, help="Most recent runs to show.")) -> None:
    """List tracked runs of a pipeline: status, metrics, model version."""
    cfg = load_config(config)
    reg = registry_for(config, None)
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


@app.command("predict")
@guarded
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
                config: Path | None = CONFIG_OPT, workdir: Path | None = WORKDIR_OPT) -> None:
    """Score files with a registered model version into Parquet (in-process when small, else Ray Data)."""
    from raymlops.model.batch import choose_engine, predict_files

    registry = registry_for(config, workdir)
    trusted = load_config(config).model.trusted_builders() if config else ()  # a package cannot choose code to run
    started = time.perf_counter()
    chosen = choose_engine(engine, input, address=address, local_max_mb=local_max_mb)
    kwargs = dict(fmt=fmt or guess_format(input), batch_size=batch_size, concurrency=concurrency,
                  overwrite=overwrite, trusted_builders=trusted, engine=chosen)
    if chosen == "local":
        result = predict_files(registry, model, input, output, **kwargs)
    else:
        from raymlops.runtime.session import ray_runtime

        with ray_runtime(address=address, num_cpus=num_cpus):
            result = predict_files(registry, model, input, output, **kwargs)
    out.print(f"scored {result['rows']:,} rows with {result['model']} v{result['version']} in "
              f"{time.perf_counter() - started:.1f} s ({chosen} engine) -> {result['output']}")
