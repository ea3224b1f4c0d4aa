"""``raymlops serve``: a service that keeps serving until Ctrl-C, with its closed loop when retraining is on.

Serving and the loop each know nothing of the other; this is where they meet: deploy the application
(``serving.deploy``), record where it listens (for ``raymlops status``), and give ``serve_forever`` one
step of the ``LoopController`` to run every ``retraining.check_every_s``.
"""

from __future__ import annotations

from typing import Any

from raymlops.config import PipelineConfig
from raymlops.serving import service_record
from raymlops.serving.deploy import deploy, serve_forever


def run_service(cfg: PipelineConfig, *, address: str | None = None, num_cpus: int | None = None,
                port: int | None = None, say: Any = print, **serving_overrides: Any) -> None:
    """``raymlops serve``: connect to (or start) Ray, deploy, and keep serving until Ctrl-C; with
    ``retraining.enabled`` the closed loop runs here too, one step every ``retraining.check_every_s``."""
    from raymlops.runtime.session import ray_runtime

    with ray_runtime(address=address, num_cpus=num_cpus) as rt:
        say(f"Ray at {rt.address} with {rt.num_cpus:g} CPUs")
        url = deploy(cfg, port=port, **serving_overrides)
        service_record.write(cfg.workdir_path, cfg.model_name, url=url, ray_address=rt.address)  # for `status`
        say(f"serving {cfg.model_name} at {url}/v1/predict  (docs: {url}/docs; Ctrl-C stops)")
        tick = None
        if cfg.retraining.enabled:
            from raymlops.loop.controller import LoopController  # the training stack: only with the loop on

            controller = LoopController(cfg, progress=lambda step, msg: say(f"loop {step}: {msg}"),
                                        purpose="`raymlops serve`")
            tick = controller.tick
            say(f"closed loop on: a step every {cfg.retraining.check_every_s:g} s, decisions in "
                f"{controller.decisions_path}")
        try:
            serve_forever(url, say, tick=tick, tick_every_s=cfg.retraining.check_every_s)
        finally:
            service_record.remove(cfg.workdir_path, cfg.model_name)
            if rt.started_here:
                from ray import serve

                try:
                    serve.shutdown()
                except Exception as exc:  # Ray itself may be what died; the first error is the one to tell
                    say(f"could not shut Serve down cleanly: {type(exc).__name__}: {exc}")
