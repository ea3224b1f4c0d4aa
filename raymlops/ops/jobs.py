"""The pipeline as a Ray job: plan a submission, submit it through the Jobs API, follow and stop it.

A job receives the project as a ``runtime_env`` working_dir: a temporary copy on the cluster that
is deleted with the job. Anything that must outlive the job (snapshots, checkpoints, MLflow's store)
therefore goes to a path every node sees, so ``plan_submission`` (pure, tested without Ray) refuses a
config whose ``workdir`` lies inside that copy and says how to fix it.

Example::

    plan = plan_submission(cfg, Path("configs/smoke.yaml"), project_root=Path("."), workdir="/mnt/shared/raymlops")
    job_id = submit(plan, resolve_address(None))
    status = follow(job_id, resolve_address(None), print)
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlops.config import FileSourceConfig, PipelineConfig
from raymlops.errors import ClusterError

# Never uploaded: environments, caches, local state and generated outputs.
EXCLUDES = [".venv", ".git", ".raymlops", "**/__pycache__", "*.egg-info", "mlruns", ".pytest_cache",
            ".hypothesis", "benchmarks/out", "examples/flights/out"]
ENV_PASSED = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "RAYMLOPS_PROGRESS")
# Secrets go to a job by reference: Ray shows a job's runtime_env to every holder of the cluster's token, so
# the job gets "${NAME}", which Ray resolves from the environment of the node that runs it.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD",)
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|(^|_)KEY)$", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{[A-Za-z0-9_]+\}")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class SubmissionPlan:
    entrypoint: str
    runtime_env: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def plan_submission(cfg: PipelineConfig, config_path: Path, *, project_root: Path, workdir: str | None = None,
                    run_name: str | None = None, pip: list[str] | None = None,
                    env: dict[str, str] | None = None) -> SubmissionPlan:
    """What to upload and run; raises ClusterError naming every setting that would lose results."""
    root = project_root.resolve()
    problems, warnings = [], []
    config_path = Path(config_path).resolve()
    if not _inside(config_path, root):
        problems.append(f"the config {config_path} is outside the project {root}, which is all the job receives; "
                        "pass --project-root to a folder holding both")
    chosen = workdir if workdir is not None else cfg.workdir
    if "://" in chosen:
        problems.append(f"workdir {chosen!r}: a URI is not supported; use a shared mount every node sees")
    elif workdir is not None and not Path(workdir).is_absolute():
        problems.append(f"--workdir {workdir!r} must be an absolute path on shared storage every node sees")
    elif _inside(Path(cfg.resolve_path(chosen)), root):
        problems.append(f"workdir {cfg.resolve_path(chosen)} lies inside the project, which the job receives as a "
                        "temporary copy deleted after it: snapshots, checkpoints and the MLflow store would be lost. "
                        "Set `workdir:` to shared storage every node sees (such as /mnt/shared/raymlops) or pass "
                        "--workdir")
    for i, source in enumerate(cfg.data.sources):
        if not isinstance(source, FileSourceConfig):
            continue
        for path in [source.path] if isinstance(source.path, str) else source.path:
            if "://" in path:
                continue
            resolved = Path(cfg.resolve_path(path))
            if not _inside(resolved, root):
                warnings.append(f"data.sources[{i}] ({source.name}) reads {resolved}: every node must see that path")
            elif not any(resolved.parent.glob(resolved.name)):
                problems.append(f"data.sources[{i}] ({source.name}): {resolved} does not exist here, so it "
                                "cannot be uploaded with the project")
    tracking = ((env or {}).get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
                or cfg.registry.tracking_uri)
    if not tracking:
        warnings.append("MLflow uses SQLite in the workdir; on a real cluster point registry.tracking_uri (or "
                        "MLFLOW_TRACKING_URI) at an MLflow server: SQLite on network storage is fragile")
    if problems:
        raise ClusterError(f"cannot submit {config_path.name}:\n  - " + "\n  - ".join(problems))
    args = ["python", "-m", "raymlops", "run", str(config_path.relative_to(root))]
    if workdir:
        args += ["--workdir", workdir]
    if run_name:
        args += ["--run-name", run_name]
    runtime_env: dict[str, Any] = {"working_dir": str(root), "excludes": list(EXCLUDES)}
    passed = {k: os.environ[k] for k in ENV_PASSED if os.environ.get(k)}
    for name in SECRET_ENV:
        if os.environ.get(name) and name not in (env or {}):
            passed[name] = "${" + name + "}"
            warnings.append(f"{name} is passed to the job as the reference ${{{name}}}, resolved from the "
                            "environment of the cluster's nodes (set it there; KubeRay: the raymlops-mlflow "
                            "Secret); its value is not sent, since Ray shows a job's env to every token holder")
    for name, value in (env or {}).items():
        if _SECRET_NAME.search(name) and value and not _REFERENCE.fullmatch(value):
            raise ClusterError(
                f"--env {name}=... would send a secret's value, which Ray shows to every holder of the "
                f"cluster's token in the job's runtime_env; pass a reference the node resolves instead: "
                f"--env {name}='${{{name}}}' (set {name} in the environment of the cluster's nodes)")
    passed.update(env or {})
    if passed:
        runtime_env["env_vars"] = passed
    if pip:
        runtime_env["pip"] = list(pip)
    return SubmissionPlan(entrypoint=shlex.join(args), runtime_env=runtime_env, warnings=warnings,
                          metadata={"raymlops_config": str(config_path.relative_to(root)), "pipeline": cfg.name})


def resolve_address(address: str | None) -> str:
    """The Jobs API's http address: --address, RAY_API_SERVER_ADDRESS/RAY_ADDRESS, or the local cluster's."""
    candidate = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or
                 (os.environ.get("RAY_ADDRESS") if "://" in os.environ.get("RAY_ADDRESS", "") else None))
    if not candidate:
        from raymlops.ops.cluster import LocalCluster, default_cluster_dir

        local = LocalCluster.load(default_cluster_dir())
        if local is None:
            raise ClusterError("no cluster address: pass --address http://HOST:8265 (the dashboard), set "
                               "RAY_API_SERVER_ADDRESS, or start a local cluster with `raymlops cluster up`")
        candidate = local.dashboard_url
    if candidate.startswith("ray://"):
        raise ClusterError(f"{candidate} is a Ray Client address; jobs go to the dashboard's http address "
                           "(http://HOST:8265)")
    if "://" not in candidate:
        candidate = f"http://{candidate}"
    return candidate.rstrip("/")


def job_client(address: str):
    """A JobSubmissionClient that carries Ray's token (found as Ray finds it) on every request."""
    from ray.job_submission import JobSubmissionClient

    from raymlops.ops.ray_auth import auth_headers

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:  # ConnectionError, RuntimeError with Ray's auth message, ...
        raise ClusterError(f"cannot reach the Jobs API at {address}: {exc}") from exc


