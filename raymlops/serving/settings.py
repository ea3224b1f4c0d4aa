"""What a replica needs to serve one model, resolved from the pipeline config once (``ServeSettings``).

The driver resolves it (``settings_for``: the champion's input schema, where the registry is, the
``serving`` section with any command-line overrides) before Serve starts, so a model that cannot be
served fails there with a message, not inside a replica. Serve pickles it to every replica; it holds the
typed config sections themselves, never a dict of them.

Example::

    settings = settings_for(cfg, port=8001)
    app = build_app(settings)      # serving.app
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any

from raymlops.config import MonitoringConfig, PipelineConfig, ServingConfig
from raymlops.errors import ModelPackageError, RegistryError, ServingError
from raymlops.model.inputs import check_servable
from raymlops.model.packaging import MANIFEST
from raymlops.registry.store import CHAMPION, Registry


@dataclass(frozen=True)
class ServeSettings:
    """One model's service: which model, where its registry is, how it is served and monitored."""

    model: str
    tracking_uri: str
    workdir: str
    input_schema: dict[str, dict[str, Any]]  # the champion's, from its verified manifest
    task: str
    classes: tuple[str, ...]
    serving: ServingConfig
    monitoring: MonitoringConfig
    trusted_builders: tuple[str, ...] = ()

    @property
    def app_name(self) -> str:
        return self.serving.app_name or self.model


def settings_for(cfg: PipelineConfig, **serving_overrides: Any) -> ServeSettings:
    """Everything a replica needs; fails clearly when the model has no champion or cannot be served."""
    registry = Registry.for_config(cfg)
    name = cfg.model_name
    version = registry.version_for_alias(name, CHAMPION)
    if version is None:
        raise RegistryError(f"model {name!r} has no champion to serve in {registry.tracking_uri}; "
                            "train one with `raymlops run CONFIG` or promote one with `raymlops promote`")
    with tempfile.TemporaryDirectory(prefix="raymlops-manifest-") as tmp:
        # download_package verified every file against the manifest registered with the version: read it
        manifest = json.loads((registry.download_package(name, version, tmp) / MANIFEST).read_text())
    try:  # the request model is built from the input schema: say which column stops it, before Serve starts
        check_servable(manifest["input_schema"])
    except ModelPackageError as exc:
        raise ServingError(f"model {name!r} v{version} cannot be served: {exc}") from None
    if cfg.retraining.enabled and cfg.serving.canary_share == 0 and "canary_share" not in serving_overrides:
        serving_overrides = {**serving_overrides, "canary_share": cfg.retraining.canary_share}  # the loop's canary
    # Validated like the config itself: an override of the wrong type fails here, not in a replica.
    serving = ServingConfig.model_validate({**cfg.serving.model_dump(), **serving_overrides})
    return ServeSettings(model=name, tracking_uri=registry.tracking_uri, workdir=str(cfg.workdir_path.resolve()),
                         input_schema=manifest["input_schema"], task=manifest["spec"]["task"],
                         classes=tuple(manifest["spec"].get("classes", [])), serving=serving,
                         monitoring=cfg.monitoring, trusted_builders=tuple(cfg.model.trusted_builders()))
