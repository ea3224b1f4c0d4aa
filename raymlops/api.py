"""The Python API, for notebooks and scripts: each call is a thin layer over what the CLI runs.

Example::

    import raymlops

    result = raymlops.run("configs/smoke.yaml")          # data -> train -> gates -> register
    model = raymlops.load_model("flights-smoke", config="configs/smoke.yaml")
    model.predict(frame)                                   # the champion's scores, as `raymlops predict`
    url = raymlops.serve("configs/smoke.yaml")             # deploy on this process's Ray; returns the URL
    raymlops.shutdown()                                    # stop the Ray this module started
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.config import PipelineConfig, load_config

if TYPE_CHECKING:  # the heavy modules load on first use, so `import raymlops` stays quick
    import numpy as np
    import pandas as pd

    from raymlops.model.packaging import LoadedModel
    from raymlops.pipeline import PipelineResult

ConfigLike = str | Path | PipelineConfig
_ray: ExitStack | None = None  # the Ray that serve() started here, kept up until shutdown()


def _config(config: ConfigLike) -> PipelineConfig:
    return config if isinstance(config, PipelineConfig) else load_config(config)


def run(config: ConfigLike, *, address: str | None = None, num_cpus: int | None = None,
        run_name: str | None = None, data_only: bool = False, progress: Any = None) -> PipelineResult:
    """``raymlops run CONFIG``: the data stage, then training, evaluation, the gates and registration.

    Joins the Ray this process already runs (or ``address``), else starts one for the call. Raises
    GateFailed (nothing registered) or another RaymlopsError naming what to fix.
    """
    from raymlops.pipeline import run_pipeline

    return run_pipeline(_config(config), address=address, num_cpus=num_cpus, run_name=run_name,
                        data_only=data_only, progress=progress)


@dataclass(frozen=True)
class Model:
    """A registered version, verified and loaded in this process."""

    name: str
    version: str
    package: LoadedModel

    @property
    def input_schema(self) -> dict[str, dict[str, Any]]:
        return self.package.manifest["input_schema"]

    @property
    def classes(self) -> list[str]:
        """The class names of a model with named classes (a multiclass model's are the columns of
        ``predict``; a binary model's are negative, then positive); empty for 0/1 labels and regression."""
        return list(self.package.spec.classes)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """One score per row of raw input columns (cast to the input schema as serving casts a request):
        the positive class's probability for classification, the value for regression; for multiclass a
        row of class probabilities per record, columns in ``classes`` order."""
        from raymlops.model.batch import score_frame

        return score_frame(self.package, frame)


def load_model(name: str, alias: str = "champion", *, version: str | int | None = None,
               config: ConfigLike | None = None, workdir: str | Path | None = None) -> Model:
    """The version of ``name`` that ``alias`` points at (or ``version``), from the registry of ``config``
    (or ``workdir``, default ``./.raymlops``). The package is cached under the workdir and its checksums
    verified on every load; builder code runs only if ``config`` trusts it."""
    from raymlops.model.packaging import load_package
    from raymlops.registry.store import Registry

    cfg = _config(config) if config is not None else None
    registry = Registry.for_config(cfg) if cfg else Registry.for_workdir(workdir or Path(".raymlops"))
    ref = f"{name}/{version}" if version is not None else f"{name}@{alias}"
    name, resolved = registry.resolve(ref)
    package_dir = registry.local_package(name, resolved)  # verified against the registry on every load
    trusted = cfg.model.trusted_builders() if cfg else ()
    return Model(name=name, version=resolved, package=load_package(package_dir, trusted))


def serve(config: ConfigLike, *, address: str | None = None, num_cpus: int | None = None,
          port: int | None = None, **serving_overrides: Any) -> str:
    """Deploy the champion on this process's Ray (started here if none runs, and kept up until
    ``shutdown()``) and return the service's base URL once it answers ``/readyz``."""
    global _ray
    import ray

    from raymlops.runtime.session import ray_runtime
    from raymlops.serving.deploy import deploy

    if not ray.is_initialized():
        stack = ExitStack()
        stack.enter_context(ray_runtime(address=address, num_cpus=num_cpus))
        _ray = stack
    return deploy(_config(config), port=port, **serving_overrides)


def shutdown() -> None:
    """Stop what ``serve`` started: Serve's applications and the Ray this module started."""
    global _ray
    if _ray is not None:
        from ray import serve as ray_serve

        ray_serve.shutdown()
        _ray.close()
        _ray = None


__all__ = ["Model", "load_model", "run", "serve", "shutdown"]
