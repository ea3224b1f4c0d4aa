"""The packaged model: everything serving needs, in files that never need unpickling.

    model/
      manifest.json            format, sha256 of every file, spec, model config, input schema, lineage
      weights.safetensors      the state_dict (safetensors: plain tensors, no code)
      features.json            the fitted feature pipeline
      reference_profile.json   training distributions for drift detection

``write_package`` builds it in a temp folder and renames it into place; ``load_package`` verifies every
checksum before building the model, so a truncated or tampered file is refused with a clear error.

Example::

    model = load_package("path/to/model")
    model.predict_frame(raw_rows)         # raw columns in, probabilities (or values) out
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from raymlops.config import ModelConfig, ValidationConfig
from raymlops.data.features import FittedFeatures
from raymlops.errors import ModelPackageError
from raymlops.training.models import BUILDERS, ModelSpec, build_model

PACKAGE_FORMAT = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
FEATURES = "features.json"
PROFILE = "reference_profile.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_schema(fitted: FittedFeatures, validation: ValidationConfig) -> dict[str, dict[str, Any]]:
    """Per raw input column: type, nullability, bounds and allowed values (what a request may carry)."""
    schema = {}
    for col in fitted.input_columns:
        exp = validation.columns.get(col)
        schema[col] = exp.model_dump(exclude_none=True, exclude={"unique", "max_null_fraction"}) if exp else {}
    return schema


def write_package(dest: str | Path, *, weights: dict[str, torch.Tensor], fitted: FittedFeatures, spec: ModelSpec,
                  model_config: ModelConfig, schema: dict[str, Any], profile: dict[str, Any],
                  lineage: dict[str, str]) -> Path:
    """Write the package atomically to ``dest`` (which must not exist yet)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        fitted.save(tmp / FEATURES)
        (tmp / PROFILE).write_text(json.dumps(profile))
        manifest = {
            "format": PACKAGE_FORMAT,
            "files": {name: sha256(tmp / name) for name in (WEIGHTS, FEATURES, PROFILE)},
            "spec": spec.to_dict(), "model_config": model_config.model_dump(), "input_schema": schema,
            "target": fitted.target, "lineage": lineage,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@dataclass
class LoadedModel:
    """A verified package, ready to predict from raw rows."""

    path: Path
    manifest: dict[str, Any]
    features: FittedFeatures
    spec: ModelSpec
    module: torch.nn.Module

    @property
    def task(self) -> str:
        return self.spec.task

    def predict_features(self, features: pd.DataFrame) -> np.ndarray:
        numeric = torch.from_numpy(np.stack([features[c].to_numpy(np.float32) for c in self.spec.numeric], 1)
                                   if self.spec.numeric else np.zeros((len(features), 0), np.float32))
        categorical = torch.from_numpy(
            np.stack([features[c].to_numpy(np.int64) for c in self.spec.categorical], 1)
            if self.spec.categorical else np.zeros((len(features), 0), np.int64))
        with torch.no_grad():
            out = self.module(numeric, categorical)
        out = torch.sigmoid(out) if self.task == "classification" else out
        return out.numpy().astype(np.float64)

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw input columns in, one score per row out (probability of the positive class, or value)."""
        return self.predict_features(self.features.transform_frame(frame))


def verify_package(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ModelPackageError(f"{path} is not a model package (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{mpath} is not valid JSON: {exc}") from exc
    if manifest.get("format") != PACKAGE_FORMAT:
        raise ModelPackageError(f"{path}: package format {manifest.get('format')} is not supported "
                                f"(this raymlops reads {PACKAGE_FORMAT})")
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise ModelPackageError(f"{path}: {name} is missing")
        if sha256(f) != digest:
            raise ModelPackageError(f"{path}: {name} does not match the checksum recorded at registration "
                                    "(truncated or tampered); refusing to load it")
    return manifest


def check_builder(path: Path, manifest: dict[str, Any], trusted_builders: Collection[str] = ()) -> None:
    """A package is data: it may name a built-in builder, or code the loading side's config already trusts.

    ``model_config.builder`` is an import path that would be called; taking it from a package (which a
    registry or a remote store supplies) would let that store run code here, as unpickling would.
    """
    builder = (manifest.get("model_config") or {}).get("builder", "mlp")
    if builder in BUILDERS or builder in trusted_builders:
        return
    raise ModelPackageError(
        f"{path}: the package asks for model builder {builder!r}, code this process was not configured to run; "
        f"a model package cannot choose code. If you trust it, set `model.builder: {builder}` in the config "
        "that trains and serves this model")


def load_package(path: str | Path, trusted_builders: Collection[str] = ()) -> LoadedModel:
    """Verify checksums and the builder, then build the model from safetensors weights and JSON state."""
    path = Path(path)
    manifest = verify_package(path)
    check_builder(path, manifest, trusted_builders)
    spec = ModelSpec(**manifest["spec"])
    module = build_model(spec, ModelConfig(**manifest["model_config"]))
    try:
        weights = load_file(str(path / WEIGHTS))
    except SafetensorError as exc:  # e.g. a pickle (torch.save) put in its place: never unpickled
        raise ModelPackageError(f"{path}: {WEIGHTS} is not a safetensors file ({exc}); raymlops loads weights "
                                "only as safetensors and never unpickles a model") from exc
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelPackageError(f"{path}: weights do not fit the model: {exc}") from exc
    module.eval()
    return LoadedModel(path=path, manifest=manifest, features=FittedFeatures.load(path / FEATURES),
                       spec=spec, module=module)
