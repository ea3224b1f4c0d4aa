"""``raymlops ci``, ``k8s``, ``submit``, ``jobs``, ``logs``, ``stop``, ``cluster``: running around a pipeline."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from raymlops.cli.app import app, err, guarded, out
from raymlops.config import load_config


ci_app = typer.Typer(no_args_is_help=True, help="CI/CD for models (examples/ci/ has ready workflows).")
app.add_typer(ci_app, name="ci")


@ci_app.command("check")
@guarded
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
@guarded
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


@app.command("submit")
@guarded
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
@guarded
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
@guarded
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
@guarded
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
@guarded
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
@guarded
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
@guarded
def cluster_down_cmd(directory: Path | None = _CLUSTER_DIR) -> None:
    """Stop the local cluster's nodes by their recorded process ids."""
    from raymlops.ops import cluster

    stopped = cluster.down(directory, progress=lambda m: err.print(m, highlight=False))
    out.print(f"stopped {', '.join(stopped)}" if stopped else "no local cluster was running")


@cluster_app.command("status")
@guarded
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