def submit(plan: SubmissionPlan, address: str, submission_id: str | None = None) -> str:
    client = job_client(address)
    previous = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE")
    # Upload what EXCLUDES leaves, .gitignore'd data included: a config's relative data paths must arrive.
    os.environ["RAY_RUNTIME_ENV_IGNORE_GITIGNORE"] = "1"
    try:
        return client.submit_job(entrypoint=plan.entrypoint, runtime_env=plan.runtime_env,
                                 submission_id=submission_id, metadata=plan.metadata)
    except Exception as exc:
        raise ClusterError(f"the cluster at {address} refused the job: {exc}") from exc
    finally:
        if previous is None:
            os.environ.pop("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", None)
        else:
            os.environ["RAY_RUNTIME_ENV_IGNORE_GITIGNORE"] = previous


def follow(job_id: str, address: str, write: Callable[[str], None]) -> str:
    """Stream the job's logs until it ends; returns its final status name."""
    client = job_client(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except Exception as exc:  # the log stream can drop; the status below still tells the outcome
        write(f"\n(log stream ended: {exc})\n")
    return wait(job_id, address)


def wait(job_id: str, address: str, timeout_s: float | None = None, every_s: float = 1.0) -> str:
    """Poll until the job ends; returns its final status name."""
    client = job_client(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise ClusterError(f"job {job_id} still {status} after {timeout_s:.0f}s")
        time.sleep(every_s)


def list_jobs(address: str) -> list[dict[str, Any]]:
    jobs = job_client(address).list_jobs()
    rows = [{"id": j.submission_id or j.job_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "start_time": j.start_time, "end_time": j.end_time, "message": j.message or ""} for j in jobs]
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)


def logs(job_id: str, address: str) -> str:
    return job_client(address).get_job_logs(job_id)


def stop(job_id: str, address: str) -> bool:
    return bool(job_client(address).stop_job(job_id))
