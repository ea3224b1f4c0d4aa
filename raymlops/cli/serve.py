"""``raymlops serve``, ``serve-config``, ``loop``, ``status``: a model as a service and its closed loop."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from raymlops.cli.app import app, err, guarded, library_logs, out
from raymlops.config import load_config


@app.command("serve")
@guarded
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
    library_logs(cfg, "serve")
    run_service(cfg, address=address, num_cpus=num_cpus, port=port,
                say=lambda m: err.print(f"[cyan]    serve[/] {m}", highlight=False), **overrides)


@app.command("serve-config")
@guarded
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


@app.command("loop")
@guarded
def loop_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
             address: str = typer.Option("auto", help="Ray address of the cluster that serves the model."),
             once: bool = typer.Option(False, "--once", help="Take one step and exit."),
             every: float | None = typer.Option(None, help="Seconds between steps (default: retraining.check_every_s).")
             ) -> None:
    """Run the closed loop for a model served elsewhere (`raymlops serve` runs it itself when enabled)."""
    from raymlops.loop.controller import run_loop

    cfg = load_config(config)
    library_logs(cfg, "loop")
    decisions = run_loop(cfg, address=address, once=once, every_s=every,
                         progress=lambda step, msg: err.print(f"[cyan]{step:>9}[/] {msg}", highlight=False))
    for d in decisions:
        out.print(f"{d.kind}: {d.action}  {'; '.join(d.reasons + d.blocked_by)}", highlight=False)


@app.command("status")
@guarded
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
