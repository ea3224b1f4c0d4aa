"""Runs the stages in order and records what each produced; nothing else.

Example::

    result = run_pipeline(load_config("configs/flights.yaml"))
    result.data.snapshot.path
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raymlops.config import PipelineConfig
from raymlops.data.stage import DataStageResult, run_data_stage
from raymlops.runtime import RuntimeInfo, ray_runtime

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class PipelineResult:
    runtime: RuntimeInfo
    data: DataStageResult


def run_pipeline(cfg: PipelineConfig, *, address: str | None = None, num_cpus: int | None = None,
                 progress: Progress | None = None) -> PipelineResult:
    """Connect to Ray (or start it) and run every stage the config defines."""
    say = progress or (lambda stage, msg: None)
    with ray_runtime(address=address, num_cpus=num_cpus) as rt:
        say("runtime", f"Ray at {rt.address} with {rt.num_cpus:g} CPUs")
        data = run_data_stage(cfg, progress=say)
        return PipelineResult(runtime=rt, data=data)
