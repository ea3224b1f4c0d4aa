"""The one place raymlops connects to Ray: an embedded local cluster by default, or an address.

Nothing else starts Ray. Token auth is left as Ray sets it (on for a new local cluster in Ray 2.60);
set RAY_AUTH_MODE yourself if you really mean to change it.

Example::

    with ray_runtime() as rt:          # starts local Ray with one CPU per core, stops it after
        run_pipeline(cfg)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from raymlops import logs
from raymlops.errors import RuntimeConnectionError


@dataclass(frozen=True)
class RuntimeInfo:
    address: str
    num_cpus: float
    started_here: bool


def default_num_cpus() -> int:
    """CPUs of this machine as the process may use them (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _quiet_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.verbose_progress = False
    ctx.enable_progress_bars = os.environ.get("RAYMLOPS_PROGRESS", "1") != "0"
    ctx.print_on_execution_start = False
    if not sys.stderr.isatty():  # no live bars: keep Ray Data's per-dataset log lines out of the way
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def _bind_loopback() -> None:
    """Keep a local cluster's GCS, raylet and workers on 127.0.0.1 instead of the machine's address.

    Ray picks a "remotely reachable" IP even for a single-node cluster. Its single-machine mode
    (the switch it uses on laptops, read at call time and by child processes from the environment)
    binds everything to loopback, which is what an embedded cluster should do.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# Ray Train V2's controller collects a worker's ``ray.train.report`` only when it polls, every 2 s by
# default, and the worker blocks on its next report until then (a queue of one). An epoch or a block of
# boosting rounds that takes less than that waited for the poll: a 4-epoch smoke run spent 6 s idle.
# A poll is one small remote call per worker, so 0.25 s costs next to nothing. The trainer passes the
# variable on from the driver to its controller, locally and on a cluster; a value the user set wins.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.25"


def _fast_train_polls() -> None:
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)


class _TokenAuthIsOnNotice(logging.Filter):
    """Ray warns on every start that token auth is on by default and how to opt out; raymlops keeps it on
    on purpose (README, security), so on a run that works the line only says what the user asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenAuthIsOnNotice) for f in logger.filters):
        logger.addFilter(_TokenAuthIsOnNotice())


@contextmanager
def ray_runtime(address: str | None = None, num_cpus: int | None = None) -> Iterator[RuntimeInfo]:
    """Connect to Ray for the duration of the block; a cluster started here is stopped at the end."""
    import ray

    _fast_train_polls()
    if ray.is_initialized():
        _quiet_data_context()
        yield RuntimeInfo(address=ray.get_runtime_context().gcs_address,
                          num_cpus=ray.cluster_resources().get("CPU", 0), started_here=False)
        return
    # Inside a Ray job (or a shell that exported it) RAY_ADDRESS names the cluster to join.
    env_address = os.environ.get("RAY_ADDRESS", "")
    address = address or (env_address if env_address and not env_address.startswith("http") else None)
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False, configure_logging=True,
                  log_to_driver=os.environ.get("RAYMLOPS_WORKER_LOGS", "0") == "1")
    _quiet_token_auth_notice()
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            _bind_loopback()
            # "local": always a new cluster. With no address Ray would join whatever `ray start` cluster
            # /tmp/ray/ray_current_cluster names, even a dead one, and then refuse num_cpus.
            ray.init(address="local", num_cpus=num_cpus or default_num_cpus(), **kwargs)
    except Exception as exc:  # Ray raises several unrelated types here
        where = address or "a local cluster"
        raise RuntimeConnectionError(f"cannot start or reach Ray at {where}: {exc}") from exc
    _quiet_data_context()
    logs.reroute()  # ray.init added its console handlers: to the command's log file, when it keeps one
    if not address:
        from raymlops.runtime import reaper

        node = getattr(ray._private.worker, "_global_node", None)  # no public API names the session folder
        if node is not None:  # the node ends with this process, even on SIGKILL
            raylets = node.all_processes.get("raylet") or []
            reaper.start(node.get_session_dir_path(), raylets[0].process.pid if raylets else None)
    try:
        yield RuntimeInfo(address=ray.get_runtime_context().gcs_address,
                          num_cpus=ray.cluster_resources().get("CPU", 0), started_here=not address)
    finally:
        ray.shutdown()
