"""Runs the stages in order and records what each produced; nothing else.

Example::

    result = run_pipeline(load_config("configs/flights.yaml"))
    result.data.snapshot.path
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


from raymlops.config import PipelineConfig, default_run_name
from raymlops.data.stage import DataStageResult, run_data_stage, run_data_stage_before_ray
from raymlops.runtime.session import RuntimeInfo, ray_runtime
from raymlops.training.stage import TrainingStageResult, run_training_stage

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class PipelineResult:
    runtime: RuntimeInfo
    data: DataStageResult
    training: TrainingStageResult | None


def run_pipeline(cfg: PipelineConfig, *, address: str | None = None, num_cpus: int | None = None,
                 run_name: str | None = None, data_only: bool = False,
                 progress: Progress | None = None) -> PipelineResult:
    """Run every stage: data (for small file sources in this process, before Ray starts, so that bad input
    fails without a cluster's start-up), then connect to Ray (or start it), train/tune, evaluate, register.

    ``run_name`` names the training run; giving the name of an interrupted run resumes it from its
    last checkpoint.
    """
    say = progress or (lambda stage, msg: None)
    run_name = run_name or default_run_name(cfg)
    early = run_data_stage_before_ray(cfg, progress=say)
    with ray_runtime(address=address, num_cpus=num_cpus) as rt:
        say("runtime", f"Ray at {rt.address} with {rt.num_cpus:g} CPUs; run {run_name}")
        data = early.in_ray() if early is not None else run_data_stage(cfg, progress=say)
        training = None if data_only else run_training_stage(cfg, data, run_name, progress=say)
        return PipelineResult(runtime=rt, data=data, training=training)
